"""How git's output becomes a reason, and how HEAD is read without running git on the clone."""

import subprocess

import pytest

from clones.models import CloneJob
from clones.pipeline import engine
from clones.pipeline.cloning import CloneFailed, explained, head_commit, read_progress
from clones.pipeline.engine import output_lines

from ..support.repos import git

COMMIT = "c0ffee" + "0" * 34
JOB = CloneJob(url="https://h.example:8443/team/app.git", ref="dev", commit=COMMIT)


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


@pytest.fixture
def cloned(tmp_path):
    origin = tmp_path / "origin"
    origin.mkdir()
    git("init", "--quiet", "--initial-branch=trunk", cwd=origin)
    git("commit", "--quiet", "--allow-empty", "-m", "one", cwd=origin)
    git("clone", "--quiet", str(origin), str(tmp_path / "clone"), cwd=tmp_path)
    return tmp_path / "clone", git("rev-parse", "HEAD", cwd=origin)


def test_head_commit_reads_a_packed_ref(cloned):
    checkout, commit = cloned
    git("pack-refs", "--all", cwd=checkout)
    assert head_commit(checkout / ".git") == commit


def test_head_commit_reads_a_detached_head(cloned):
    checkout, commit = cloned
    git("checkout", "--quiet", "--detach", cwd=checkout)
    assert head_commit(checkout / ".git") == commit


def test_an_empty_repository_has_nothing_to_archive(tmp_path):
    git("init", "--quiet", cwd=tmp_path)
    with pytest.raises(CloneFailed, match="The repository is empty"):
        head_commit(tmp_path / ".git")


def test_a_head_naming_a_missing_branch_says_so_not_empty(tmp_path):
    origin = tmp_path / "origin.git"
    git("init", "--quiet", "--bare", str(origin), cwd=tmp_path)
    work = tmp_path / "work"
    git("init", "--quiet", str(work), cwd=tmp_path)
    git("commit", "--quiet", "--allow-empty", "-m", "one", cwd=work)
    git("push", "--quiet", str(origin), "HEAD:refs/heads/release", cwd=work)
    git("symbolic-ref", "HEAD", "refs/heads/gone", cwd=origin)  # the default branch was deleted
    git("clone", "--quiet", f"file://{origin}", str(tmp_path / "clone"), cwd=tmp_path)

    with pytest.raises(CloneFailed) as failed:
        head_commit(tmp_path / "clone" / ".git")

    assert str(failed.value) == (
        "The repository's default branch, 'gone', does not exist; give one of its branches or tags."
    )


def test_an_odd_head_is_refused(tmp_path):
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD").write_text("ref: refs/../../etc/passwd\n")
    with pytest.raises(CloneFailed, match="unexpected HEAD"):
        head_commit(tmp_path / ".git")


def test_git_output_keeps_the_last_state_of_each_progress_meter():
    raw = b"Cloning into 'repo'...\nReceiving:  10% (1/10)\rReceiving:  50% (5/10)\r"
    assert output_lines(raw) == ["Cloning into 'repo'...", "Receiving:  50% (5/10)"]


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


def test_each_git_command_reaches_git_word_for_word_through_the_shell():
    hostile = "https://example.com/$(touch pwned);`id`'x\"&& echo no"
    commands = [["clone", "--", hostile, "/job/repo"], ["-C", "/job/repo", "read-tree", "HEAD"]]
    shell, dash_c, script = engine.git_script(commands)
    # git replaced by a function that prints each argument on a line of its own.
    fake_git = 'git() { printf "%s\\n" "$@"; echo ---; }; '

    printed = subprocess.run(
        [shell, dash_c, fake_git + script], capture_output=True, text=True, check=True
    ).stdout

    assert printed.split("---\n") == [*("\n".join(args) + "\n" for args in commands), ""]
