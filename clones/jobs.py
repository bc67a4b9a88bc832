"""A clone job's life: submitted, claimed by a worker, finished, expired.

Every transition is one conditional UPDATE on the job's current status, so two workers, a task
delivered twice or an admin action racing a worker can never both move the same job.
"""

from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone
from django_q.tasks import async_task

from . import archives
from .models import CloneJob, Status

RUN_TASK = "clones.tasks.run_clone_job"


def submit(owner, url: str, ref: str = "") -> CloneJob:
    """Record a request and queue it. `url` and `ref` must have passed clones.forms already."""
    # The ORM broker keeps its queue in this same database: one transaction makes the job and
    # its task together, or neither, so no job waits for a task that was never queued.
    with transaction.atomic():
        job = CloneJob.objects.create(owner=owner, url=url, ref=ref)
        async_task(RUN_TASK, str(job.id))
    return job


def claim(job_id) -> CloneJob | None:
    """Move a job to running for this worker; None if it is not ours to run.

    A queued job is taken. A running job is taken over only when its start is older than the
    task timeout: django-q2 has killed that attempt and delivered the task again. A finished
    job is never reopened.
    """
    taken = (
        CloneJob.objects.claimable()
        .filter(pk=job_id)
        .update(
            status=Status.RUNNING,
            started_at=timezone.now(),
            attempts=F("attempts") + 1,
            phase="starting",
        )
    )
    return CloneJob.objects.get(pk=job_id) if taken else None


def record_phase(job: CloneJob, phase: str) -> None:
    if phase != job.phase:
        job.phase = phase
        CloneJob.objects.filter(pk=job.pk, status=Status.RUNNING).update(phase=phase)


def mark_done(job: CloneJob, commit: str, archive_name: str, size: int, sha256: str) -> bool:
    now = timezone.now()
    return _finish(
        job,
        Status.DONE,
        commit=commit,
        archive=archive_name,
        archive_size=size,
        archive_sha256=sha256,
        expires_at=now + timedelta(hours=settings.CLONES_ARCHIVE_TTL_HOURS),
        finished_at=now,
    )


def mark_failed(job: CloneJob, error: str, git_output: str = "") -> bool:
    return _finish(
        job, Status.FAILED, error=error, git_output=git_output, finished_at=timezone.now()
    )


def _finish(job: CloneJob, status: Status, **fields) -> bool:
    """Close a running job; False if it was no longer running (cancelled, or taken over)."""
    updated = CloneJob.objects.filter(
        pk=job.pk, status=Status.RUNNING, started_at=job.started_at
    ).update(status=status, phase="", **fields)
    return bool(updated)


def expire(job: CloneJob) -> bool:
    """Delete a done job's archive and mark it expired; the history row stays."""
    # File first: should the row update fail, the job is still done and expired again later.
    archives.delete(job.archive.name)
    updated = CloneJob.objects.filter(pk=job.pk, status=Status.DONE).update(
        status=Status.EXPIRED, archive="", expired_at=timezone.now()
    )
    return bool(updated)


def requeue(job: CloneJob) -> bool:
    """Run a failed or cancelled job again under the same id (the admin's "retry")."""
    with transaction.atomic():
        updated = CloneJob.objects.filter(
            pk=job.pk, status__in=[Status.FAILED, Status.CANCELLED]
        ).update(
            status=Status.QUEUED,
            error="",
            git_output="",
            phase="",
            started_at=None,
            finished_at=None,
        )
        if updated:
            async_task(RUN_TASK, str(job.id))
    return bool(updated)
