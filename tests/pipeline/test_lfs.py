"""Archives with Git LFS files, for real: the image's git-lfs fetches them from an LFS server on
127.0.0.1 (the batch API, then the download links it answers with) through the egress proxy,
and the proxy refuses links the URL policy forbids (the worker's task runs in this process, and
so does its proxy)."""

import hashlib
import ipaddress
import os
import socket
import subprocess

import pytest
from django.utils import timezone

from clones import jobs, tasks
from clones.models import CloneJob, History, Status
from clones.pipeline import gitwords, lfs
from clones.safety import urlpolicy

from ..support.gitservers import CanaryServer, GitHTTPServer
from ..support.helpers import assert_left_nothing_behind, run_job, unpacked
from ..support.lfsserver import LFSServer, pointer
from ..support.repos import add_submodule, git

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

# Named, not numeric: git-lfs (Go's proxy rules) never sends a loopback address through a
# proxy, so the tests' servers get names that the proxy, in this process, resolves.
NAMES = {"lfs.example": "127.0.0.1", "metadata.example": "127.0.0.2"}
BIG = os.urandom(300_000)
TOKEN = "lfs-s3cret-token"
SMALL = b"a small tracked file\n"


@pytest.fixture(autouse=True)
def named_servers(monkeypatch):
    real = urlpolicy.resolve

    def resolve(host, port):
        if host in NAMES:
            return [ipaddress.ip_address(NAMES[host])]
        return real(host, port)

    monkeypatch.setattr(urlpolicy, "resolve", resolve)


@pytest.fixture
def lfs_server():
    server = LFSServer(host_name="lfs.example")
    yield server
    server.stop()


def lfs_repo(
    served_root, git_http, lfs_server, name: str, keep=(BIG, SMALL), endpoint: str = ""
) -> str:
    """A served repository whose `assets/*.bin` are LFS pointers, the objects of those in `keep`
    on the LFS server, which its .lfsconfig names (or `endpoint`); its URL."""
    work = served_root.parent / "work" / name
    (work / "assets").mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    (work / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    (work / ".lfsconfig").write_text(f"[lfs]\n\turl = {endpoint or lfs_server.url(name)}\n")
    (work / "README.md").write_text("not in LFS\n")
    for file, content in (("big.bin", BIG), ("small.bin", SMALL)):
        stored = lfs_server.add(content) if content in keep else None
        (work / "assets" / file).write_text(stored or pointer(content))
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "assets", cwd=work)
    git("clone", "--quiet", "--bare", str(work), str(served_root / f"{name}.git"), cwd=work)
    return git_http.url(f"{name}.git")


def run(owner, url: str, **options) -> CloneJob:
    return run_job(owner, url, lfs=True, **options)


@pytest.mark.parametrize("history", [History.FULL, History.SHALLOW, History.FILES])
def test_lfs_files_are_in_the_archive_byte_for_byte(
    history, owner, served_root, git_http, lfs_server, tmp_path
):
    url = lfs_repo(served_root, git_http, lfs_server, f"lfs-{history}")
    depth = 1 if history == History.SHALLOW else None

    job = run(owner, url, history=history, depth=depth)

    assert job.status == Status.DONE, job.error
    top = unpacked(job, tmp_path)
    assert (top / "assets" / "big.bin").read_bytes() == BIG
    assert (top / "assets" / "small.bin").read_bytes() == SMALL
    assert (top / "README.md").read_text() == "not in LFS\n"
    if history == History.FILES:
        assert not (top / ".git").exists()
    else:  # a complete clone: the objects in .git/lfs, and the files as git-lfs checks them
        assert sorted(path.name for path in (top / ".git" / "lfs").iterdir()) == ["objects"]
        assert "Git LFS fsck OK" in git("lfs", "fsck", cwd=top)
    # The batch request and both downloads went to the LFS server, by its name, through the proxy.
    assert sorted(lfs_server.requests)[0].startswith("GET /objects/")
    assert f"POST /lfs-{history}/info/lfs/objects/batch" in lfs_server.requests
    assert_left_nothing_behind(job)


def test_a_job_with_lfs_files_is_its_own_snapshot(owner, served_root, git_http, lfs_server):
    url = lfs_repo(served_root, git_http, lfs_server, "lfs-own-snapshot")
    pointers = jobs.submit(owner, url, history=History.FILES)
    tasks.run_clone_job(str(pointers.id))
    files = run(owner, url, history=History.FILES)
    pointers.refresh_from_db()

    assert pointers.status == files.status == Status.DONE
    assert pointers.snapshot_id != files.snapshot_id
    assert files.archive_size > pointers.archive_size + len(BIG) // 2


def test_lfs_files_count_against_the_size_cap(owner, served_root, git_http, lfs_server, settings):
    url = lfs_repo(served_root, git_http, lfs_server, "lfs-too-large")
    settings.CLONES_MAX_REPO_BYTES = len(BIG) // 2  # the pointers and history are far smaller

    job = run(owner, url, history=History.FILES)

    assert job.status == Status.FAILED
    assert job.error == "The repository is larger than 146.5 KiB, the most this service clones."
    assert_left_nothing_behind(job)


def test_objects_missing_from_the_lfs_server_fail_the_job_naming_them(
    owner, served_root, git_http, lfs_server
):
    url = lfs_repo(served_root, git_http, lfs_server, "lfs-missing", keep=(SMALL,))

    job = run(owner, url)

    assert job.status == Status.FAILED
    oid = hashlib.sha256(BIG).hexdigest()
    assert job.error == f"The LFS server has no object for assets/big.bin (sha256:{oid[:12]}…)."
    assert_left_nothing_behind(job)


@pytest.mark.parametrize(
    "href, reason",
    [
        ("http://metadata.example:{port}", "metadata.example resolves to 127.0.0.2, a private"),
        ("http://169.254.169.254", "169.254.169.254 is a private or reserved address"),
    ],
    ids=["a name for a private address", "cloud metadata"],
)
def test_a_download_link_to_a_forbidden_address_is_refused_and_nothing_reaches_it(
    href, reason, owner, served_root, git_http, lfs_server, settings, loopback_only, request
):
    settings.CLONES_ALLOW_PRIVATE_NETWORKS = False
    settings.CLONES_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]
    canary = CanaryServer(host="127.0.0.2")
    request.addfinalizer(canary.stop)
    lfs_server.href_base = href.format(port=canary.port)
    url = lfs_repo(served_root, git_http, lfs_server, f"lfs-hostile-{len(href)}")

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error.startswith("Git LFS was refused a connection to ")
    assert reason in job.error
    assert canary.requests == []


def test_an_lfs_server_named_by_an_ssh_url_gets_no_ssh_run(tmp_path):
    """.lfsconfig may name an ssh:// LFS server, for which git-lfs runs ssh itself, past the
    proxy. The stand-in image has no ssh to show it, so this runs the job's very command with
    this machine's git and git-lfs, an `ssh` of the test's own first on the PATH."""
    bin_dir, ran = tmp_path / "bin", tmp_path / "ssh-ran"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(f'#!/bin/sh\necho "$@" >> {ran}\nexit 1\n')
    (bin_dir / "ssh").chmod(0o755)
    work = tmp_path / "repo"
    work.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    (work / ".gitattributes").write_text("*.bin filter=lfs diff=lfs merge=lfs -text\n")
    (work / ".lfsconfig").write_text("[lfs]\n\turl = ssh://git@127.0.0.1:1/x.git\n")
    (work / "a.bin").write_text(pointer(BIG))
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "pointer", cwd=work)
    [_endpoints, pull, _read_tree] = lfs.commands(str(work), "http://127.0.0.1:9", False)
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HOME": str(tmp_path)}

    result = subprocess.run(["git", *pull], env=environment, capture_output=True, text=True)

    assert result.returncode != 0
    assert not ran.exists(), ran.read_text()


def test_an_access_token_goes_to_the_repositorys_host_and_not_to_the_lfs_server(
    owner, served_root, lfs_server, request
):
    """The LFS server is another host (by name): git's credential store has the token for the
    repository's host alone."""
    private = GitHTTPServer(served_root, auth=f"{gitwords.TOKEN_USER}:{TOKEN}")
    request.addfinalizer(private.stop)
    url = lfs_repo(served_root, private, lfs_server, "lfs-private")

    job = run(owner, url, token=TOKEN, history=History.FILES)

    assert job.status == Status.DONE, job.error
    assert lfs_server.requests and lfs_server.authorizations == []


def test_the_same_commit_with_lfs_files_is_archived_byte_for_byte_alike(
    owner, served_root, git_http, lfs_server
):
    url = lfs_repo(served_root, git_http, lfs_server, "lfs-twice")
    first = run(owner, url)
    assert first.status == Status.DONE, first.error
    CloneJob.objects.filter(pk=first.pk).update(expires_at=timezone.now())
    tasks.expire_archives()  # the next job builds afresh

    second = run(owner, url)

    assert second.status == Status.DONE, second.error
    assert second.snapshot_id == first.snapshot_id
    assert second.archive_sha256 == first.archive_sha256


@pytest.mark.parametrize("history", [History.FULL, History.FILES])
def test_lfs_files_in_a_submodule_come_from_its_own_lfs_server(
    history, owner, served_root, git_http, lfs_server, tmp_path
):
    leaf_url = lfs_repo(served_root, git_http, lfs_server, f"lfs-leaf-{history}")
    top = served_root.parent / "work" / f"lfs-top-{history}"
    top.mkdir()
    git("init", "--quiet", "--initial-branch=main", cwd=top)
    leaf_work = served_root.parent / "work" / f"lfs-leaf-{history}"
    add_submodule(top, leaf_url, "lib", leaf_work)
    git("commit", "--quiet", "-m", "with an LFS submodule", cwd=top)
    git("clone", "--quiet", "--bare", str(top), str(served_root / f"{top.name}.git"), cwd=top)

    job = run(owner, git_http.url(f"{top.name}.git"), history=history, submodules=True)

    assert job.status == Status.DONE, job.error
    unpacked_top = unpacked(job, tmp_path)
    assert (unpacked_top / "lib" / "assets" / "big.bin").read_bytes() == BIG
    assert (unpacked_top / "lib" / "assets" / "small.bin").read_bytes() == SMALL


@pytest.mark.parametrize(
    "where, cause",
    [
        ("no store", "it has no LFS store for this repository (404)."),
        ("down", None),
    ],
)
def test_an_lfs_server_that_cannot_serve_says_why(
    where, cause, owner, served_root, git_http, lfs_server
):
    held = socket.socket()  # bound and not listening: nothing answers there
    held.bind(("127.0.0.1", 0))
    endpoints = {
        "no store": f"http://lfs.example:{git_http.port}/no-store.git/info/lfs",
        "down": f"http://lfs.example:{held.getsockname()[1]}/x/info/lfs",
    }
    url = lfs_repo(
        served_root,
        git_http,
        lfs_server,
        f"lfs-{where.replace(' ', '-')}",
        endpoint=endpoints[where],
    )

    job = run(owner, url)
    held.close()

    assert job.status == Status.FAILED
    if cause:
        assert job.error == f"Git LFS could not fetch files from {endpoints[where]}: {cause}"
    else:
        port = endpoints[where].split(":")[2].split("/")[0]
        assert (
            job.error == f"Git LFS could not connect to lfs.example:{port}: nothing answered there."
        )


@pytest.mark.parametrize("endpoint", ["file:///mirror", "ssh://git@127.0.0.1:1/x.git"])
def test_an_lfs_server_that_is_not_http_is_refused_before_git_lfs_runs(
    endpoint, owner, served_root, git_http, lfs_server
):
    """git-lfs would read a repository in the container for a file:// one (the mirror is
    mounted there), and run ssh itself, past the proxy, for an ssh:// one."""
    name = f"lfs-not-http-{endpoint.split(':')[0]}"
    url = lfs_repo(served_root, git_http, lfs_server, name, endpoint=endpoint)

    job = run(owner, url)

    assert job.status == Status.FAILED
    assert job.error == (
        f"The repository's .lfsconfig names an LFS server at {endpoint}: only http(s) ones "
        "are fetched (through the egress proxy)."
    )
