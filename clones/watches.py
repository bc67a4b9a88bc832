"""A watch's life: created, checked now and then, snapshotted when what it follows has changed,
paused, deleted.

Like jobs.py, every change of a watch's state is one conditional UPDATE, so that two clusters
dispatching the same due watch, or a check racing "check now", can never both win.
"""

import logging
import math
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial

from croniter import croniter
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from django_q.tasks import async_task

from . import jobs, queue, retention
from .models import ACTIVE_STATUSES, CheckResult, CloneJob, Follow, Status, Watch, storable
from .notify import email, webhooks
from .pipeline import gitwords, refs, snapshots, sshaccess
from .safety import tokens, vault

logger = logging.getLogger(__name__)

# A check's claim (checking_since) older than this is its cluster's death: the check is taken
# over. A live check holds it for one ref lookup (refs.LOOKUP_SECONDS) and a few quick
# queries; twice the lookup and a minute more is never reached by one that still runs.
CLAIM_LEASE_SECONDS = 2 * refs.LOOKUP_SECONDS + 60
# The longest a failing watch waits between checks.
MAX_BACKOFF = timedelta(days=1)
MAX_DOUBLINGS = 20  # a minute doubled 20 times is two years, past MAX_BACKOFF
# Due watches claimed by one dispatch (a minute's schedule); the next one takes the rest.
DISPATCH_BATCH = 5000
SNAPSHOT_STATUSES = (*ACTIVE_STATUSES, Status.DONE)


class Refused(Exception):
    """A watch that may not be made: the message says why, for the person who asked."""


def create(owner, url: str, credential: str = "", **options) -> Watch:
    """Record a watch of `url`, whose options (follow, refs, history, depth, archive_format,
    interval_minutes, cron, keep_*, webhook_url) have passed clones.web.forms.WatchForm. Its
    first check comes at a random moment within its interval, so that watches made together
    (a pasted list) are not all checked together ever after."""
    with transaction.atomic():
        # The owner's row locked: two requests at once are counted one after the other.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
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
    """Delete a watch and its credential, and cancel its snapshots still on their way (their
    copies of the credential go with them). Its done snapshots stay in their owner's history,
    kept as a one-off archive is: CLONES_ARCHIVE_TTL_HOURS from now, pinned or not (a snapshot
    done meanwhile gets that expiry from the expiry sweep: tasks.expire_archives)."""
    with transaction.atomic():
        for job in CloneJob.objects.filter(watch=watch).active():
            jobs.cancel(job, by="the deletion of its watch")
        kept = CloneJob.objects.filter(watch=watch, status=Status.DONE, expires_at__isnull=True)
        kept.update(expires_at=snapshots.job_expiry())
        watch.delete()


# Checks: dispatched every minute, one at a time per watch.


def dispatch() -> int:
    """Claim every due watch, and every watch whose check's claim outlived CLAIM_LEASE_SECONDS
    (its cluster died mid-check), and queue a check of each; how many. Each claim is one
    conditional UPDATE: two clusters dispatching at once claim each watch once between them."""
    now = timezone.now()
    claimable = _claimable(now)
    claimed = 0
    for watch_id in claimable.order_by("next_check_at").values_list("pk", flat=True)[
        :DISPATCH_BATCH
    ]:
        with transaction.atomic():
            if claimable.filter(pk=watch_id).update(checking_since=now):
                _queue_check(watch_id, now)
                claimed += 1
    return claimed


def _claimable(now: datetime):
    lease_ended = now - timedelta(seconds=CLAIM_LEASE_SECONDS)
    return Watch.objects.filter(active=True, next_check_at__lte=now).filter(
        Q(checking_since__isnull=True) | Q(checking_since__lt=lease_ended)
    )


def _queue_check(watch_id, claim: datetime) -> None:
    """A check's task, on the webhooks' queue (webhooks.QUEUE): like a webhook attempt it waits
    on a server for a bounded time and no longer, and it must never wait behind a clone."""
    queued = partial(
        async_task,
        queue.CHECK_WATCH,
        str(watch_id),
        claim.isoformat(),
        q_options=webhooks.task_options(),
    )
    # As jobs.enqueue: Redis is not this database, so the task goes once the claim is committed.
    if settings.CLONES_REDIS_URL:
        transaction.on_commit(queued)
    else:
        queued()


@dataclass
class _Found:
    """What one check found: the snapshot jobs to queue, and the followed refs that are not
    there."""

    token: str  # the watch's credential, opened, for its snapshot jobs
    jobs: list[CloneJob] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)


def check(watch_id: str, claim: str) -> CheckResult | None:
    """One check of a watch this dispatch claimed at `claim`: one ref discovery, then nothing
    (unchanged), a snapshot job for each followed ref that changed, or a failure that backs the
    watch off. None if the claim is not ours any more (taken over after its lease)."""
    started = timezone.now()
    watch = _begin(watch_id, datetime.fromisoformat(claim), started)
    if watch is None:
        logger.info("check of watch %s: its claim was taken over; nothing to do", watch_id)
        return None
    try:
        found = _look(watch)
    except (gitwords.CloneFailed, vault.Unreadable) as failure:
        return _end(watch, started, error=str(failure))
    return _end(watch, started, found=found)


def _begin(watch_id: str, claim: datetime, started: datetime) -> Watch | None:
    """Take the claim over for this check, its lease counted from now."""
    if not Watch.objects.filter(pk=watch_id, checking_since=claim).update(checking_since=started):
        return None
    watch = Watch.objects.get(pk=watch_id)
    watch.last_lag_seconds = max(0.0, (started - watch.next_check_at).total_seconds())
    return watch


def _look(watch: Watch) -> _Found:
    """Ask the server once, and make (unsaved) a snapshot job for each followed ref that moved
    since the watch's latest snapshot of it."""
    token = vault.open_sealed(watch.credential) if watch.credential else ""
    pinned = gitwords.pinned(watch.url)
    ssh = sshaccess.for_owner(watch.owner_id, pinned)
    found = _Found(token=token)
    if watch.follow == Follow.DEFAULT:
        resolved = refs.resolve(watch.url, pinned, "", token, refs.LOOKUP_SECONDS, ssh=ssh)
        if _moved(watch, "", resolved.commit):
            found.jobs.append(_snapshot_job(watch, ""))
    elif watch.follow == Follow.REFS:
        names = watch.followed_refs
        wanted = tuple(f"refs/{kind}/{name}" for name in names for kind in ("heads", "tags"))
        listed = refs.list_refs(watch.url, pinned, token, wanted, refs.LOOKUP_SECONDS, ssh)
        for name in names:
            commit = _commit_named(listed, name)
            if commit is None:
                found.missing.append(name)
            elif _moved(watch, name, commit):
                found.jobs.append(_snapshot_job(watch, name))
    else:
        listed = refs.list_refs(watch.url, pinned, token, timeout=refs.LOOKUP_SECONDS, ssh=ssh)
        if _moved(watch, "", refs.digest(listed), compared="refs_digest"):
            found.jobs.append(_snapshot_job(watch, ""))
    return found


def _commit_named(listed: dict[str, str], name: str) -> str | None:
    """As `git clone --branch` chooses: a branch before a tag of the same name."""
    return refs.commit_of(listed, f"refs/heads/{name}") or refs.commit_of(
        listed, f"refs/tags/{name}"
    )


def _moved(watch: Watch, ref: str, now: str, compared: str = "commit") -> bool:
    """Whether `ref` names something else (`now`) than in the watch's latest snapshot of it
    that is done or on its way. One on its way stands for the ref's latest state: it looks the
    ref up itself when it runs. A failed one is tried again."""
    latest = (
        CloneJob.objects.filter(watch=watch, ref=ref, status__in=SNAPSHOT_STATUSES)
        .order_by("-created_at")
        .first()
    )
    if latest is None:
        return True
    return not latest.is_active and getattr(latest, compared) != now


def _snapshot_job(watch: Watch, ref: str) -> CloneJob:
    return CloneJob(
        owner_id=watch.owner_id,
        watch=watch,
        url=watch.url,
        ref=ref,
        history=watch.history,
        depth=watch.depth,
        paths=watch.paths,
        submodules=watch.submodules,
        lfs=watch.lfs,
        archive_format=watch.archive_format,
        webhook_url=watch.webhook_url,
        used_token=bool(watch.credential),
    )


def _end(
    watch: Watch, started: datetime, found: _Found | None = None, error: str = ""
) -> CheckResult | None:
    """Record how the check went, queue its snapshot jobs, and let the claim go, all at once,
    unless the claim was taken over meanwhile (the other check records instead)."""
    with transaction.atomic():
        held = Watch.objects.select_for_update().filter(pk=watch.pk, checking_since=started)
        if not held.exists():
            return None
        watch.last_checked_at = timezone.now()
        if found is not None:
            error = " ".join(_gone(watch, name) for name in found.missing)
            if found.jobs and _queue_is_full(adding=len(found.jobs)):
                # Left for the next check, which finds the same change: none is recorded.
                logger.warning("check of watch %s: the queue is full; retried later", watch.pk)
                return _record(watch, watch.last_result, next_check_at(watch, started))
            _queue_snapshots(found)
            if found.jobs:
                watch.last_changed_at = watch.last_checked_at
        if error:
            return _failed(watch, started, error)
        if found.jobs:
            return _record(watch, CheckResult.CHANGED, next_check_at(watch, started))
        watch.failures, watch.last_error = 0, ""  # what it follows is there, and kept
        return _record(watch, CheckResult.UNCHANGED, next_check_at(watch, started))


def _gone(watch: Watch, name: str) -> str:
    if CloneJob.objects.filter(watch=watch, ref=name, status=Status.DONE).exists():
        return f"The branch or tag '{name}' is gone from the repository; its snapshots are kept."
    return gitwords.NO_SUCH_REF.format(ref=name)


def _queue_is_full(adding: int) -> bool:
    """Whether `adding` more jobs would pass the global queue cap (CLONES_MAX_QUEUED), which
    holds for watches too; a person's caps on one-off submissions (at once, per hour) do not: a
    watch's snapshots are what it was made for."""
    queued = CloneJob.objects.filter(status=Status.QUEUED).count()
    return queued + adding > settings.CLONES_MAX_QUEUED


def _queue_snapshots(found: _Found) -> None:
    for job in found.jobs:
        job.save()
        if found.token:
            tokens.keep(job.id, found.token)  # for this clone only, as a one-off token is
        jobs.enqueue(job.id)


def _record(watch: Watch, result: str, next_at: datetime) -> str:
    watch.last_result, watch.next_check_at, watch.checking_since = result, next_at, None
    watch.save(
        update_fields=[
            "last_result",
            "last_error",
            "failures",
            "next_check_at",
            "checking_since",
            "last_checked_at",
            "last_changed_at",
            "last_lag_seconds",
        ]
    )
    return result


def _failed(watch: Watch, started: datetime, error: str) -> CheckResult:
    """A check that failed: the watch says why, and backs off."""
    _count_failure(watch, error)
    return _record(watch, CheckResult.FAILED, _backed_off(watch, started))


def _count_failure(watch: Watch, error: str) -> None:
    """One more failure in a row; its owner is told once a streak reaches
    CLONES_WATCH_FAILURES_TO_TELL. The caller holds the watch's row."""
    watch.failures += 1
    watch.last_error = storable(error)
    if watch.failures == settings.CLONES_WATCH_FAILURES_TO_TELL:
        transaction.on_commit(partial(email.watch_failing, watch.pk), robust=True)


def next_check_at(watch: Watch, after: datetime) -> datetime:
    """When a watch checked at `after` is next due: the next time its cron expression names at
    least CLONES_WATCH_MIN_INTERVAL_MINUTES on, or the next of its due times, a whole number of
    intervals after its last one: each watch keeps the moment in its interval it was given when
    made (create's spread), and a late check does not push the ones after it later."""
    if watch.cron:
        earliest = after + timedelta(minutes=settings.CLONES_WATCH_MIN_INTERVAL_MINUTES)
        return croniter(watch.cron, earliest - timedelta(seconds=1)).get_next(datetime)
    step = interval_seconds(watch)
    intervals = math.floor((after - watch.next_check_at).total_seconds() / step) + 1
    return watch.next_check_at + timedelta(seconds=step * max(intervals, 1))


def _backed_off(watch: Watch, after: datetime) -> datetime:
    """A failing watch's next check: its usual wait, doubled for every failure in a row after
    the first, at most MAX_BACKOFF."""
    wait = next_check_at(watch, after) - after
    # Doubled at most MAX_DOUBLINGS times: 2 ** failures overflows a timedelta after some 30
    # failures, and the cap is reached long before.
    doublings = min(watch.failures - 1, MAX_DOUBLINGS)
    return after + min(wait * 2**doublings, MAX_BACKOFF)


def snapshot_ended(job: CloneJob, **signal) -> None:
    """One of a watch's snapshot jobs has ended (the signal clones.jobs.snapshot_ended): a
    failed one counts as a failure of the watch, a done one ends its failing streak and lets its
    retention policy forget what it no longer keeps. A cancelled one is neither."""
    if job.status == Status.DONE:
        Watch.objects.filter(pk=job.watch_id).update(failures=0, last_error="")
        _apply_retention(job.watch_id)
    elif job.status == Status.FAILED:
        with transaction.atomic():
            watch = Watch.objects.select_for_update().filter(pk=job.watch_id).first()
            if watch is not None:
                _count_failure(watch, f"Its latest snapshot failed: {job.error}")
                watch.next_check_at = max(watch.next_check_at, _backed_off(watch, timezone.now()))
                watch.save(update_fields=["failures", "last_error", "next_check_at"])


def _apply_retention(watch_id) -> None:
    watch = Watch.objects.filter(pk=watch_id).first()
    if watch is not None:
        retention.apply(watch)
