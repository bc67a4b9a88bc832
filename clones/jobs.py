"""A clone job's life: submitted, claimed by a worker, finished, expired.

Every transition is one conditional UPDATE on the job's current status, so two workers, a task
delivered twice or an admin action racing a worker can never both move the same job.
"""

import math
from datetime import timedelta
from functools import partial

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Case, Count, F, Min, Q, Value, When
from django.dispatch import Signal
from django.template.defaultfilters import pluralize
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, schedule

from . import queue
from .models import (
    CloneJob,
    RefusedSubmission,
    Snapshot,
    SnapshotState,
    Status,
    lost_after_seconds,
    lost_its_worker,
    storable,
)
from .notify import email
from .pipeline import archives, snapshots
from .safety import tokens

MAX_WAIT_SECONDS = 600
MAX_ATTEMPTS = 2  # a job whose worker died is run once more, not again and again
PHASE_LENGTH = CloneJob._meta.get_field("phase").max_length
ANY = Q()  # no condition beyond the job being as its caller saw it
HOUR = timedelta(hours=1)  # the window of the hourly limits


# When to try again after a refusal by the active or the queue cap, which cannot tell when a slot
# frees: a small clone ends within a minute; a full queue says "a few minutes".
ACTIVE_CAP_RETRY_SECONDS = 60
QUEUE_CAP_RETRY_SECONDS = 180


class Refused(Exception):
    """A submission over a limit; the message says which, for the person who sent it, and
    `retry_after` in how many seconds trying again may work (HTTP's Retry-After)."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


def submit(owner, url: str, ref: str = "", token: str = "", **options) -> CloneJob:
    """Record a request and queue it. `url`, `ref` and the `options` (history, depth,
    archive_format) must have passed clones.web.forms already; `token`, if any, is kept for the
    clone only (clones.safety.tokens)."""
    with transaction.atomic():
        check_limits(owner)
        job = CloneJob.objects.create(
            owner=owner, url=url, ref=ref, used_token=bool(token), **options
        )
        if token:
            tokens.keep(job.id, token)
        try:
            enqueue(job.id)
        except BaseException:
            tokens.discard(job.id)  # the row is rolled back; the file must go with it
            raise
    return job


def enqueue(job_id, delay: float = 0) -> None:
    """Give a queued job a task: now, or after `delay` seconds (a one-off schedule). Called in
    the transaction that queues the job (here, or a watch's check: clones.watches)."""
    due = timezone.now() + timedelta(seconds=delay)
    CloneJob.objects.filter(pk=job_id).update(task_due_at=due)
    if delay:
        schedule(
            queue.RUN_CLONE_JOB,
            str(job_id),
            name=f"cloneshelf: retry {job_id}",
            schedule_type=Schedule.ONCE,
            next_run=due,
        )
    elif settings.CLONES_REDIS_URL:
        # Redis is not this database: the task is pushed once the job is committed, or a worker
        # could take it before the row exists. Lost if this process dies in between, or with a
        # Redis that restarts: the recovery sweep gives such a job a task again (task_lost).
        transaction.on_commit(partial(async_task, queue.RUN_CLONE_JOB, str(job_id)))
    else:
        # The ORM broker keeps its queue in this same database: the job and its task are
        # committed together, or neither, so no job waits for a task that was never queued.
        async_task(queue.RUN_CLONE_JOB, str(job_id))


def give_a_task_again(job: CloneJob) -> bool:
    """A queued job whose task has not reached a worker long after it was due: the broker lost
    it (Redis restarted, or died with it in hand). A second task for a job still waiting in a
    long queue does no harm: the first to claim the job runs it, the other finds nothing to do."""
    with transaction.atomic():
        still_lost = CloneJob.objects.filter(
            pk=job.pk, status=Status.QUEUED, task_due_at=job.task_due_at
        ).exists()
        if still_lost:
            enqueue(job.id)
    return still_lost


def check_limits(owner) -> None:
    """Refuse a submission past the per-user caps or the global queue cap (jobs.Refused)."""
    # Lock the owner's row: two submissions of one user at once are counted one after the other.
    get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
    mine = CloneJob.objects.for_user(owner)
    active = mine.active().count()
    if active >= settings.CLONES_MAX_ACTIVE_PER_USER:
        raise Refused(
            f"You already have {active} clone{pluralize(active)} queued or running, "
            "the most at once; "
            "wait for one to finish.",
            retry_after=ACTIVE_CAP_RETRY_SECONDS,
        )
    hour_ago = timezone.now() - HOUR
    recent = mine.filter(created_at__gt=hour_ago).order_by("created_at")
    if recent.count() >= settings.CLONES_MAX_SUBMISSIONS_PER_HOUR:
        # A slot frees when the oldest submission of the last hour turns an hour old.
        seconds, minutes = _until_an_hour_old(recent.first().created_at)
        raise Refused(
            f"You have asked for {settings.CLONES_MAX_SUBMISSIONS_PER_HOUR} clones in the "
            f"last hour, the most allowed; try again in {minutes} minute(s).",
            retry_after=seconds,
        )
    queued = CloneJob.objects.filter(status=Status.QUEUED).count()
    if queued >= settings.CLONES_MAX_QUEUED:
        raise Refused(
            f"The service is busy: {queued} clone{pluralize(queued)} waiting in the queue. "
            "Try again in a few minutes.",
            retry_after=QUEUE_CAP_RETRY_SECONDS,
        )


def _until_an_hour_old(moment) -> tuple[int, int]:
    """Seconds (for Retry-After, at least 1) and minutes (for people) until `moment` is an hour
    old."""
    seconds = max(1, math.ceil((moment + HOUR - timezone.now()).total_seconds()))
    return seconds, max(1, round(seconds / 60))


def check_refusals(owner) -> None:
    """Refuse (Refused) anyone whose URLs were refused CLONES_MAX_REFUSED_PER_HOUR times in the
    last hour, before their submission is looked at: checking a URL may ask DNS about its host,
    and the answer (no such host, a private address, accepted) tells whether an internal name
    exists. Counted, the form cannot be used to map them."""
    limit = settings.CLONES_MAX_REFUSED_PER_HOUR
    recent = RefusedSubmission.objects.filter(owner=owner, refused_at__gt=timezone.now() - HOUR)
    refused = recent.aggregate(count=Count("*"), oldest=Min("refused_at"))
    if refused["count"] >= limit:
        seconds, minutes = _until_an_hour_old(refused["oldest"])
        raise Refused(
            f"{limit} of your submissions were refused in the last hour for their URL, the most "
            f"allowed; no URL is checked for you until then. Try again in {minutes} minute(s).",
            retry_after=seconds,
        )


def record_refusal(owner) -> None:
    """Count a submission refused for its URL (check_refusals); older counts are let go."""
    RefusedSubmission.objects.filter(owner=owner, refused_at__lte=timezone.now() - HOUR).delete()
    RefusedSubmission.objects.create(owner=owner)


def claim(job_id) -> CloneJob | None:
    """Move a queued job to running for this worker; None if it is not ours to run (another
    worker took it, it was cancelled, or it is finished: a finished job is never reopened)."""
    now = timezone.now()
    taken = CloneJob.objects.filter(pk=job_id, status=Status.QUEUED).update(
        status=Status.RUNNING,
        started_at=now,
        heartbeat_at=now,
        attempts=F("attempts") + 1,
        **_phase("starting"),
    )
    return CloneJob.objects.get(pk=job_id) if taken else None


def is_still_running(job: CloneJob) -> bool:
    """False once the job was cancelled, or recovered from under this worker."""
    return CloneJob.objects.attempt(job).exists()


def record_phase(job: CloneJob, phase: str, progress: int | None = None) -> None:
    """What a running job is doing, and how far along it is (percent), for its page: often
    git's own last line."""
    phase = storable(phase)
    if (phase, progress) != (job.phase, job.progress):
        job.phase, job.progress = phase, progress
        running = CloneJob.objects.filter(pk=job.pk, status=Status.RUNNING)
        running.update(**_phase(phase, progress))


def _phase(text: str = "", progress: int | None = None) -> dict:
    """The fields that say what a job is doing: a new phase starts with no progress known. The
    text is cut to fit: git's live line may run to engine.LINE_LIMIT characters, and PostgreSQL
    refuses what is longer than the column (SQLite keeps it)."""
    if len(text) > PHASE_LENGTH:
        text = text[: PHASE_LENGTH - 1] + "…"
    return {"phase": text, "progress": progress}


def mark_done(job: CloneJob, snapshot: Snapshot) -> bool:
    """The job delivers the ready `snapshot`, for CLONES_ARCHIVE_TTL_HOURS from now, or, a
    watch's snapshot, until its watch's retention policy lets it go."""
    return _finish(job, Status.DONE, **_delivering(snapshot))


def _delivering(snapshot: Snapshot) -> dict:
    expiry = Value(snapshots.job_expiry())
    return {
        "snapshot": snapshot,
        "commit": snapshot.commit,
        "archive": snapshot.archive.name,
        "archive_size": snapshot.archive_size,
        "archive_sha256": snapshot.archive_sha256,
        "expires_at": Case(When(watch__isnull=False, then=Value(None)), default=expiry),
        "finished_at": timezone.now(),
    }


# What a job waiting for another's clone is told: never which job, whose, or what it asked for.
FOLLOWING = "Waiting for an identical clone of the same commit, already under way."
QUEUED_AGAIN = "Queued again: the identical clone it waited for did not finish."


def follow(job: CloneJob, snapshot: Snapshot) -> bool:
    """Let a running job wait, queued but with no task and no worker, for the identical job
    that builds `snapshot`; it finishes as that one does (settle_followers)."""
    waiting = _unchanged(job).update(
        status=Status.QUEUED,
        snapshot=snapshot,
        started_at=None,
        task_due_at=None,  # it has none, and needs none
        **_phase(FOLLOWING),
        **_uncounted(job),
    )
    # The builder may have finished between our look at the snapshot and now, and settled the
    # jobs waiting then: settle again, so that this one is never left behind.
    settle_followers(snapshot)
    return bool(waiting)


def settle_followers(snapshot: Snapshot) -> None:
    """Finish the jobs waiting for `snapshot` as it ended: done with it, failed with its error
    (one that is the snapshot's, worded with nothing of the builder's), or back in the queue
    (their builder was cancelled or failed for a reason of its own: one of them builds it
    instead, with its own ref lookup and token)."""
    snapshot.refresh_from_db()
    waiting = CloneJob.objects.filter(snapshot=snapshot, status=Status.QUEUED).exclude(
        pk=snapshot.builder_id
    )
    if snapshot.state == SnapshotState.READY:
        _finish_all(waiting, Status.DONE, **_delivering(snapshot))
    elif snapshot.state == SnapshotState.FAILED:
        _finish_all(waiting, Status.FAILED, error=snapshot.error, finished_at=timezone.now())
    elif snapshot.state == SnapshotState.ABANDONED:
        for job in waiting:
            _queue_again(job, QUEUED_AGAIN, delay=0, snapshot=None)


def _finish_all(waiting, status: Status, **fields) -> None:
    # One UPDATE per job, to know which this call finished: two settlements at once (a builder
    # ending while a job starts to follow it), or a cancel, must not tell an owner twice.
    finished = [
        job_id
        for job_id in waiting.values_list("pk", flat=True)
        if waiting.filter(pk=job_id).update(status=status, **_phase(), **fields)
    ]
    for job_id in finished:
        tokens.discard(job_id)
    _announce(finished)


def record_builder(job: CloneJob, snapshot: Snapshot) -> None:
    """The job builds `snapshot`: should it fail or be cancelled, so does the snapshot."""
    job.snapshot = snapshot
    CloneJob.objects.filter(pk=job.pk).update(snapshot=snapshot)


def mark_failed(job: CloneJob, error: str, git_output: str = "", shared: bool = False) -> bool:
    """End the job with `error`, which, like `git_output`, may quote git or a server.
    `shared`: the failure is its snapshot's, and fails the jobs waiting for it too
    (gitwords.CloneFailed); otherwise they go back to the queue."""
    return _finish(
        job,
        Status.FAILED,
        shared=shared,
        error=storable(error),
        git_output=storable(git_output),
        finished_at=timezone.now(),
    )


def retry_later(job: CloneJob, reason: str, give_up_error: str) -> bool:
    """Put a job that cannot start (or go on) yet back in the queue, to be tried again after a
    growing delay; after CLONES_WAIT_RETRIES waits it fails with `give_up_error` instead, as
    do the jobs waiting for its snapshot: the engine or the disk that failed it is theirs too,
    and they have waited as long."""
    if job.waits >= settings.CLONES_WAIT_RETRIES:
        return mark_failed(job, give_up_error, shared=True)
    delay = min(settings.CLONES_WAIT_SECONDS * 2**job.waits, MAX_WAIT_SECONDS)
    return _queue_again(job, reason, delay, waits=F("waits") + 1, **_uncounted(job))


def hand_back(job: CloneJob, phase: str = "Queued again: its worker was stopped.") -> bool:
    """Give a job back to the queue, to run at once, because its attempt was cut short by no
    fault of the clone (its worker is stopping, or lost the database); the attempt does not
    count."""
    return _queue_again(job, phase, delay=0, **_uncounted(job))


def recover(job: CloneJob) -> bool:
    """A job whose worker fell silent (it stopped beating: killed, or its machine died): queue
    it once more, or fail it after its second attempt. Only this counts attempts: one cut short
    by an unreachable database or engine is handed back uncounted by its worker."""
    # Asked again in the UPDATE itself: a worker that beat since it was found is alive.
    still_lost = lost_its_worker()
    # What the sweep saw, and no more: the heartbeat stopped, not why.
    silent = f"gave no sign of life for over {lost_after_seconds()} s"
    if job.attempts >= MAX_ATTEMPTS:
        error = f"Its worker {silent} during the clone, twice; it was not tried again."
        return _finish(job, Status.FAILED, still_lost, error=error, finished_at=timezone.now())
    return _queue_again(job, f"Queued again: its worker {silent}.", delay=0, only_if=still_lost)


def cancel(job: CloneJob, by) -> bool:
    """Stop a queued or running job. A running one's worker notices within a second or two
    (is_still_running), kills its container and removes its files."""
    cancelled = bool(
        CloneJob.objects.active()
        .filter(pk=job.pk)
        .update(
            status=Status.CANCELLED,
            **_phase(),
            error=f"Cancelled by {by}.",
            finished_at=timezone.now(),
        )
    )
    if cancelled:
        _ended(job, Status.CANCELLED)
    return cancelled


def _uncounted(job: CloneJob) -> dict:
    """Undo the attempt a running job had begun: it was interrupted, not tried."""
    return {"attempts": F("attempts") - 1} if job.status == Status.RUNNING else {}


def _queue_again(job: CloneJob, phase: str, delay: float, only_if: Q = ANY, **counters) -> bool:
    """Back to queued with a new task, now or after `delay` seconds (a one-off schedule)."""
    with transaction.atomic():
        updated = (
            _unchanged(job)
            .filter(only_if)
            .update(status=Status.QUEUED, started_at=None, **_phase(phase), **counters)
        )
        if updated:
            enqueue(job.id, delay)
    return bool(updated)


def _finish(
    job: CloneJob, status: Status, only_if: Q = ANY, shared: bool = False, **fields
) -> bool:
    """Close an active job; False if it changed meanwhile (cancelled, or taken over). A failure
    that is not `shared` (mark_failed) sends the jobs waiting for its snapshot back to the
    queue: its worker stopping twice, say."""
    finished = bool(_unchanged(job).filter(only_if).update(status=status, **_phase(), **fields))
    if finished:
        _ended(job, status, fields.get("error", ""), shared)
    return finished


def _ended(job: CloneJob, status: Status, error: str = "", shared: bool = False) -> None:
    _announce([job.id])
    tokens.discard(job.id)  # a finished job never needs its token again
    snapshot = snapshots.builder_ended(job, status, error, shared)
    if snapshot is not None:
        settle_followers(snapshot)


def _announce(job_ids: list) -> None:
    """Tell the owners of jobs that have just ended, once that is committed: never of a change
    that is rolled back. A failure to tell is logged, and leaves the ending as it is."""
    if job_ids:
        transaction.on_commit(partial(email.job_ended, job_ids), robust=True)
        transaction.on_commit(partial(_tell_watches, job_ids), robust=True)


# Sent, once the ending is committed, for each of a watch's snapshot jobs that has ended: its
# watch counts it (clones.watches.snapshot_ended, connected in apps.py). A signal, because
# watches sit above jobs: they queue jobs, and jobs know nothing of them.
snapshot_ended = Signal()


def _tell_watches(job_ids: list) -> None:
    for job in CloneJob.objects.filter(pk__in=job_ids, watch__isnull=False):
        snapshot_ended.send(sender=CloneJob, job=job)


def _unchanged(job: CloneJob):
    """The job's row, if it is still active and as this `job` saw it."""
    return CloneJob.objects.active().filter(
        pk=job.pk, status=job.status, started_at=job.started_at, waits=job.waits
    )


def expire(job: CloneJob) -> bool:
    """Mark a done job expired; the history row stays. Its snapshot's file is deleted once no
    other job needs it (clones.pipeline.snapshots)."""
    if job.snapshot_id is None:
        # Its own file (its snapshot row was deleted by hand). File first: should the row
        # update fail, the job is still done and expired again later.
        archives.delete(job.archive.name)
    updated = CloneJob.objects.filter(pk=job.pk, status=Status.DONE).update(
        status=Status.EXPIRED, archive="", expired_at=timezone.now()
    )
    if updated and job.snapshot_id is not None:
        snapshots.release(job.snapshot)
    return bool(updated)


def requeue(job: CloneJob) -> bool:
    """Run a failed or cancelled job again under the same id (the admin's "retry"), afresh:
    its attempts and waits start from zero."""
    with transaction.atomic():
        updated = CloneJob.objects.filter(
            pk=job.pk, status__in=[Status.FAILED, Status.CANCELLED]
        ).update(
            status=Status.QUEUED,
            error="",
            git_output="",
            **_phase(),
            started_at=None,
            finished_at=None,
            attempts=0,
            waits=0,
            snapshot=None,  # it looks its ref up afresh
        )
        if updated:
            enqueue(job.id)
    return bool(updated)
