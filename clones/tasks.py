"""django-q2 tasks. Plain functions that take ids, reload rows, and are safe to run twice."""

import logging
import time

from django.conf import settings
from django_q.exceptions import TimeoutException

from . import archives, cloning, engine, heartbeat, jobs, paths, stopping, tokens
from .models import CloneJob, Status

logger = logging.getLogger(__name__)

EXPIRY_BATCH_SIZE = 100
EXPIRY_MAX_PER_RUN = 5000  # the next run goes on from there
PHASE_WRITE_SECONDS = 1.0
INTERNAL_ERROR = "The clone failed because of an internal error; staff can see why."
WAITING_FOR_ENGINE = "Waiting for the Docker engine to be reachable."
PACKING = "Packing the archive"


class Cancelled(Exception):
    """The job was cancelled (or recovered from under us) while it ran."""


class WorkerStopping(Exception):
    """This worker was told to stop, and the clone outlasted CLONES_STOP_GRACE."""


def run_clone_job(job_id: str) -> None:
    job = _claim_if_it_can_start(job_id)
    if job is not None:
        # The lock is waited for with the heartbeat on: the reaper may be removing a big
        # leftover of this job's dead attempt, which takes seconds.
        with heartbeat.beating(job), paths.job_dir_lock(job.id):
            _run(job)


def _claim_if_it_can_start(job_id: str) -> CloneJob | None:
    """The job, now running for us; None if it is not queued, or must wait (it then stays
    queued, saying why), or this worker is stopping (another worker gets it)."""
    job = CloneJob.objects.filter(pk=job_id, status=Status.QUEUED).first()
    if job is None:
        logger.info("job %s is not queued any more; nothing to do", job_id)
        return None
    if stopping.seconds_since_requested() is not None:
        jobs.hand_back(job)  # fetched as the worker began to stop: leave it to the next one
        return None
    not_yet = _reason_to_wait()
    if not_yet:
        jobs.wait(job, *not_yet)
        return None
    return jobs.claim(job_id)  # None if another worker was quicker, or it was cancelled


def _run(job: CloneJob) -> None:
    try:
        archive = _clone_and_archive(job)
    except Cancelled:
        _remove_job_dir(job)  # the job says "cancelled" already
    except WorkerStopping:
        _remove_job_dir(job)
        jobs.hand_back(job)
    except engine.EngineUnreachable as exc:
        _remove_job_dir(job)  # the engine went away mid-clone: wait for it, as a new job would
        jobs.wait(job, WAITING_FOR_ENGINE, str(exc))
    except (cloning.CloneFailed, engine.EngineError, archives.ArchiveFailed) as exc:
        _finish_failed(job, str(exc), getattr(exc, "output", ""))
    except TimeoutException:
        # django-q2 stops an over-long task by raising SystemExit inside it: record why first.
        timeout = settings.CLONES_TASK_TIMEOUT
        _finish_failed(job, f"The job took longer than {timeout} s and was stopped.")
        raise
    except Exception:
        logger.exception("job %s failed unexpectedly", job.id)
        _finish_failed(job, INTERNAL_ERROR)
    else:
        # The directory goes before the job is seen to finish: a retry may want it again.
        _remove_job_dir(job)
        if not jobs.mark_done(job, job.commit, archive.name, archive.size, archive.sha256):
            # Cancelled or recovered while we packed: the archive belongs to no finished job.
            archives.delete(archive.name)


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
        space = f"{paths.human_size(free)} free, {paths.human_size(needed)} needed"
        return (
            f"Waiting for free disk space on the server ({space}).",
            f"Not enough free disk space on the server to clone ({space}).",
        )
    return None


def _clone_and_archive(job: CloneJob) -> archives.Archive:
    engine.remove_job_containers(str(job.id))  # left by an attempt whose worker died
    job_dir = paths.create_job_dir(job.id, owner=engine.container_user())
    on_git_output = _throttled(lambda line: jobs.record_phase(job, *cloning.read_progress(line)))
    try:
        checkout = cloning.clone(
            job,
            job_dir,
            settings.CLONES_CLONE_TIMEOUT,
            on_git_output,
            token=tokens.read(job.id),
            keep_going=lambda: _keep_going(job),
        )
    finally:
        tokens.discard(job.id)  # used once, whatever came of it
    job.commit = cloning.head_commit(checkout)
    jobs.record_phase(job, PACKING, 0)
    return archives.store(
        checkout,
        top_level=job.download_filename.removesuffix(".tar"),
        staging=job_dir / "archive.tar",
        name=f"{job.id}.tar",
        on_progress=_throttled(lambda percent: jobs.record_phase(job, PACKING, percent)),
    )


def _finish_failed(job: CloneJob, error: str, git_output: str = "") -> None:
    _remove_job_dir(job)
    jobs.mark_failed(job, error, git_output)


def _remove_job_dir(job: CloneJob) -> None:
    try:
        paths.remove_job_dir(job.id)
    except OSError:
        # Never let a stubborn directory keep the job from being recorded; it is logged.
        logger.exception("could not remove the directory of job %s", job.id)


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


def expire_archives() -> int:
    """Delete archives past their expiry date and mark their jobs expired (scheduled)."""
    due = list(
        CloneJob.objects.expired()
        .order_by("expires_at")
        .values_list("pk", flat=True)[:EXPIRY_MAX_PER_RUN]
    )
    expired = 0
    for start in range(0, len(due), EXPIRY_BATCH_SIZE):
        for job in CloneJob.objects.filter(pk__in=due[start : start + EXPIRY_BATCH_SIZE]):
            try:
                expired += jobs.expire(job)
            except Exception:
                # One archive that cannot be deleted must not hold up all the others.
                logger.exception("could not expire job %s", job.pk)
    logger.info("expired %d archives", expired)
    return expired
