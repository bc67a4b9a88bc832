"""Hostile repositories and servers, against the real engine: a locked-down container, git that
fetches from nowhere but the checked address, hard size limits, and tokens that leave no trace.
"""

import json
import shlex
import subprocess
import time

import pytest
from django.conf import settings
from django.urls import reverse

from clones.models import Status
from clones.pipeline import engine, paths
from clones.safety import tokens

from .support.gitservers import CanaryServer, GitHTTPServer, RedirectServer, StallingServer
from .support.helpers import assert_left_nothing_behind, download, submit, wait_for_job
from .support.repos import git


def container_of(job, timeout: float = 30) -> dict:
    """`docker inspect` of the job's running clone container."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connected() as client:
            found = client.containers.list(
                filters={"label": f"{engine.JOB_LABEL}={job.id}"}, ignore_removed=True
            )
            if found:
                return found[0].attrs
        time.sleep(0.1)
    pytest.fail(f"no container for job {job.id} within {timeout} s")


def test_the_clone_container_is_locked_down(owner_client, start_worker):
    stalling = StallingServer()
    start_worker(env={"CLONES_CLONE_TIMEOUT": "30"})
    job = submit(owner_client, stalling.url())

    inspected = container_of(job)
    host, config = inspected["HostConfig"], inspected["Config"]
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert host["Privileged"] is False
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,noexec,nosuid,nodev,size=67108864"}
    assert host["Init"] is True
    assert host["PidsLimit"] == settings.CLONES_CONTAINER_PIDS == 256
    assert host["Memory"] == host["MemorySwap"] == settings.CLONES_CONTAINER_MEMORY == 2**30
    assert host["NanoCpus"] == 0 and host["CpuShares"] == 1024  # a weight, not a quota
    ulimits = {limit["Name"]: (limit["Soft"], limit["Hard"]) for limit in host["Ulimits"]}
    assert ulimits == {"nofile": (1024, 1024), "fsize": (2 * 2**30, 2 * 2**30)}
    assert host["LogConfig"] == {
        "Type": "json-file",
        "Config": {"max-file": "1", "max-size": str(2**20)},
    }
    assert host["NetworkMode"] == settings.CLONES_NETWORK
    assert config["User"] == "{}:{}".format(*engine.container_user())
    assert not config["User"].startswith("0:")
    # The git commands run by one shell script, every word quoted.
    assert config["Entrypoint"][:2] == ["/bin/sh", "-c"]
    words = shlex.split(config["Entrypoint"][2])
    for option in [
        "protocol.allow=never",
        "http.followRedirects=false",
        "core.hooksPath=/dev/null",
        "submodule.recurse=false",
        "transfer.fsckObjects=true",
        "transfer.bundleURI=false",
        "credential.helper=",
    ]:
        assert option in words
    assert "--no-recurse-submodules" in words
    for variable in ["GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0", "GIT_LFS_SKIP_SMUDGE=1"]:
        assert variable in config["Env"]

    stalling.stop()  # git gets a closed connection and gives up
    job = wait_for_job(job)
    assert job.status == Status.FAILED
    assert_left_nothing_behind(job)


def make_booby_trapped_repo(served_root, canary: CanaryServer) -> str:
    """A repository with a submodule and LFS objects that all live on the canary server."""
    work = served_root.parent / "work" / "trapped"
    work.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    (work / ".gitmodules").write_text(
        f'[submodule "evil"]\n\tpath = evil\n\turl = {canary.url("evil.git")}\n'
    )
    (work / ".lfsconfig").write_text(f"[lfs]\n\turl = {canary.url('lfs')}\n")
    (work / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    (work / "big.bin").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "a" * 64 + "\nsize 12345\n"
    )
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "pointer", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)
    git("update-index", "--add", "--cacheinfo", f"160000,{head},evil", cwd=work)
    git("commit", "--quiet", "-m", "submodule", cwd=work)
    git("clone", "--quiet", "--bare", str(work), str(served_root / "trapped.git"), cwd=work)
    return "trapped.git"


def test_submodules_and_lfs_that_point_elsewhere_are_never_fetched(
    owner_client, start_worker, served_root, git_http, tmp_path
):
    canary = CanaryServer()
    name = make_booby_trapped_repo(served_root, canary)
    start_worker()

    job = wait_for_job(submit(owner_client, git_http.url(name)))

    assert job.status == Status.DONE, job.error
    checkout = download(owner_client, job, tmp_path)
    assert (checkout / "big.bin").read_text().startswith("version https://git-lfs")
    assert not any((checkout / "evil").iterdir())  # the submodule stays an empty directory
    assert canary.requests == []
    canary.stop()


def test_a_redirect_is_not_followed(owner_client, start_worker, new_repo, git_http):
    repo = new_repo()
    canary = CanaryServer()
    redirect = RedirectServer(target=canary.url(""))
    start_worker()

    job = wait_for_job(submit(owner_client, redirect.url(repo.name)))

    assert job.status == Status.FAILED
    assert job.error.startswith("The server redirected the clone to another address")
    assert canary.requests == []
    assert_left_nothing_behind(job)
    redirect.stop()
    canary.stop()


def test_a_repository_over_the_size_cap_fails_and_leaves_no_files(
    owner_client, start_worker, new_repo, git_daemon
):
    repo = new_repo("big", extra_bytes=3 * 2**20)
    start_worker(env={"CLONES_MAX_REPO_BYTES": "1m"})

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.FAILED
    assert job.error == "The repository is larger than 1 MiB, the most this service clones."
    assert not job.archive
    assert_left_nothing_behind(job)


def test_a_repository_with_too_many_files_fails(owner_client, start_worker, new_repo, git_http):
    repo = new_repo()
    start_worker(env={"CLONES_MAX_REPO_FILES": "20"})

    job = wait_for_job(submit(owner_client, git_http.url(repo.name)))

    assert job.status == Status.FAILED
    assert job.error == "The repository has more than 20 files, the most this service clones."
    assert_left_nothing_behind(job)


@pytest.fixture
def private_server(served_root):
    server = GitHTTPServer(served_root, auth=f"{'x-access-token'}:{TOKEN}", delay=0.5)
    yield server
    server.stop()


TOKEN = "ghp_SeCrEt0kenThatMustNeverLeak1234567890"


def test_a_private_repository_without_a_token_fails_fast_with_the_reason(
    owner_client, start_worker, new_repo, private_server
):
    repo = new_repo()
    start_worker()  # the clone timeout is 60 s: a prompt that hung would end in a timeout

    job = wait_for_job(submit(owner_client, private_server.url(repo.name)), timeout=45)

    assert job.status == Status.FAILED
    assert job.error == (
        "This repository needs authentication; give an access token that can read it."
    )


def test_a_token_clones_a_private_repository_and_leaves_no_trace(
    owner_client, start_worker, new_repo, private_server, tmp_path
):
    repo = new_repo()
    worker = start_worker()
    response = owner_client.post(
        reverse("clones:new"), {"url": private_server.url(repo.name), "token": TOKEN}
    )
    assert response.status_code == 302
    job = owner_client.get(response["Location"]).context["job"]

    inspected = json.dumps(container_of(job))
    job = wait_for_job(job)

    assert job.status == Status.DONE, job.error
    assert job.commit == repo.head and job.used_token
    assert TOKEN not in inspected
    checkout = download(owner_client, job, tmp_path)
    archive = subprocess.run(
        ["grep", "-r", "-l", TOKEN, str(tmp_path)], capture_output=True, check=False
    )
    assert archive.returncode == 1, archive.stdout  # 1: no file holds it
    assert (checkout / "README.md").exists()
    assert TOKEN not in owner_client.get(job.get_absolute_url()).content.decode()
    database = settings.DATABASES["default"]["NAME"]
    for path in [database, f"{database}-wal"]:
        # Read by grep, not open(): closing a file descriptor drops every POSIX lock this
        # process holds on the file, SQLite's own included, and later writes fail.
        found = subprocess.run(["grep", "-q", "-a", "-F", TOKEN, str(path)], check=False)
        assert found.returncode == 1  # 1: not found
    worker_log = tmp_path / "worker-0.log"
    assert worker.pid and TOKEN not in worker_log.read_text(errors="replace")
    assert tokens.read(job.id) == ""
    assert not (settings.CLONES_DATA_DIR / "tokens" / str(job.id)).exists()
    assert_left_nothing_behind(job)
    assert paths.job_dir(job.id).exists() is False


def test_a_cpu_quota_is_an_operators_choice(settings):
    assert engine.hardening()["nano_cpus"] == 0  # by default: a weight, no quota
    settings.CLONES_CONTAINER_CPUS = 1.5
    assert engine.hardening()["nano_cpus"] == 1_500_000_000
