from django.conf import settings
from django.db import transaction
from django_q.models import Schedule

from . import archives

EXPIRY_SCHEDULE_NAME = "cloneshelf: delete expired archives"


def ensure_expiry_schedule(**kwargs) -> None:
    """Create (or bring up to date) the expiry schedule; run on every migrate, so idempotent."""
    Schedule.objects.update_or_create(
        name=EXPIRY_SCHEDULE_NAME,
        defaults={
            "func": "clones.tasks.expire_archives",
            "schedule_type": Schedule.MINUTES,
            "minutes": settings.CLONES_EXPIRY_INTERVAL_MINUTES,
            "repeats": -1,
        },
    )


def delete_archive_file(instance, **kwargs) -> None:
    """A deleted job (or user) takes its archive with it: no file without a row."""
    name = instance.archive.name
    # Only once the deletion is committed: a rolled-back delete must keep its archive.
    transaction.on_commit(lambda: archives.delete(name))
