"""The job's transitions are guarded: no double run, no finished job reopened."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

from clones import jobs
from clones.models import CloneJob, Status

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(owner):
    return CloneJob.objects.create(owner=owner, url="https://example.com/a.git")


def test_a_queued_job_is_claimed_once(queued):
    claimed = jobs.claim(queued.id)
    assert claimed.status == Status.RUNNING and claimed.attempts == 1
    assert jobs.claim(queued.id) is None  # the same task delivered again while it runs


@pytest.mark.parametrize("status", [Status.DONE, Status.FAILED, Status.EXPIRED, Status.CANCELLED])
def test_a_finished_job_is_never_reopened(queued, status):
    CloneJob.objects.filter(pk=queued.pk).update(status=status)
    assert jobs.claim(queued.id) is None


def test_a_job_stuck_past_the_task_timeout_is_taken_over(queued):
    first = jobs.claim(queued.id)
    too_long_ago = timezone.now() - timedelta(seconds=settings.CLONES_TASK_TIMEOUT + 1)
    CloneJob.objects.filter(pk=queued.pk).update(started_at=too_long_ago)
    assert list(CloneJob.objects.stuck()) == [queued]

    second = jobs.claim(queued.id)

    assert second.attempts == 2
    assert not jobs.mark_done(first, "c" * 40, "x.tar", 1, "f" * 64)  # the dead attempt lost it
    assert jobs.mark_failed(second, "it failed")


def test_submit_records_the_job_and_its_task_together(owner):
    job = jobs.submit(owner, "https://example.com/a.git", "main")
    assert (job.status, job.url, job.ref) == (Status.QUEUED, "https://example.com/a.git", "main")
    assert [task.func() for task in OrmQ.objects.all()] == ["clones.tasks.run_clone_job"]
    assert OrmQ.objects.get().task["args"] == (str(job.id),)


def test_requeue_takes_only_failed_or_cancelled_jobs(queued):
    assert not jobs.requeue(queued)
    CloneJob.objects.filter(pk=queued.pk).update(status=Status.FAILED, error="boom")

    assert jobs.requeue(queued)

    queued.refresh_from_db()
    assert queued.status == Status.QUEUED and queued.error == ""
    assert OrmQ.objects.count() == 1
