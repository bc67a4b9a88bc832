"""clones.pipeline.gitwords: git's output read back as the reason a person sees. First samples
of git's words (as git 2.39 prints them); then each mapping checked against what git (the same
version as the test image's) prints for a repository that provokes it."""

import subprocess
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from clones.models import CloneJob
from clones.pipeline import cloning, engine, gitwords, paths
from clones.pipeline.gitwords import explained, read_progress

from ..support import corpus
from ..support.gitservers import GitHTTPServer
from ..support.helpers import small_disk
from ..support.repos import GIT_ENV, remove_object

COMMIT = "c0ffee" + "0" * 34
JOB = CloneJob(url="https://h.example:8443/team/app.git", ref="dev", commit=COMMIT)
LEGACY = [
    (corpus.zero_padded_modes, "zeroPaddedFilemode"),  # pallets/flask
    (corpus.bad_time_zone, "badTimezone"),  # psf/requests
    (corpus.missing_space_before_date, "missingSpaceBeforeDate"),
    (corpus.odd_author_lines, "nulInCommit"),  # the newest of its odd commits comes first
]


def clone(bare: Path, into: Path, fsck: str) -> subprocess.CompletedProcess:
    """Plain git with the service's fsck settings (what matters here), over a transport that
    runs index-pack as a fetch from a server does."""
    return git_clone(f"file://{bare}", into, cloning.fsck_config(fsck))


def git_clone(
    url: str, into: Path, config: Sequence[str] = (), prefix: Sequence[str] = ()
) -> subprocess.CompletedProcess:
    """Plain git's clone, with `config` (-c options), its command run after `prefix`."""
    options = [option for item in config for option in ("-c", item)]
    command = [*prefix, "git", *options, "clone", "--no-recurse-submodules", url, str(into)]
    return subprocess.run(command, env=GIT_ENV, capture_output=True, text=True)


def reason(output: str) -> str:
    return str(explained(output, CloneJob(url="https://git.example/team/app.git")))


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (
            "warning: Could not find remote branch dev to clone.\n"
            "fatal: Remote branch dev not found in upstream origin",
            "The repository has no branch or tag 'dev'.",
        ),
        (
            "fatal: could not read Username for 'https://h.example': terminal prompts disabled",
            "This repository needs authentication; give an access token that can read it.",
        ),
        (
            "fatal: repository 'https://h.example:8443/team/app.git/' not found",
            "There is no git repository at https://h.example:8443/team/app.git.",
        ),
        (
            "fatal: unable to access 'https://h.example:8443/team/app.git/': "
            "Could not resolve host: h.example",
            "The host h.example:8443 could not be found.",
        ),
        (
            "fatal: early EOF\nfatal: index-pack failed",  # older git's words for a cut pack
            "The server closed the connection in the middle of sending the repository.",
        ),
        ("fatal: index-pack failed", "git failed: fatal: index-pack failed"),
        (
            # git 2.39's, from a git daemon under `ulimit -v 50000` sending a 20 MB blob
            "remote: fatal: Out of memory, malloc failed (tried to allocate 20000001 bytes)    \n"
            "remote: aborting due to possible repository corruption on the remote side.\x00\n"
            "fatal: early EOF\nfatal: fetch-pack: invalid index-pack output",
            "The server could not send the repository: Out of memory, malloc failed "
            "(tried to allocate 20000001 bytes).",
        ),
        (
            # The same, had pack-objects been killed before it could say why.
            "remote: aborting due to possible repository corruption on the remote side.\x00\n"
            "fatal: early EOF\nfatal: fetch-pack: invalid index-pack output",
            "The server could not send the repository: it stopped, saying its copy may be damaged.",
        ),
        (
            f"fatal: reference is not a tree: {COMMIT}",
            f"The repository has no commit {COMMIT}.",
        ),
        (
            f"fatal: Server does not allow request for unadvertised object {COMMIT}",
            "The server does not let a commit be fetched by its SHA alone; choose the full "
            f"history for {COMMIT}, or give a branch or tag.",
        ),
    ],
)
def test_git_output_becomes_a_reason(output, reason):
    assert str(explained(output, JOB)) == reason


@pytest.mark.parametrize(
    ("output", "shared"),
    [
        # What the repository holds at the commit: any job asking for it meets it too.
        ("error: object 1234abcd: hasDotgit: contains '.git'\nfatal: fsck error", True),
        (
            "error: cannot stat 'nnn': File name too long\nClone succeeded, but checkout failed",
            True,
        ),
        (f"fatal: reference is not a tree: {COMMIT}", True),
        # The server's answer to this job's own request: its token, its URL, its ref.
        ("fatal: Authentication failed for 'https://h.example:8443/team/app.git/'", False),
        ("fatal: repository 'https://h.example:8443/team/app.git/' not found", False),
        ("fatal: Remote branch dev not found in upstream origin", False),
        ("fatal: unable to access 'https://H.example/app/': Could not resolve host", False),
        ("fatal: early EOF", False),  # not recognized: not known to be the repository's
    ],
)
def test_only_a_failure_that_is_the_repositorys_is_shared_with_the_jobs_waiting(output, shared):
    assert explained(output, JOB).shared is shared


def test_an_ipv6_host_is_named_in_brackets_as_in_its_url():
    job = CloneJob(url="https://[2001:db8::7]:8443/team/app.git")
    refused = "fatal: unable to access '...': Failed to connect to 2001:db8::7 port 8443"
    unverified = "fatal: unable to access '...': SSL certificate problem: self-signed certificate"

    assert str(explained(refused, job)) == "Could not connect to [2001:db8::7]:8443."
    assert str(explained(unverified, job)) == (
        "[2001:db8::7]:8443's TLS certificate could not be verified."
    )


@pytest.mark.parametrize(
    ("line", "progress"),
    [
        ("Receiving objects:  45% (123/456), 1.20 MiB | 2.00 MiB/s", ("Receiving objects", 45)),
        ("remote: Counting objects: 100% (20/20), done.", ("Counting objects", 100)),
        ("Resolving deltas:   7% (1/14)", ("Resolving deltas", 7)),
        ("Updating files:  50% (2/4)", ("Updating files", 50)),
        ("Cloning into '/job/repo'...", ("Cloning into '/job/repo'...", None)),
    ],
)
def test_git_progress_becomes_a_phase_and_a_percent(line, progress):
    assert read_progress(line) == progress


@pytest.mark.parametrize(("build", "check"), LEGACY, ids=[check for _, check in LEGACY])
def test_standard_fsck_lets_a_legacy_object_through_that_strict_refuses(
    build, check, served_root, tmp_path
):
    repo = build(served_root, f"legacy-{uuid.uuid4().hex[:8]}")

    standard = clone(repo.bare, tmp_path / "standard", "standard")
    strict = clone(repo.bare, tmp_path / "strict", "strict")

    assert standard.returncode == 0, standard.stderr
    assert "warning: object " in standard.stderr and f": {check}: " in standard.stderr
    assert strict.returncode != 0
    assert reason(strict.stderr).startswith(f"The repository has an object git refuses: {check}: ")


def test_a_tree_that_would_write_into_dot_git_is_refused_with_gits_words(served_root, tmp_path):
    repo = corpus.dotgit_in_tree(served_root, f"dotgit-{uuid.uuid4().hex[:8]}")

    result = clone(repo.bare, tmp_path / "clone", "standard")

    assert result.returncode != 0
    assert "invalid index-pack output" in result.stderr  # what used to be read as "too large"
    assert reason(result.stderr) == (
        "The repository has an object git refuses: hasDotgit: contains '.git'."
    )


def test_with_fsck_off_nothing_is_checked(served_root, tmp_path):
    repo = corpus.dotgit_in_tree(served_root, f"dotgit-{uuid.uuid4().hex[:8]}")
    assert clone(repo.bare, tmp_path / "bare", "off").stderr.count("hasDotgit") == 0


def test_a_file_no_file_system_can_hold_fails_the_checkout_with_gits_words(served_root, tmp_path):
    repo = corpus.name_too_long(served_root, f"long-{uuid.uuid4().hex[:8]}")

    result = clone(repo.bare, tmp_path / "clone", "standard")

    assert result.returncode != 0
    said = reason(result.stderr)
    assert said.startswith("The repository's files could not be checked out: cannot stat 'nnn")
    assert said.endswith("nnn': File name too long")
    assert "…" in said and len(said) < 400  # the name is cut in the middle, the reason kept


def test_a_file_over_the_size_cap_is_stopped_by_the_kernel_and_said_so(
    settings, git_daemon, new_repo
):
    """The clone runs in the real container, whose fsize ulimit is the size cap: the pack
    outgrows it long before the size watch's first look."""
    settings.CLONES_MAX_REPO_BYTES = 2**20
    repo = new_repo("big", extra_bytes=3 * 2**20)
    job = CloneJob(id=uuid.uuid4(), url=git_daemon.url(repo.name))
    job_dir = paths.create_job_dir(job.id, owner=engine.container_user())
    clone_args = ["clone", "--", job.url, f"{engine.MOUNT_POINT}/{cloning.CHECKOUT_DIR}"]
    try:
        with pytest.raises(gitwords.CloneFailed) as failed:
            cloning.run(job, job_dir, [clone_args], deadline=float("inf"), keep_going=lambda: None)
    finally:
        paths.remove_job_dir(job.id)

    assert "File too large" in failed.value.output  # git's words for the kernel's refusal
    assert str(failed.value) == "The repository is larger than 1 MiB, the most this service clones."


@pytest.fixture(params=["git_daemon", "git_http"])
def server(request):
    return request.getfixturevalue(request.param)


@pytest.mark.parametrize(
    ("path", "complaint"), [("docs/guide.txt", "unable to read"), ("docs", "bad tree object")]
)
def test_a_server_missing_an_object_is_said_to_have_a_damaged_copy(
    path, complaint, server, new_repo, tmp_path
):
    repo = new_repo("damaged")
    missing = remove_object(repo, path)

    result = git_clone(server.url(repo.name), tmp_path / "clone")

    assert result.returncode != 0
    assert f"remote: fatal: {complaint} {missing}" in result.stderr
    # upload-pack's own words end with a NUL byte; git's last line says nothing of the cause.
    assert "possible repository corruption on the remote side.\x00" in result.stderr
    assert "fatal: early EOF" in result.stderr
    assert result.stderr.rstrip().endswith("fatal: fetch-pack: invalid index-pack output")
    assert reason(result.stderr) == (
        "The server could not send the repository: it reports a damaged copy on its side "
        f"(object {missing[:12]})."
    )


def test_a_clone_that_fills_the_disk_says_the_disk_is_full(git_daemon, new_repo, tmp_path):
    repo = new_repo("big", extra_bytes=2 * 2**20)
    small = tmp_path / "small"

    result = git_clone(git_daemon.url(repo.name), small / "clone", prefix=small_disk(small, "1m"))

    assert "fatal: write error: No space left on device" in result.stderr
    assert result.stderr.rstrip().endswith("fatal: fetch-pack: invalid index-pack output")
    assert (
        reason(result.stderr) == "The clone ran out of disk space on this server. Try again later."
    )


def test_a_server_that_dies_mid_pack_is_said_to_have_closed_the_connection(
    served_root, new_repo, tmp_path
):
    repo = new_repo("cut", extra_bytes=2**20)
    dying = GitHTTPServer(served_root, pack_fault="die")
    try:
        result = git_clone(dying.url(repo.name), tmp_path / "clone")
    finally:
        dying.stop()

    assert "curl 18 transfer closed with" in result.stderr
    assert "unexpected disconnect while reading sideband packet" in result.stderr
    assert "fatal: early EOF" in result.stderr
    assert reason(result.stderr) == (
        "The server closed the connection in the middle of sending the repository."
    )


def test_a_server_that_stalls_after_the_refs_is_said_to_have_stopped_sending(
    served_root, new_repo, tmp_path
):
    repo = new_repo("stall")
    stalling = GitHTTPServer(served_root, pack_fault="stall")
    slow = ["http.lowSpeedLimit=1000", "http.lowSpeedTime=2"]
    try:
        result = git_clone(stalling.url(repo.name), tmp_path / "clone", slow)
    finally:
        stalling.stop()

    assert "Operation too slow. Less than 1000 bytes/sec transferred the last 2 seconds" in (
        result.stderr
    )
    assert result.stderr.rstrip().endswith("fatal: expected 'packfile'")
    assert reason(result.stderr) == (
        "The server stopped sending data (less than 1000 bytes/s for 2 s)."
    )
