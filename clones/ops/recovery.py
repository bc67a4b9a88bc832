"""Cleaning up after workers that died, and anything else left behind.

`recover` runs as a django-q2 schedule (tasks.recover) every
CLONES_RECOVERY_INTERVAL_MINUTES, and in `manage.py worker` before it starts its workers.
Everything here is safe to run at any time, from any number of processes: what belongs to a
running job is never touched.
"""

import logging
import time
from datetime import timedelta
from pathlib import Path

from django.utils import timezone

from .. import jobs
from ..models import CloneJob, Snapshot, Status, WorkerReport
from ..notify import webhooks
from ..pipeline import archives, engine, mirrors, paths, snapshots
from ..safety import tokens

logger = logging.getLogger(__name__)

# An archive or token younger than this may belong to a job that is only just starting.
STALE_AFTER_SECONDS = 60


def recover() -> None:
    # Not outages.ridden_out: a sweep that met an unreachable database must not run again the
    # moment it answers, before live workers have beaten again: they would look lost. The
    # schedule's next run, a minute on, takes its place.
    report_engine()
    for job in CloneJob.objects.lost():
        # Only the state changes here, conditionally: two sweeps at once recover a job once.
        # Its container and directory are leftovers of a job that is not running any more,
        # which reap_leftovers removes (and a new attempt removes them before it starts).
        if jobs.recover(job):
            logger.warning("job %s lost its worker after attempt %d", job.id, job.attempts)
    for job in CloneJob.objects.task_lost():
        if jobs.give_a_task_again(job):
            logger.warning("job %s was queued, but its task never reached a worker", job.id)
    for snapshot in snapshots.stranded():
        logger.warning("jobs waiting for snapshot %s lost their builder", snapshot.pk)
        jobs.settle_followers(snapshot)
    for delivery in webhooks.lost():
        if webhooks.send_again(delivery):
            logger.warning("webhook delivery %s lost its task, or its worker", delivery.pk)
    reap_leftovers()


def report_engine() -> None:
    """Record whether the engine answers, for /healthz (the web has no engine access)."""
    try:
        engine.ping()
        ok, error = True, ""
    except engine.EngineError as exc:
        ok, error = False, str(exc)
    WorkerReport.objects.update_or_create(
        pk=1, defaults={"reported_at": timezone.now(), "engine_ok": ok, "engine_error": error}
    )


def reap_leftovers() -> dict[str, int]:
    """Remove clone containers, job directories, archives, tokens and mirrors that no live job
    owns; how many of each."""
    reaped = {}
    for kind, reap in [
        ("containers", _reap_containers),
        ("directories", _reap_job_dirs),
        ("archives", _reap_archives),
        ("tokens", _reap_tokens),
        ("mirrors", mirrors.reap),
    ]:
        try:
            reaped[kind] = reap()
        except Exception:
            # One kind that cannot be cleaned must not keep the others (or a worker) waiting.
            logger.exception("could not reap leftover %s", kind)
    if any(reaped.values()):
        logger.warning("reaped leftovers: %s", reaped)
    return reaped


def _running_job_ids() -> set[str]:
    # Asked only after listing what exists: a job claimed since then made nothing in the list.
    return {
        str(pk)
        for pk in CloneJob.objects.filter(status=Status.RUNNING).values_list("pk", flat=True)
    }


def _reap_containers() -> int:
    try:
        containers = engine.job_containers()
    except engine.EngineError:
        return 0  # nothing can run there either; the next sweep tries again
    running = _running_job_ids()
    orphans = [container for container, job in containers.items() if job not in running]
    for container in orphans:
        engine.remove_container(container)
    return len(orphans)


def _reap_job_dirs() -> int:
    """Job directories no attempt holds: an attempt holds its directory's lock from before it
    makes the directory until it has removed it, so an unheld one is a dead attempt's."""
    reaped = 0
    for job_id in paths.job_ids_on_disk():
        try:
            with paths.job_dir_lock(job_id, wait=False):
                reaped += paths.remove_job_dir(job_id)
        except paths.JobDirBusy:
            continue
    return reaped


def _reap_archives() -> int:
    """Storage files no job or snapshot points at: written by an attempt that died before it
    finished, or a deleted snapshot's file that could not be deleted then."""
    names = archives.stored_names()
    kept = {
        *CloneJob.objects.exclude(archive="").values_list("archive", flat=True),
        *Snapshot.objects.exclude(archive="").values_list("archive", flat=True),
    }
    stale_before = timezone.now() - timedelta(seconds=STALE_AFTER_SECONDS)
    orphans = [
        name for name in names if name not in kept and archives.last_modified(name) < stale_before
    ]
    for name in orphans:
        archives.delete(name)
    return len(orphans)


def _reap_tokens() -> int:
    """Tokens of jobs that are over (or never made it past a rolled-back submission)."""
    active = {str(pk) for pk in CloneJob.objects.active().values_list("pk", flat=True)}
    orphans = [path for path in tokens.waiting() if path.name not in active and _is_stale(path)]
    for path in orphans:
        path.unlink(missing_ok=True)
    return len(orphans)


def _is_stale(path: Path) -> bool:
    try:
        return time.time() - path.stat().st_mtime > STALE_AFTER_SECONDS
    except FileNotFoundError:
        return False
