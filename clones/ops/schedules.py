from django.conf import settings
from django.db import transaction
from django_q.models import Schedule

from ..pipeline import archives

EXPIRY_SCHEDULE_NAME = "cloneshelf: delete expired archives"
RECOVERY_SCHEDULE_NAME = "cloneshelf: recover stuck jobs and leftovers"


def ensure_schedules(**kwargs) -> None:
    """Create (or bring up to date) the periodic schedules; run on every migrate, so
    idempotent."""
    for name, func, minutes in [
        (EXPIRY_SCHEDULE_NAME, "clones.tasks.expire_archives", "CLONES_EXPIRY_INTERVAL_MINUTES"),
        (RECOVERY_SCHEDULE_NAME, "clones.ops.recovery.recover", "CLONES_RECOVERY_INTERVAL_MINUTES"),
    ]:
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": getattr(settings, minutes),
                "repeats": -1,
            },
        )


def delete_archive_file(instance, **kwargs) -> None:
    """A deleted job (or user) takes its archive with it: no file without a row."""
    name = instance.archive.name
    # Only once the deletion is committed: a rolled-back delete must keep its archive.
    transaction.on_commit(lambda: archives.delete(name))
