"""A watch's life: created, checked now and then, snapshotted when what it follows has changed,
paused, deleted.

Like jobs.py, every change of a watch's state is one conditional UPDATE, so that two clusters
dispatching the same due watch, or a check racing "check now", can never both win.
"""

import random
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .models import CloneJob, Status, Watch
from .pipeline import snapshots
from .safety import vault


class Refused(Exception):
    """A watch that may not be made: the message says why, for the person who asked."""


def create(owner, url: str, credential: str = "", **options) -> Watch:
    """Record a watch of `url`, whose options (follow, refs, history, depth, archive_format,
    interval_minutes, cron, keep_*, webhook_url) have passed clones.web.forms.WatchForm. Its
    first check comes at a random moment within its interval, so that watches made together
    (a pasted list) are not all checked together ever after."""
    with transaction.atomic():
        count = Watch.objects.filter(owner=owner).count()
        if count >= settings.CLONES_MAX_WATCHES_PER_USER:
            raise Refused(
                f"You watch {count} repositories, the most allowed; delete one to watch another."
            )
        watch = Watch(owner=owner, url=url, **options)
        watch.next_check_at = timezone.now() + _spread(watch)
        watch.credential = _sealed(credential)
        watch.save()
    return watch


def _spread(watch: Watch) -> timedelta:
    """A random offset within the watch's interval."""
    return timedelta(seconds=random.uniform(0, interval_seconds(watch)))


def interval_seconds(watch: Watch) -> float:
    minutes = max(watch.interval_minutes, settings.CLONES_WATCH_MIN_INTERVAL_MINUTES)
    return minutes * 60.0


def _sealed(credential: str) -> str:
    return vault.seal(credential) if credential else ""


def check_now(watch: Watch) -> bool:
    """Make an active watch due at once (the timeline's "check now"); False if it is being
    checked already, or paused."""
    return bool(
        Watch.objects.filter(pk=watch.pk, active=True, checking_since__isnull=True).update(
            next_check_at=timezone.now()
        )
    )


def set_active(watch: Watch, active: bool) -> None:
    """Pause or resume a watch; a resumed one is due at once."""
    changes = {"active": active}
    if active:
        changes["next_check_at"] = timezone.now()
    Watch.objects.filter(pk=watch.pk).update(**changes)


def pin(job: CloneJob, pinned: bool) -> bool:
    """Keep one of a watch's snapshots whatever its retention policy says, or let it go again
    (clones.retention decides at its next run)."""
    return bool(CloneJob.objects.filter(pk=job.pk, watch__isnull=False).update(pinned=pinned))


def delete(watch: Watch) -> None:
    """Delete a watch and its credential. Its snapshots stay in their owner's history, kept as
    a one-off archive is: CLONES_ARCHIVE_TTL_HOURS from now, pinned or not."""
    with transaction.atomic():
        kept = CloneJob.objects.filter(watch=watch, status=Status.DONE, expires_at__isnull=True)
        kept.update(expires_at=snapshots.job_expiry())
        watch.delete()
