"""git's real output, read back as the reason a person sees: each mapping is checked against what
git (the same version as the test image's) prints for a repository that provokes it, never
against text written by hand."""

import subprocess
import uuid
from pathlib import Path

import pytest

from clones import cloning, engine, paths
from clones.models import CloneJob

from . import corpus
from .repos import GIT_ENV

LEGACY = [
    (corpus.zero_padded_modes, "zeroPaddedFilemode"),  # pallets/flask
    (corpus.bad_time_zone, "badTimezone"),  # psf/requests
    (corpus.missing_space_before_date, "missingSpaceBeforeDate"),
    (corpus.odd_author_lines, "nulInCommit"),  # the newest of its odd commits comes first
]


def clone(bare: Path, into: Path, fsck: str) -> subprocess.CompletedProcess:
    """Plain git with the service's fsck settings (what matters here), over a transport that
    runs index-pack as a fetch from a server does."""
    config = [option for item in cloning.fsck_config(fsck) for option in ("-c", item)]
    command = ["git", *config, "clone", "--no-recurse-submodules", f"file://{bare}", str(into)]
    return subprocess.run(command, env=GIT_ENV, capture_output=True, text=True)


def reason(output: str) -> str:
    return str(cloning.explained(output, CloneJob(url="https://git.example/team/app.git")))


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
        with pytest.raises(cloning.CloneFailed) as failed:
            cloning.run(job, job_dir, [clone_args], deadline=float("inf"), keep_going=lambda: None)
    finally:
        paths.remove_job_dir(job.id)

    assert "File too large" in failed.value.output  # git's words for the kernel's refusal
    assert str(failed.value) == "The repository is larger than 1 MiB, the most this service clones."
