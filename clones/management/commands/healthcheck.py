import json

from django.core.management.base import BaseCommand, CommandError

from clones.ops import health


class Command(BaseCommand):
    help = (
        "Run /healthz's checks in this process and print them as JSON; exit 1 if any is down. "
        "For the worker's container, which has no HTTP server."
    )
    # Run every 30 s by compose: only the health checks, not Django's system checks.
    requires_system_checks = []

    def handle(self, *args, **options):
        result = health.report()
        self.stdout.write(json.dumps(result, indent=2))
        down = [name for name, check in result["checks"].items() if not check["ok"]]
        if down:
            raise CommandError(f"down: {', '.join(down)}", returncode=1)
