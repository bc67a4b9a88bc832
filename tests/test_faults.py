"""Faults, with real processes and a real engine: a worker killed mid-clone, an engine that dies,
a disk that fills up, cancellations and a worker told to stop. Every job ends done (with its
archive) or failed/cancelled with a reason, and nothing is left behind."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone
from django_q.scheduler import scheduler

from clones import jobs, queue
from clones.models import CloneJob, Status
from clones.pipeline import engine, paths, snapshots

from .support.engines import Engine
from .support.gitservers import GitHTTPServer, StallingServer
from .support.helpers import (
    assert_handed_back,
    assert_left_nothing_behind,
    containers_of,
    refreshed,
    run_schedule_now,
    small_disk,
    submit,
    wait_for_job,
    wait_until,
)
from .support.repos import make_wide_repo, remove_object

# Short enough for a test: a job whose worker has not beaten for 4 s has lost it.
QUICK_RECOVERY = {"CLONES_HEARTBEAT_SECONDS": "1"}
LOST_AFTER_SECONDS = 4
WIDE = 30_000  # files in the checkout: deleting them takes seconds, as for a big real project


def retries_run() -> bool:
    """Let django-q2's scheduler hand the retries that are due to the worker (it would, every
    30 s); True, to be chained with a condition."""
    scheduler()
    return True


def assert_no_stray_archive(job) -> None:
    """Storage holds no file of this job's snapshot but its archive, and that only if it is
    done."""
    names = default_storage.listdir("")[1] if default_storage.exists("") else []
    mine = {name for name in names if job.snapshot_id and name.startswith(str(job.snapshot_id))}
    assert mine == ({job.archive.name} if job.status == Status.DONE else set())


def sweep_until_requeued(job) -> float:
    """Run the recovery sweep every second, as its schedule would every minute, until the job
    has been taken back; the seconds that took."""
    started = time.monotonic()

    def requeued() -> bool:
        run_schedule_now(queue.RECOVERY_SCHEDULE)
        job.refresh_from_db()
        return job.attempts == 2 or job.status != Status.RUNNING

    wait_until(requeued, timeout=60, interval=1, what="the job to be taken back")
    return time.monotonic() - started


def assert_done_and_clean(job, repo) -> None:
    job = wait_for_job(job)
    assert job.status == Status.DONE, job.error
    assert job.attempts == 2 and job.commit == repo.head
    assert_left_nothing_behind(job)
    assert_no_stray_archive(job)
    # No lock file either; the set-aside checkout goes just after the job is done.
    wait_until(lambda: paths.job_ids_on_disk() == set(), timeout=30, what="the directory to go")


def a_big_clone_under_way(client, start_worker, served_root, git_http, name: str):
    """A worker writing the checkout of a repository of WIDE files: (repository, worker, job)."""
    repo = make_wide_repo(served_root, name, files=WIDE)
    worker = start_worker(env=QUICK_RECOVERY)
    job = submit(client, git_http.url(repo.name))
    wait_until(
        lambda: paths.usage(paths.job_dir(job.id))[1] > WIDE // 3,
        interval=0.05,
        what="a third of the files in the job directory",
    )
    return repo, worker, job


def test_a_worker_killed_mid_clone_of_a_big_checkout_is_recovered_after_a_restart_byte_for_byte(
    owner_client, start_worker, served_root, git_http, tmp_path
):
    repo, first, job = a_big_clone_under_way(
        owner_client, start_worker, served_root, git_http, "wide-restart"
    )

    os.killpg(first.pid, signal.SIGKILL)  # the whole cluster, as the OOM killer might
    first.wait()
    # The new worker reaps the big leftover as it starts, and the sweep's reaper and the new
    # attempt go at it too: they must take turns, not race.
    start_worker(env={**QUICK_RECOVERY, "CLONES_WORKERS": "2"})
    sweep_until_requeued(job)

    assert_done_and_clean(job, repo)
    assert_same_as_an_uninterrupted_build(owner_client, job, tmp_path)


def assert_same_as_an_uninterrupted_build(client, job, directory) -> None:
    """A second job of the same commit, with the same options, built in one go after `job`'s
    snapshot was deleted (or it would share it), gives the very same archive."""
    retried = directory / "retried.tar"
    shutil.copy(job.archive.path, retried)
    jobs.expire(job)
    job.refresh_from_db()
    snapshots.release(job.snapshot)
    assert snapshots.delete(job.snapshot)

    again = wait_for_job(submit(client, job.url))

    assert again.status == Status.DONE and again.attempts == 1, again.error
    assert again.snapshot.builder_id == again.id  # built anew, not shared
    assert tar_listing(retried) == tar_listing(Path(again.archive.path))  # says what differs
    assert (again.archive_size, again.archive_sha256) == (job.archive_size, job.archive_sha256)


def tar_listing(archive: Path) -> list[str]:
    return subprocess.run(
        ["tar", "--list", "--verbose", "--file", archive],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip


def test_a_dead_workers_job_is_taken_over_by_another_within_the_heartbeat_window(
    owner_client, start_worker, served_root, git_http
):
    repo, doomed, job = a_big_clone_under_way(
        owner_client, start_worker, served_root, git_http, "wide-takeover"
    )
    start_worker(env=QUICK_RECOVERY)  # the survivor, running all along from here

    os.killpg(doomed.pid, signal.SIGKILL)
    doomed.wait()
    taken_back_after = sweep_until_requeued(job)

    # Not before its heartbeat went quiet, and soon after (the sweep here runs every second).
    assert LOST_AFTER_SECONDS - 1 <= taken_back_after <= LOST_AFTER_SECONDS + 10
    assert_done_and_clean(job, repo)


def test_jobs_wait_out_an_engine_that_died_and_complete_when_it_returns(
    owner_client, start_worker, new_repo, git_daemon, settings
):
    own = Engine(settings.CLONES_GIT_IMAGE)
    try:
        start_worker(env={"DOCKER_HOST": own.host, "CLONES_WAIT_SECONDS": "1"})
        own.kill()
        repos = [new_repo() for _ in range(3)]
        queued = [submit(owner_client, git_daemon.url(repo.name)) for repo in repos]

        wait_until(
            lambda: all(refreshed(job).waits >= 1 for job in queued),
            what="every job waiting for the engine",
        )
        page = owner_client.get(queued[0].get_absolute_url())
        assert page.status_code == 200  # the web keeps working
        assert "Waiting for the Docker engine to be reachable." in page.content.decode()
        own.start()

        wait_until(
            lambda: retries_run() and not CloneJob.objects.active().exists(),
            what="the queue to drain",
        )
        for job, repo in zip(queued, repos, strict=True):
            job.refresh_from_db()
            assert job.status == Status.DONE, job.error
            assert job.commit == repo.head
            assert not paths.job_dir(job.id).exists()
        assert own.containers(engine.JOB_LABEL) == []
    finally:
        own.remove()


def test_a_clone_cut_off_by_the_engine_dying_waits_for_it_and_completes(
    owner_client, start_worker, new_repo, served_root, settings, tmp_path
):
    own = Engine(settings.CLONES_GIT_IMAGE)
    slow = GitHTTPServer(served_root, delay=1)
    try:
        repo = new_repo()
        start_worker(env={"DOCKER_HOST": own.host, "CLONES_WAIT_SECONDS": "1"})
        job = submit(owner_client, slow.url(repo.name))
        wait_until(lambda: own.containers(f"{engine.JOB_LABEL}={job.id}"), what="a container")

        own.kill()

        wait_until(lambda: refreshed(job).waits == 1, what="the job to wait")
        assert job.status == Status.QUEUED and job.attempts == 0
        own.start()
        wait_until(lambda: retries_run() and not refreshed(job).is_active, what="the job to end")
        assert job.status == Status.DONE, job.error
        assert job.commit == repo.head
        assert own.containers(engine.JOB_LABEL) == []
        assert not paths.job_dir(job.id).exists()
        # Its container could not be removed while the engine was down: said in a line.
        log = (tmp_path / "worker-0.log").read_text()
        assert "could not remove container" in log
        assert "Traceback" not in log
    finally:
        slow.stop()
        own.remove()


def in_namespace_of(process, *command: str) -> str:
    result = subprocess.run(
        ["nsenter", "--mount", f"--target={process.pid}", *command],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return result.stdout


def test_a_disk_that_fills_up_while_archiving_fails_the_job_and_keeps_older_archives(
    owner_client, start_worker, new_repo, git_daemon, settings
):
    # Only the storage is small: the clone fits on the job volume, its archive does not fit.
    worker = start_worker(prefix=small_disk(settings.MEDIA_ROOT, "400k"))
    small, big = new_repo(), new_repo("big", extra_bytes=2**20)
    older = wait_for_job(submit(owner_client, git_daemon.url(small.name)))
    assert older.status == Status.DONE, older.error

    job = wait_for_job(submit(owner_client, git_daemon.url(big.name)))

    assert job.status == Status.FAILED
    assert (
        job.error == "The archive could not be stored: the server's disk is full. Try again later."
    )
    assert_left_nothing_behind(job)
    stored = in_namespace_of(worker, "ls", "-1", str(settings.MEDIA_ROOT)).split()
    assert stored == [older.archive.name]  # no partial file of the failed job
    checksum = in_namespace_of(worker, "sha256sum", older.archive.path).split()[0]
    assert checksum == older.archive_sha256


@pytest.mark.database  # PostgreSQL's text refuses the NUL byte that git's upload-pack sends
def test_a_server_reporting_a_damaged_copy_fails_the_job_with_its_reason(
    owner_client, start_worker, new_repo, git_daemon
):
    repo = new_repo("damaged")
    missing = remove_object(repo, "docs/guide.txt")
    start_worker()

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.FAILED and job.attempts == 1
    assert job.error == (
        "The server could not send the repository: it reports a damaged copy on its side "
        f"(object {missing[:12]})."
    )
    assert "remote: aborting due to possible repository corruption" in job.git_output
    assert_left_nothing_behind(job)


@pytest.fixture
def small_data_dir(tmp_path):
    """A data directory on a tmpfs of 4 MiB, mounted in this mount namespace, which the test
    engine shares (it must see the job directories it mounts)."""
    directory = tmp_path / "small-data"
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", directory], check=True)
    yield directory
    subprocess.run(["umount", "--lazy", directory], check=True)


def test_a_disk_that_fills_up_during_the_clone_fails_the_job_saying_so(
    owner_client, start_worker, new_repo, git_daemon, small_data_dir
):
    repo = new_repo("big", extra_bytes=8 * 2**20)
    start_worker(env={"CLONES_DATA_DIR": str(small_data_dir), "CLONES_MIN_FREE_BYTES": "1m"})

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.FAILED and job.attempts == 1
    assert job.error == "The clone ran out of disk space on this server. Try again later."
    assert "No space left on device" in job.git_output
    assert list((small_data_dir / "jobs").iterdir()) == []


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("die", "The server closed the connection in the middle of sending the repository."),
        ("stall", "The server stopped sending data (less than 1000 bytes/s for 2 s)."),
    ],
)
def test_a_server_failing_while_it_sends_the_pack_fails_the_job_saying_how(
    fault, error, owner_client, start_worker, new_repo, served_root
):
    repo = new_repo(fault, extra_bytes=2**20)
    server = GitHTTPServer(served_root, pack_fault=fault)
    try:
        start_worker(env={"CLONES_LOW_SPEED_SECONDS": "2"})
        job = wait_for_job(submit(owner_client, server.url(repo.name)))
    finally:
        server.stop()

    assert job.status == Status.FAILED and job.attempts == 1
    assert job.error == error
    assert_left_nothing_behind(job)


def test_the_owner_cancels_a_queued_job(owner_client, start_worker, new_repo, git_daemon):
    job = submit(owner_client, git_daemon.url(new_repo().name))

    response = owner_client.post(reverse("clones:cancel", args=[job.id]))

    assert response["Location"] == job.get_absolute_url()
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and job.error == "Cancelled by owner."
    start_worker()  # its task comes and finds nothing to do
    wait_until(lambda: not CloneJob.objects.filter(pk=job.pk, status=Status.QUEUED).exists())
    job.refresh_from_db()
    assert job.status == Status.CANCELLED and job.attempts == 0
    assert_left_nothing_behind(job)


def test_the_owner_cancels_a_running_job_and_its_container_goes(owner_client, start_worker):
    stalling = StallingServer()
    start_worker()
    job = submit(owner_client, stalling.url())
    wait_until(lambda: containers_of(job), what="a clone container")

    owner_client.post(reverse("clones:cancel", args=[job.id]))
    cancelled_at = timezone.now()

    wait_until(lambda: not containers_of(job), timeout=10, what="the container to go")
    wait_until(lambda: not paths.job_dir(job.id).exists(), timeout=10, what="the directory to go")
    assert (timezone.now() - cancelled_at).total_seconds() < 10
    job.refresh_from_db()
    assert job.status == Status.CANCELLED
    assert_no_stray_archive(job)
    stalling.stop()


def test_on_sigterm_a_running_clone_finishes_within_the_grace_period(
    owner_client, start_worker, new_repo, served_root
):
    slow = GitHTTPServer(served_root, delay=1)
    repo = new_repo()
    worker = start_worker(env={"CLONES_STOP_GRACE": "60"})
    job = submit(owner_client, slow.url(repo.name))
    wait_until(lambda: containers_of(job), what="a clone container")

    worker.terminate()

    assert worker.wait(timeout=60) == 0
    job.refresh_from_db()
    assert job.status == Status.DONE, job.error
    assert job.commit == repo.head
    assert_left_nothing_behind(job)
    slow.stop()


def test_on_sigterm_a_clone_past_the_grace_period_goes_back_to_the_queue(
    owner_client, start_worker
):
    stalling = StallingServer()
    worker = start_worker(env={"CLONES_STOP_GRACE": "2"})
    job = submit(owner_client, stalling.url())
    wait_until(lambda: containers_of(job), what="a clone container")

    worker.terminate()

    assert worker.wait(timeout=30) == 0
    assert_handed_back(job)
    start_worker(env={"CLONES_CLONE_TIMEOUT": "3"})  # the next worker takes it up again
    job = wait_for_job(job)
    assert job.status == Status.FAILED and job.error == "The clone timed out after 3 s."
    assert job.attempts == 1
    assert_left_nothing_behind(job)
    stalling.stop()


def test_an_engine_killed_with_a_container_running_leaves_no_process_once_removed(settings):
    own = Engine(settings.CLONES_GIT_IMAGE)
    try:
        # -i keeps the container's stdin open, so `read` waits until it is killed.
        subprocess.run(
            ["docker", "run", "-d", "-i", "--network", "none", "--entrypoint", "/bin/dash",
             settings.CLONES_GIT_IMAGE, "-c", "read forever"],
            env=own.client_env, capture_output=True, check=True,
        )  # fmt: skip
        own.kill()
        assert processes_naming(own.root), "the container's shim outlives its engine"
    finally:
        own.remove()
    assert processes_naming(own.root) == []


def processes_naming(root) -> list:
    return [
        process.pid
        for process in psutil.process_iter(["cmdline"])
        if any(str(root) in argument for argument in process.info["cmdline"] or [])
    ]
