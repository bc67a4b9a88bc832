"""A job that cannot start yet (no engine, no disk space) stays queued and says what it waits
for, is tried again later, and fails with the reason once it has waited long enough."""

import pytest

from clones.models import Status
from clones.pipeline import paths

from .support.helpers import refreshed, run_schedule_now, submit, wait_for_job, wait_until

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


def retry_name(job) -> str:
    return f"cloneshelf: retry {job.id}"


def wait_then_give_up(job, waiting_for: str):
    wait_until(lambda: refreshed(job).waits == 1, what="the first wait")
    assert job.status == Status.QUEUED
    assert job.phase.startswith(waiting_for)
    assert job.attempts == 0  # waiting is not an attempt
    run_schedule_now(retry_name(job))  # the second try, which is the last
    return wait_for_job(job)


def test_a_job_waits_for_an_unreachable_engine_then_fails_with_why(
    owner_client, start_worker, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    start_worker(
        env={"DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "CLONES_WAIT_RETRIES": "1"}
    )

    job = wait_then_give_up(
        submit(owner_client, git_daemon.url(repo.name)),
        "Waiting for the Docker engine to be reachable.",
    )

    assert job.status == Status.FAILED
    assert job.error.startswith("The Docker engine is unreachable")
    assert not paths.job_dir(job.id).exists()


def test_a_job_waits_for_free_disk_space_then_fails_with_why(
    owner_client, start_worker, new_repo, git_daemon
):
    repo = new_repo()
    start_worker(env={"CLONES_MIN_FREE_BYTES": "1024t", "CLONES_WAIT_RETRIES": "1"})

    job = wait_then_give_up(
        submit(owner_client, git_daemon.url(repo.name)), "Waiting for free disk space"
    )

    assert job.status == Status.FAILED
    assert job.error.startswith("Not enough free disk space on the server to clone (")
    assert job.error.endswith(" free, 1024 TiB needed).")
    assert not paths.job_dir(job.id).exists()
