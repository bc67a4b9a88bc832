"""The queue's one door: every function django-q2 runs (each named in clones.queue), and the
periodic schedules. Plain functions that take ids, reload rows, and are safe to run twice."""

import logging
import time

from django.conf import settings
from django.utils import timezone
from django_q.exceptions import TimeoutException
from django_q.models import Schedule

from . import jobs, queue, retention, stopping, units, watches
from .models import CloneJob, History, Snapshot, Status, Watch
from .notify import email, webhooks
from .ops import heartbeat, outages, recovery
from .pipeline import (
    archives,
    cloning,
    engine,
    gitwords,
    paths,
    provenance,
    refs,
    snapshots,
    sshaccess,
)
from .safety import signing, tokens, urlpolicy

logger = logging.getLogger(__name__)

EXPIRY_BATCH_SIZE = 100
EXPIRY_MAX_PER_RUN = 5000  # the next run goes on from there
PHASE_WRITE_SECONDS = 1.0
INTERNAL_ERROR = "The clone failed because of an internal error; staff can see why."
WAITING_FOR_ENGINE = "Waiting for the Docker engine to be reachable."
DATABASE_LOST = "Queued again: the database was unreachable during the clone."
PACKING = "Packing the archive"


class Cancelled(Exception):
    """The job was cancelled (or recovered from under us) while it ran."""


class WorkerStopping(Exception):
    """This worker was told to stop, and the clone outlasted CLONES_STOP_GRACE."""


@outages.ridden_out  # a claim the database did not answer is tried again once it does
def run_clone_job(job_id: str) -> None:
    job = _claim(job_id)
    if job is not None:
        with heartbeat.beating(job):
            _run(job)


def _claim(job_id: str) -> CloneJob | None:
    """The job, now running for us; None if it is not queued, or this worker is stopping
    (another worker gets it)."""
    job = CloneJob.objects.filter(pk=job_id, status=Status.QUEUED).first()
    if job is None:
        logger.info("job %s is not queued any more; nothing to do", job_id)
        return None
    if stopping.seconds_since_requested() is not None:
        jobs.hand_back(job)  # fetched as the worker began to stop: leave it to the next one
        return None
    return jobs.claim(job_id)  # None if another worker was quicker, or it was cancelled


def _run(job: CloneJob) -> None:
    try:
        _deliver(job)
    except Cancelled:
        pass  # the job says "cancelled" already
    except WorkerStopping:
        jobs.hand_back(job)
    except engine.EngineUnreachable as exc:
        # The engine went away mid-clone: wait for it, as a new job would.
        jobs.retry_later(job, WAITING_FOR_ENGINE, str(exc))
    except gitwords.CloneFailed as exc:
        _fail(job, str(exc), exc.output, exc.shared)
    except (engine.EngineError, archives.ArchiveFailed, signing.Unusable) as exc:
        # Not the snapshot's: the engine's or the storage's words, which may name this job's
        # container or files. Jobs waiting for it try for themselves.
        _fail(job, str(exc), getattr(exc, "output", ""))
    except outages.UNREACHABLE:
        # Neither the clone's failure nor its worker's death: once the database answers (the
        # heartbeat goes on meanwhile), the job goes back to the queue, its attempt uncounted.
        logger.warning("job %s lost the database during its attempt", job.id, exc_info=True)
        outages.wait_for_database()
        jobs.hand_back(job, DATABASE_LOST)
    except TimeoutException:
        # django-q2 stops an over-long task by raising SystemExit inside it: record why first.
        # A limit on every clone: the jobs waiting for the same one would meet it too.
        timeout = settings.CLONES_TASK_TIMEOUT
        error = f"The job took longer than {timeout} s and was stopped."
        jobs.mark_failed(job, error, shared=True)
        raise
    except Exception:
        logger.exception("job %s failed unexpectedly", job.id)
        jobs.mark_failed(job, INTERNAL_ERROR)


def _fail(job: CloneJob, error: str, output: str, shared: bool = False) -> None:
    """Record the job's failure, and its reason alone should the database refuse git's output:
    a job left running would be run again and end as "the worker stopped", its reason lost."""
    try:
        jobs.mark_failed(job, error, output, shared)
    except Exception:
        logger.exception("job %s: could not record its failure with git's output", job.id)
        jobs.mark_failed(job, error, shared=shared)


def _deliver(job: CloneJob) -> None:
    """Find out which commit the job asks for, then deliver its snapshot: at once if it is
    ready, when the identical job building it is done, or by building it."""
    # First of all: a job its owner's quota refuses costs no request to the repository's server.
    retention.check_quota(job)
    token = tokens.read(job.id)
    jobs.record_phase(job, f"Looking up {job.ref or 'the default branch'}")
    # Part of the clone's time: a server that will not answer is not waited for any longer.
    lookup_timeout = min(refs.LOOKUP_SECONDS, settings.CLONES_CLONE_TIMEOUT)
    # Checked and resolved once for the lookup and the clone, seconds apart: both reach the same
    # addresses. A job that must wait for the engine or disk space runs all of this again.
    pinned = gitwords.pinned(job.url)
    every_ref = job.history == History.MIRROR  # a mirror's snapshot is of them all
    ssh = sshaccess.for_owner(job.owner_id, pinned)
    resolved = refs.resolve(job.url, pinned, job.ref, token, lookup_timeout, every_ref, ssh)
    job.commit = resolved.commit
    if every_ref:
        job.refs_digest = resolved.every_ref_digest
        CloneJob.objects.filter(pk=job.pk).update(refs_digest=job.refs_digest)
    snapshot, role = snapshots.take(job, resolved)
    if role is snapshots.Role.HIT:
        if job.watch_id:
            _record_changes_of_a_hit(job)
        jobs.mark_done(job, snapshot)
    elif role is snapshots.Role.FOLLOW:
        jobs.follow(job, snapshot)
    else:
        jobs.record_builder(job, snapshot)
        _build(job, snapshot, pinned, resolved, token)


def _build(
    job: CloneJob,
    snapshot: Snapshot,
    pinned: urlpolicy.PinnedURL,
    resolved: refs.Resolved,
    token: str,
) -> None:
    not_yet = _reason_to_wait()
    if not_yet:
        jobs.retry_later(job, *not_yet)
        return
    discarded = ""
    try:
        # The lock is waited for with the heartbeat on: the reaper may be removing a big
        # leftover of this job's dead attempt, which takes seconds.
        with paths.job_dir_lock(job.id):
            try:
                archive, signed = _clone_and_archive(job, snapshot, pinned, resolved, token)
            finally:
                # Out of the way before the job is seen to finish (a retry may want the
                # directory again), but removed only after: that takes seconds for a big one.
                discarded = paths.discard_job_dir(job.id)
        if snapshots.ready(snapshot, job, archive, signed):
            jobs.mark_done(job, Snapshot.objects.get(pk=snapshot.pk))
        else:
            archives.delete(archive.name)  # cancelled while we packed: nobody will use it
    finally:
        _remove_discarded(discarded)


def _keep_going(job: CloneJob) -> None:
    """Called about once a second while git runs: raise to stop the clone."""
    if not jobs.is_still_running(job):
        raise Cancelled()
    stopping_for = stopping.seconds_since_requested()
    if stopping_for is not None and stopping_for > settings.CLONES_STOP_GRACE:
        raise WorkerStopping()


def _reason_to_wait() -> tuple[str, str] | None:
    """(what the job waits for, why it fails if that never comes), or None to start now."""
    try:
        engine.ping()
    except engine.EngineError as exc:
        return WAITING_FOR_ENGINE, str(exc)
    free, needed = paths.free_bytes(), settings.CLONES_MIN_FREE_BYTES
    if free < needed:
        space = f"{units.human_size(free)} free, {units.human_size(needed)} needed"
        return (
            f"Waiting for free disk space on the server ({space}).",
            f"Not enough free disk space on the server to clone ({space}).",
        )
    return None


def _clone_and_archive(
    job: CloneJob,
    snapshot: Snapshot,
    pinned: urlpolicy.PinnedURL,
    resolved: refs.Resolved,
    token: str,
) -> tuple[archives.Archive, dict]:
    """The archive, stored, and its signed provenance."""
    started = timezone.now()
    key = signing.signing_key()  # one that cannot sign fails the job now, not after its clone
    engine.remove_job_containers(str(job.id))  # left by an attempt whose worker died
    job_dir = paths.create_job_dir(job.id, owner=engine.container_user())
    on_git_output = _throttled(lambda line: jobs.record_phase(job, *gitwords.read_progress(line)))
    built = cloning.build(
        job,
        pinned,
        resolved,
        job_dir,
        settings.CLONES_CLONE_TIMEOUT,
        on_git_output,
        token=token,
        keep_going=lambda: _keep_going(job),
        since=_previous_commit(job),
    )
    if job.watch_id:
        changes = {"changes": built.changes, "changes_total": built.changes_total}
        CloneJob.objects.filter(pk=job.pk).update(**changes)
    archive = _store(job, snapshot, built, job_dir)
    statement = provenance.statement(job, snapshot, built, archive.sha256, started, timezone.now())
    return archive, signing.envelope(statement, key)


def _store(job: CloneJob, snapshot: Snapshot, built: cloning.Built, job_dir) -> archives.Archive:
    name = f"{snapshot.id}.{job.archive_format}"
    if built.commit_time is None:  # git made the archive itself
        return archives.store_file(built.path, name)
    jobs.record_phase(job, PACKING, 0)
    return archives.store(
        built.path,
        top_level=job.top_level,
        staging=job_dir / f"archive.{job.archive_format}",
        name=name,
        archive_format=job.archive_format,
        mtime=built.commit_time,
        on_progress=_throttled(lambda percent: jobs.record_phase(job, PACKING, percent)),
    )


CHANGES_TIMEOUT = 60


def _record_changes_of_a_hit(job: CloneJob) -> None:
    """A watch's snapshot that someone else's job built: the commits since the watch's previous
    one are listed in the mirror all the same, in a container of their own. They are a nicety:
    if they cannot be listed, the job is still done, without them."""
    since = _previous_commit(job)
    if not since:
        return
    discarded = ""
    try:
        with paths.job_dir_lock(job.id):
            try:
                job_dir = paths.create_job_dir(job.id, owner=engine.container_user())
                changes, total = cloning.changes_since(job, since, job_dir, CHANGES_TIMEOUT)
            finally:
                discarded = paths.discard_job_dir(job.id)
        CloneJob.objects.filter(pk=job.pk).update(changes=changes, changes_total=total)
    except (engine.EngineError, gitwords.CloneFailed, OSError):
        logger.warning("job %s: could not list the commits since %s", job.id, since, exc_info=True)
    finally:
        _remove_discarded(discarded)


def _previous_commit(job: CloneJob) -> str:
    """For a watch's snapshot: the commit of the watch's last done snapshot of the same ref,
    whose changes since this one lists; "" for none."""
    if job.watch_id is None:
        return ""
    earlier = CloneJob.objects.filter(watch=job.watch_id, ref=job.ref, status=Status.DONE)
    latest = earlier.exclude(pk=job.pk).order_by("-finished_at").first()
    return latest.commit if latest else ""


def _remove_discarded(name: str) -> None:
    try:
        if name:
            paths.remove_discarded(name)
    except OSError:
        # Never let a stubborn directory keep the job from being recorded; it is logged, and
        # the reaper tries again.
        logger.exception("could not remove the job directory %s", name)


def _throttled(record, interval: float = PHASE_WRITE_SECONDS):
    """Pass at most one call per `interval` on to `record`: progress is chatty, and the
    database need not hear all of it."""
    last_write = 0.0

    def throttled(*args) -> None:
        nonlocal last_write
        if time.monotonic() - last_write >= interval:
            last_write = time.monotonic()
            record(*args)

    return throttled


@outages.ridden_out
def expire_archives() -> int:
    """Apply every watch's retention policy (a changed policy takes effect here), mark done jobs
    past their expiry date expired, then delete the snapshots no unexpired job needs any more
    (scheduled). Returns the number of jobs expired."""
    _apply_retention()
    _give_orphans_an_expiry()
    due = list(
        CloneJob.objects.expired()
        .order_by("expires_at")
        .values_list("pk", flat=True)[:EXPIRY_MAX_PER_RUN]
    )
    expired = 0
    for start in range(0, len(due), EXPIRY_BATCH_SIZE):
        batch = due[start : start + EXPIRY_BATCH_SIZE]
        for job in CloneJob.objects.select_related("snapshot").filter(pk__in=batch):
            expired += _isolated(jobs.expire, job)
    deleted = sum(
        _isolated(snapshots.delete, snapshot)
        for snapshot in snapshots.due_for_deletion()[:EXPIRY_MAX_PER_RUN]
    )
    logger.info("expired %d jobs, deleted %d archives", expired, deleted)
    return expired


def _give_orphans_an_expiry() -> None:
    """Done jobs with no expiry and no watch: a watch's snapshots, kept by its retention, whose
    watch was deleted without watches.delete giving them one (a snapshot done while it ran).
    They are kept as one-off archives are, from now."""
    orphans = CloneJob.objects.filter(status=Status.DONE, watch=None, expires_at=None)
    orphans.update(expires_at=snapshots.job_expiry())


def _apply_retention() -> None:
    """retention.apply for every watch with a done snapshot, a batch of watches at a time."""
    watches = Watch.objects.filter(snapshots__status=Status.DONE).distinct().order_by("pk")
    forgotten, batch = 0, list(watches[:EXPIRY_BATCH_SIZE])
    while batch:
        forgotten += sum(_isolated(retention.apply, watch) for watch in batch)
        batch = list(watches.filter(pk__gt=batch[-1].pk)[:EXPIRY_BATCH_SIZE])
    logger.info("retention forgot %d snapshots", forgotten)


def _isolated(step, row) -> int:
    """`step(row)` (a bool or a count), or 0 if it raised: one row's failure is logged and stops
    no other."""
    try:
        return step(row)
    except outages.UNREACHABLE:
        raise  # every row's, not this one's: the whole run waits for the database once
    except Exception:
        # One archive that cannot be deleted must not hold up all the others.
        logger.exception("could not expire %r", row)
        return 0


def recover() -> None:
    """The recovery sweep (RECOVERY_SCHEDULE; `manage.py worker` also runs it before its
    workers start)."""
    recovery.recover()


# Both are safe to run again: a webhook attempt is claimed by a conditional UPDATE before it is
# sent, and an email reads the database only before it is sent.
@outages.ridden_out
def deliver_webhook(delivery_id: str, attempt: int) -> None:
    """One attempt of a webhook delivery, on the webhooks' own queue (webhooks.QUEUE)."""
    webhooks.deliver(delivery_id, attempt)


@outages.ridden_out
def send_email(job_id: str) -> None:
    """An owner's email, on the webhooks' queue too (email.job_ended)."""
    email.send(job_id)


@outages.ridden_out
def send_watch_email(watch_id: str) -> None:
    """An owner's email that their watch keeps failing (email.watch_failing)."""
    email.send_watch_failing(watch_id)


@outages.ridden_out
def dispatch_checks() -> int:
    """Queue a check of every due watch (CHECKS_SCHEDULE, every minute)."""
    return watches.dispatch()


@outages.ridden_out
def check_watch(watch_id: str, claim: str) -> None:
    """One check of a watch that dispatch_checks claimed at `claim`, on the webhooks' queue."""
    watches.check(watch_id, claim)


# (name, task, the setting of its interval in minutes, or the minutes)
SCHEDULES = [
    (queue.EXPIRY_SCHEDULE, queue.EXPIRE_ARCHIVES, "CLONES_EXPIRY_INTERVAL_MINUTES"),
    (queue.RECOVERY_SCHEDULE, queue.RECOVER, "CLONES_RECOVERY_INTERVAL_MINUTES"),
    # Every minute: a watch is checked within a minute of its due time (its lag).
    (queue.CHECKS_SCHEDULE, queue.DISPATCH_CHECKS, 1),
]


def ensure_schedules(**kwargs) -> None:
    """Create (or bring up to date) the periodic schedules; run on every migrate, so
    idempotent. Rows that name a task by a former name (queue.FORMER_NAMES: the recovery
    schedule, webhook retries) are renamed first: django-q2 could not find it any more."""
    for former, name in queue.FORMER_NAMES.items():
        Schedule.objects.filter(func=former).update(func=name)
    for name, func, minutes in SCHEDULES:
        Schedule.objects.update_or_create(
            name=name,
            defaults={
                "func": func,
                "schedule_type": Schedule.MINUTES,
                "minutes": minutes if isinstance(minutes, int) else getattr(settings, minutes),
                "repeats": -1,
            },
        )
