"""django-q2 tasks. Plain functions that take ids, reload rows, and are safe to run twice."""

import logging
import time

from django.conf import settings

from . import archives, cloning, engine, jobs, paths
from .models import CloneJob

logger = logging.getLogger(__name__)

EXPIRY_BATCH_SIZE = 100
EXPIRY_MAX_BATCHES = 50  # one run deletes at most 5,000 archives; the next run goes on
PHASE_WRITE_SECONDS = 1.0


def run_clone_job(job_id: str) -> None:
    job = jobs.claim(job_id)
    if job is None:
        logger.info("job %s is not queued any more; nothing to do", job_id)
        return
    try:
        _clone_and_archive(job)
    except (cloning.CloneFailed, engine.EngineError) as exc:
        jobs.mark_failed(job, str(exc), getattr(exc, "output", ""))
    except Exception:
        logger.exception("job %s failed unexpectedly", job_id)
        jobs.mark_failed(job, "The clone failed because of an internal error; staff can see why.")
    finally:
        paths.remove_job_dir(job.id)


def _clone_and_archive(job: CloneJob) -> None:
    engine.remove_job_containers(str(job.id))  # left by an attempt whose worker died
    job_dir = paths.create_job_dir(job.id)
    on_phase = _throttled(lambda phase: jobs.record_phase(job, phase))
    checkout = cloning.clone(job, job_dir, settings.CLONES_CLONE_TIMEOUT, on_phase)
    job.commit = cloning.head_commit(checkout)
    jobs.record_phase(job, "packing archive")
    archive = archives.store(
        checkout,
        top_level=job.download_filename.removesuffix(".tar"),
        staging=job_dir / "archive.tar",
        name=f"{job.id}.tar",
    )
    if not jobs.mark_done(job, job.commit, archive.name, archive.size, archive.sha256):
        # Cancelled or taken over while we packed: the archive belongs to no finished job.
        archives.delete(archive.name)


def _throttled(record, interval: float = PHASE_WRITE_SECONDS):
    """Pass at most one phase per `interval` on to `record`: git's progress is chatty."""
    last_write = 0.0

    def on_phase(phase: str) -> None:
        nonlocal last_write
        if time.monotonic() - last_write >= interval:
            last_write = time.monotonic()
            record(phase)

    return on_phase


def expire_archives() -> int:
    """Delete archives past their expiry date and mark their jobs expired (scheduled)."""
    expired = 0
    for _ in range(EXPIRY_MAX_BATCHES):
        batch = list(CloneJob.objects.expired().order_by("expires_at")[:EXPIRY_BATCH_SIZE])
        if not batch:
            break
        expired += sum(jobs.expire(job) for job in batch)
    logger.info("expired %d archives", expired)
    return expired
