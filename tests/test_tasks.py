"""The clone task is safe to deliver twice: a done job is not redone, no second archive."""

import os

import pytest
from django.conf import settings
from django_q.tasks import async_task, fetch

from clones.models import Status

from .helpers import submit, wait_for_job

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
