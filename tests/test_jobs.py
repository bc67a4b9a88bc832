"""The job's transitions are guarded: no double run, no finished job reopened."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import OrmQ

from clones import jobs, queue
from clones.models import LOST_AFTER_BEATS, CloneJob, Snapshot, SnapshotState, Status
from clones.ops import recovery

pytestmark = [pytest.mark.database, pytest.mark.django_db]


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


def falls_silent(job: CloneJob) -> None:
    """Its worker stops beating, for longer than a lost worker may."""
    seconds = settings.CLONES_HEARTBEAT_SECONDS * LOST_AFTER_BEATS + 1
    CloneJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=seconds)
    )


def test_a_job_whose_worker_died_is_queued_once_more_then_failed(queued, snapshot):
    first = jobs.claim(queued.id)
    assert not CloneJob.objects.lost().exists()
    falls_silent(queued)
    assert list(CloneJob.objects.lost()) == [queued]
    first.refresh_from_db()

    assert jobs.recover(first)
    second = jobs.claim(queued.id)

    assert second.attempts == 2
    assert not jobs.mark_done(first, snapshot)  # the dead attempt lost it
    falls_silent(queued)
    second.refresh_from_db()
    assert jobs.recover(second)
    second.refresh_from_db()
    assert second.status == Status.FAILED
    assert second.error == (
        "Its worker gave no sign of life for over 20 s during the clone, twice; "
        "it was not tried again."
    )
    assert OrmQ.objects.count() == 1  # one new task, for the one retry


def test_a_job_whose_worker_beat_after_it_was_found_is_not_taken_over(queued):
    jobs.claim(queued.id)
    falls_silent(queued)
    found = CloneJob.objects.lost().get()
    CloneJob.objects.filter(pk=queued.pk).update(heartbeat_at=timezone.now())  # alive after all

    assert not jobs.recover(found)

    found.refresh_from_db()
    assert found.status == Status.RUNNING and found.attempts == 1


def test_a_running_job_sees_its_cancellation(queued, snapshot):
    running = jobs.claim(queued.id)
    assert jobs.is_still_running(running)

    assert jobs.cancel(running, by="owner")

    assert not jobs.is_still_running(running)
    assert not jobs.mark_done(running, snapshot)
    running.refresh_from_db()
    assert running.status == Status.CANCELLED and running.error == "Cancelled by owner."
    assert not jobs.cancel(running, by="owner")  # once


def test_a_retry_racing_a_cancel_leaves_it_cancelled(queued):
    CloneJob.objects.filter(pk=queued.pk).update(status=Status.FAILED)
    failed = CloneJob.objects.get(pk=queued.pk)
    assert jobs.requeue(failed)
    assert jobs.cancel(failed, by="staff")

    assert jobs.claim(queued.id) is None  # the retry's task finds nothing to run


def test_a_handed_back_job_does_not_count_the_attempt(queued):
    running = jobs.claim(queued.id)
    assert jobs.hand_back(running)
    queued.refresh_from_db()
    assert (queued.status, queued.attempts) == (Status.QUEUED, 0)
    assert queued.phase == "Queued again: its worker was stopped."


def test_submit_records_the_job_and_its_task_together(owner):
    job = jobs.submit(owner, "https://example.com/a.git", "main")
    assert (job.status, job.url, job.ref) == (Status.QUEUED, "https://example.com/a.git", "main")
    assert [task.func() for task in OrmQ.objects.all()] == [queue.RUN_CLONE_JOB]
    assert OrmQ.objects.get().task["args"] == (str(job.id),)


def test_requeue_takes_only_failed_or_cancelled_jobs(queued):
    assert not jobs.requeue(queued)
    CloneJob.objects.filter(pk=queued.pk).update(
        status=Status.FAILED, error="boom", attempts=2, waits=8
    )

    assert jobs.requeue(queued)

    queued.refresh_from_db()
    assert queued.status == Status.QUEUED and queued.error == ""
    assert (queued.attempts, queued.waits) == (0, 0)  # a retry starts afresh
    assert OrmQ.objects.count() == 1


def test_a_queued_job_whose_task_never_came_gets_another(queued, settings):
    settings.CLONES_TASK_LOST_SECONDS = 600
    tasks_before = OrmQ.objects.count()
    CloneJob.objects.filter(pk=queued.pk).update(task_due_at=timezone.now() - timedelta(hours=1))
    waiting_for_a_builder = CloneJob.objects.create(owner=queued.owner, url=queued.url)

    recovery.recover()

    assert OrmQ.objects.count() == tasks_before + 1  # one, for the lost one only
    queued.refresh_from_db()
    assert queued.task_due_at > timezone.now() - timedelta(minutes=1)
    assert waiting_for_a_builder.task_due_at is None  # it needs none


def test_git_and_server_text_with_a_nul_byte_is_stored_without_it(queued, snapshot):
    """upload-pack ends "possible repository corruption" with a NUL byte, which PostgreSQL's
    text refuses: it is dropped from the job's phase, error and output, and its snapshot's."""
    job = jobs.claim(queued.id)
    Snapshot.objects.filter(pk=snapshot.pk).update(state=SnapshotState.BUILDING, builder=job)
    jobs.record_builder(job, snapshot)
    stored = "remote: aborting due to possible repository corruption on the remote side."
    said = stored + "\x00"

    jobs.record_phase(job, said)
    assert CloneJob.objects.get(pk=job.pk).phase == stored
    assert jobs.mark_failed(job, f"git failed: {said}", said)

    job.refresh_from_db()
    snapshot.refresh_from_db()
    assert job.error == snapshot.error == f"git failed: {stored}"
    assert job.git_output == stored


def test_a_phase_longer_than_its_column_is_cut_to_fit(queued):
    """git's live line runs up to engine.LINE_LIMIT characters; PostgreSQL refuses more than
    the column holds, which failed the clone as an internal error."""
    job = jobs.claim(queued.id)
    line = "remote: " + "x" * 1000

    jobs.record_phase(job, line, 50)

    stored = CloneJob.objects.get(pk=job.pk)
    assert len(stored.phase) == jobs.PHASE_LENGTH and stored.progress == 50
    assert stored.phase == line[: jobs.PHASE_LENGTH - 1] + "…"
