from django.core.management.base import BaseCommand

from clones.safety import signing


class Command(BaseCommand):
    help = (
        "Make a new signing key (signing_keys on the data volume): it signs provenance from now "
        "on; the older keys stay published, so what they signed still verifies."
    )

    def handle(self, *args, **options):
        key_id = signing.rotate()
        self.stderr.write(f"New signing key {key_id}; the older ones are still published.")
