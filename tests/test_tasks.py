"""The clone task is safe to deliver twice: a done job is not redone, no second archive; and a
job whose failure cannot be recorded in full still ends with its reason."""

import logging
import os

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.tasks import async_task, fetch

from clones import tasks
from clones.models import CloneJob, Status
from clones.pipeline import gitwords

from .support.helpers import submit, wait_for_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


def test_a_task_delivered_again_leaves_a_done_job_alone(
    owner_client, start_worker, new_repo, git_daemon
):

    repo = new_repo()
    start_worker()
    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))
    assert job.status == Status.DONE, job.error
    before = (job.finished_at, job.archive.name, job.archive_sha256, job.attempts)

    task_id = async_task("clones.tasks.run_clone_job", str(job.id))
    assert fetch(task_id, wait=30_000).success

    job.refresh_from_db()
    assert (job.finished_at, job.archive.name, job.archive_sha256, job.attempts) == before
    mine = [
        name for name in os.listdir(settings.MEDIA_ROOT) if name.startswith(str(job.snapshot_id))
    ]
    assert mine == [job.archive.name]  # no second archive


@pytest.mark.django_db(transaction=True)
def test_a_failure_while_recording_a_failure_still_ends_the_job_with_its_reason(
    owner, monkeypatch, caplog
):
    job = CloneJob.objects.create(
        owner=owner, url="https://git.example/team/app.git", status=Status.RUNNING,
        started_at=timezone.now(), attempts=1,
    )  # fmt: skip
    reason = "The server closed the connection in the middle of sending the repository."

    def clone_fails(job):
        # A lone surrogate: text no database driver can encode, so recording it fails.
        raise gitwords.CloneFailed(reason, output="fatal: early EOF \udc80")

    monkeypatch.setattr(tasks, "_deliver", clone_fails)

    with caplog.at_level(logging.ERROR, logger="clones.tasks"):
        tasks._run(job)

    job.refresh_from_db()
    assert (job.status, job.error, job.git_output) == (Status.FAILED, reason, "")
    assert f"job {job.id}: could not record its failure with git's output" in caplog.text
