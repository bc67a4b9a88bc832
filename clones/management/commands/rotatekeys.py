from django.core.management.base import BaseCommand

from clones.safety import vault


class Command(BaseCommand):
    help = (
        "Rotate the key that encrypts watches' credentials and SSH keys (credential_keys on the "
        "data volume): a new key on top, every one sealed again with it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--forget-old",
            action="store_true",
            help="then drop the older keys (one that leaked); run it while no watch is being made",
        )

    def handle(self, *args, forget_old, **_):
        resealed = vault.rotate(forget_old=forget_old)
        kept = "the new key only" if forget_old else "the older keys kept below it"
        self.stderr.write(f"Sealed {resealed} credential(s) again with a new key; {kept}.")
