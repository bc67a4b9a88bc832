"""The whole pipeline for real: web form -> queue -> qcluster -> container on the test engine
-> archive in storage -> download. Git servers run on 127.0.0.1."""

import tarfile
from pathlib import Path

import pytest

from clones.models import Status

from .support.gitservers import StallingServer, free_port
from .support.helpers import (
    assert_is_clean_checkout,
    assert_left_nothing_behind,
    download,
    submit,
    wait_for_job,
)


@pytest.mark.parametrize("server", ["git_daemon", "git_http"])
def test_it_clones_through_the_form_and_downloads_a_faithful_archive(
    request, server, owner_client, start_worker, new_repo, tmp_path
):
    repo = new_repo("flask")
    url = request.getfixturevalue(server).url(repo.name)
    start_worker()

    job = wait_for_job(submit(owner_client, url))

    assert job.status == Status.DONE, job.error
    assert job.commit == repo.head
    assert job.download_filename == f"{repo.name.removesuffix('.git')}-{repo.head[:7]}.tar"
    assert job.expires_at > job.finished_at >= job.started_at >= job.created_at
    checkout = download(owner_client, job, tmp_path)
    assert_is_clean_checkout(checkout, repo.head)
    assert (checkout / "bin" / "run.sh").stat().st_mode & 0o111
    assert (checkout / "link-outside").readlink() == Path("/etc/passwd")
    assert_left_nothing_behind(job)


def test_it_keeps_symlinks_as_links_and_reads_nothing_outside(
    owner_client, start_worker, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    start_worker()
    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))
    assert job.status == Status.DONE, job.error

    with tarfile.open(job.archive.path) as tar:
        outside = tar.getmember(f"{job.download_filename.removesuffix('.tar')}/link-outside")
    assert outside.issym() and outside.linkname == "/etc/passwd"


@pytest.mark.parametrize("ref", ["feature", "v1.0"])
def test_it_clones_a_branch_or_a_tag(ref, owner_client, start_worker, new_repo, git_http, tmp_path):
    repo = new_repo()
    start_worker()

    job = wait_for_job(submit(owner_client, git_http.url(repo.name), ref))

    assert job.status == Status.DONE, job.error
    assert job.commit == repo.refs[ref]
    assert_is_clean_checkout(download(owner_client, job, tmp_path), repo.refs[ref])


def test_it_clones_a_commit_given_by_full_sha(
    owner_client, start_worker, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    start_worker()
    first_commit = repo.refs["v1.0"]

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name), first_commit))

    assert job.status == Status.DONE, job.error
    assert job.commit == first_commit
    assert_is_clean_checkout(download(owner_client, job, tmp_path), first_commit)


def test_a_missing_ref_fails_naming_the_ref(owner_client, start_worker, new_repo, git_daemon):
    repo = new_repo()
    start_worker()

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name), "no-such-branch"))

    assert job.status == Status.FAILED
    assert job.error == "The repository has no branch or tag 'no-such-branch'."
    assert job.snapshot is None  # the ref lookup said so: no clone was tried
    assert_left_nothing_behind(job)


@pytest.mark.parametrize("server", ["git_daemon", "git_http"])
def test_a_missing_repository_fails_readably(request, server, owner_client, start_worker):
    url = request.getfixturevalue(server).url("no-such-repo.git")
    start_worker()

    job = wait_for_job(submit(owner_client, url))

    assert job.status == Status.FAILED
    assert job.error == f"There is no git repository at {url}."
    assert_left_nothing_behind(job)


@pytest.mark.parametrize("scheme", ["git", "http"])
def test_an_unreachable_host_fails_readably(scheme, owner_client, start_worker):
    port = free_port()  # nothing listens there
    start_worker()

    job = wait_for_job(submit(owner_client, f"{scheme}://127.0.0.1:{port}/repo.git"))

    assert job.status == Status.FAILED
    assert job.error == f"Could not connect to 127.0.0.1:{port}."


def test_a_stalled_server_is_cut_off_at_the_timeout(owner_client, start_worker):
    server = StallingServer()
    start_worker(env={"CLONES_CLONE_TIMEOUT": "3"})
    try:
        job = submit(owner_client, server.url())
        job = wait_for_job(job, timeout=60)
    finally:
        server.stop()

    assert job.status == Status.FAILED
    assert job.error == "The clone timed out after 3 s."
    assert_left_nothing_behind(job)


def test_a_job_stopped_by_the_task_timeout_is_recorded_as_failed(owner_client, start_worker):
    """django-q2 ends a task that outlives its timeout; the job must not stay "running"."""
    server = StallingServer()
    # Task timeout = clone timeout + overhead = 3 s, well before git's own 30 s would end it.
    start_worker(env={"CLONES_CLONE_TIMEOUT": "30", "CLONES_TASK_OVERHEAD": "-27"})
    try:
        job = wait_for_job(submit(owner_client, server.url()), timeout=60)
    finally:
        server.stop()

    assert job.status == Status.FAILED
    assert job.error == "The job took longer than 3 s and was stopped."
    assert_left_nothing_behind(job)


def test_two_jobs_at_once_each_get_their_own_repository(
    owner_client, start_worker, new_repo, git_daemon, git_http, tmp_path
):
    first, second = new_repo("alpha"), new_repo("beta")
    start_worker(env={"CLONES_WORKERS": "2"})

    jobs = [
        submit(owner_client, git_daemon.url(first.name)),
        submit(owner_client, git_http.url(second.name)),
    ]
    jobs = [wait_for_job(job) for job in jobs]

    for job, repo, into in zip(jobs, [first, second], ["a", "b"], strict=True):
        assert job.status == Status.DONE, job.error
        (tmp_path / into).mkdir()
        checkout = download(owner_client, job, tmp_path / into)
        assert_is_clean_checkout(checkout, repo.head)
        assert (checkout / "README.md").read_text() == f"# {repo.name.removesuffix('.git')}\n"


def test_a_missing_image_fails_with_a_message_about_the_image(
    owner_client, start_worker, new_repo, git_daemon
):
    repo = new_repo()
    # A registry on a closed loopback port: the pull is tried and fails without leaving the host.
    missing_image = f"127.0.0.1:{free_port()}/nowhere/git:1"
    start_worker(env={"CLONES_GIT_IMAGE": missing_image})

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.FAILED
    assert job.error.startswith(
        f"The git image {missing_image} is not on the Docker engine and could not be pulled"
    )
