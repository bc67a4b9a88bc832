"""Real-world histories (tests/support/corpus.py) through the whole pipeline: form, worker,
container on the test engine, archive, download.

The yardstick is plain `git clone` of the same URL on this machine, with no configuration and
no fsck: whatever it checks out, the archive must hold, byte for byte; a history it cannot take
(or one that git's fsck must refuse) fails the job with a sentence that says why.

Both servers speak protocol v2, as real ones do; where git's words differ by transport (over
git:// fetch-pack reports index-pack's death its own way), cases run on both.
"""

import hashlib
import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from clones import verifier
from clones.models import CloneJob, Status
from clones.pipeline.gitwords import shorten
from clones.safety import signing

from .support import corpus
from .support.helpers import assert_left_nothing_behind, download, submit, wait_for_job
from .support.repos import GIT_ENV, ServedRepo

Builder = Callable[[Path, str], ServedRepo]

EMPTY = "The repository is empty: it has no commit to archive."
REFUSED_DOTGIT = "The repository has an object git refuses: hasDotgit: contains '.git'."
NOT_CHECKED_OUT = "The repository's files could not be checked out: {git_error}"
CHECKOUT_FAILED = "warning: Clone succeeded, but checkout failed."
BIG_JOB_SECONDS = 300  # the 100 MiB case, on a slow CI machine


@pytest.fixture(scope="session")
def corpus_repo(served_root) -> Callable[[Builder], ServedRepo]:
    """Build each corpus repository once a session (the big one takes seconds); they are never
    written to afterwards, so tests may share them."""
    built: dict[Builder, ServedRepo] = {}

    def get(build: Builder) -> ServedRepo:
        if build not in built:
            built[build] = build(served_root, "corpus-" + build.__name__.replace("_", "-"))
        return built[build]

    return get


# -- What plain git makes of a URL, and the comparison -------------------------------------------


def plain_clone(url: str, into: Path) -> subprocess.CompletedProcess:
    """`git clone URL` as a person would run it, without the service's hardening."""
    return subprocess.run(
        ["git", "clone", "--", url, str(into)], env=GIT_ENV, capture_output=True, text=True
    )


def git_bytes(*args: str, cwd: Path) -> bytes:
    # Bytes, not text: paths that are not UTF-8 must compare as they are.
    return subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, check=True
    ).stdout


STATUS = ("status", "--porcelain", "-z")
# What git says about a clone; every answer must be the same for the archive and plain git.
GIT_QUESTIONS = [
    ("rev-parse", "--show-object-format"),
    ("rev-parse", "HEAD"),
    ("rev-parse", "--symbolic-full-name", "HEAD"),
    ("for-each-ref",),
    ("ls-files", "-s", "-z"),
    STATUS,
    ("cat-file", "--batch-all-objects", "--batch-check"),
]


def working_tree(root: Path) -> dict[bytes, tuple]:
    """Every path below `root` except .git: its type, and what matters of it (the executable
    bit and the bytes of a file, the target of a symlink, nothing of a directory)."""
    top = os.fsencode(root)
    found = {}
    for directory, subdirectories, files in os.walk(top):
        if directory == top:
            subdirectories.remove(b".git")
        for name in subdirectories + files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                what = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(mode):
                what = ("directory",)
            elif stat.S_ISREG(mode):
                what = ("file", bool(mode & stat.S_IXUSR), _sha256(path))
            else:
                what = ("other", stat.S_IFMT(mode))
            found[os.path.relpath(path, top)] = what
    return found


def _sha256(path: bytes) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def assert_archive_is_plain_git_clone(
    archived: Path, url: str, plain: Path, clean: bool = True
) -> None:
    """The downloaded checkout is what `git clone URL` gives on this machine: the same HEAD,
    refs, index, objects and status (empty, if `clean`), and the same working tree, path for
    path and byte for byte."""
    cloned = plain_clone(url, plain)
    assert cloned.returncode == 0, cloned.stderr
    answers = {}
    for question in GIT_QUESTIONS:
        answers[question] = git_bytes(*question, cwd=archived)
        assert answers[question] == git_bytes(*question, cwd=plain), question
    assert not clean or answers[STATUS] == b"", answers[STATUS]
    assert working_tree(archived) == working_tree(plain)


# -- Histories that must archive as plain git clones them ----------------------------------------


@dataclass(frozen=True)
class Faithful:
    build: Builder
    server: str = "git_http"
    check: Callable[[Path], None] = lambda checkout: None  # what the case is about, said outright
    # Why its archives' files cannot hash to the commit's tree (verifier.check_tree), if they
    # cannot: the tree is not as git writes trees today, or files were changed on the way out;
    # `files_only`: only a files archive's (git archive's export-ignore).
    differs: str = ""
    files_only: bool = False


def _files_kept_despite_export_ignore(checkout: Path) -> None:
    for path in [".github/workflows/ci.yml", "tests/test_it.py", "secret.txt"]:
        assert (checkout / path).is_file(), path
    assert (checkout / "NOTES.md").read_bytes() == b"$Format:%H$\n"  # not export-subst'ed


def _links_kept_as_links(checkout: Path) -> None:
    assert (checkout / "link-outside").readlink() == Path("/etc/passwd")
    assert (checkout / "link-dangling").is_symlink() and not (checkout / "link-dangling").exists()
    assert (checkout / "bin" / "tool").stat().st_mode & stat.S_IXUSR


def _submodule_left_empty(checkout: Path) -> None:
    assert (checkout / "vendor" / "lib").is_dir()
    assert list((checkout / "vendor" / "lib").iterdir()) == []


def _head_is_trunk(checkout: Path) -> None:
    assert (checkout / ".git" / "HEAD").read_text() == "ref: refs/heads/trunk\n"


def _big_file_in_full(checkout: Path) -> None:
    assert (checkout / "model.bin").stat().st_size == corpus.BIG_FILE_BYTES


def _crlf_as_committed_and_as_asked(checkout: Path) -> None:
    assert (checkout / "windows.txt").read_bytes() == b"committed\r\nwith crlf\r\n"
    assert (checkout / "run.bat").read_bytes() == b"@echo off\r\necho run\r\n"


FAITHFUL = {
    "zero-padded-modes-flask": Faithful(corpus.zero_padded_modes, differs="zero-padded"),
    "bad-time-zone-requests": Faithful(corpus.bad_time_zone),
    "missing-space-before-date": Faithful(corpus.missing_space_before_date, "git_daemon"),
    "mode-100664": Faithful(corpus.group_writable_modes, differs="group-writable"),
    "odd-author-lines": Faithful(corpus.odd_author_lines),
    "latin1-and-long-names": Faithful(corpus.awkward_file_names),
    "case-colliding-paths": Faithful(corpus.case_colliding_paths),
    "crlf-and-text-auto": Faithful(
        corpus.line_endings, check=_crlf_as_committed_and_as_asked, differs="eol"
    ),
    "export-ignore": Faithful(
        corpus.export_ignore,
        check=_files_kept_despite_export_ignore,
        differs="export-ignore",
        files_only=True,
    ),
    "symlinks-and-executables": Faithful(corpus.links_and_modes, check=_links_kept_as_links),
    "submodule-gitlink": Faithful(
        corpus.submodule, check=_submodule_left_empty, differs="submodule"
    ),
    "10000-tags-300-branches": Faithful(corpus.many_refs),
    "default-branch-trunk-http": Faithful(corpus.unusual_default_branch, check=_head_is_trunk),
    "default-branch-trunk-daemon": Faithful(
        corpus.unusual_default_branch, "git_daemon", check=_head_is_trunk
    ),
    "sha256-http": Faithful(corpus.sha256_objects),
    "sha256-daemon": Faithful(corpus.sha256_objects, "git_daemon"),
    "100mib-file": Faithful(corpus.big_file, "git_daemon", check=_big_file_in_full),
}


@pytest.mark.parametrize("case", FAITHFUL.values(), ids=FAITHFUL.keys())
def test_a_real_world_history_archives_as_plain_git_clones_it(
    case, request, corpus_repo, owner_client, start_worker, tmp_path
):
    repo = corpus_repo(case.build)
    url = request.getfixturevalue(case.server).url(repo.name)
    start_worker()

    job = wait_for_job(submit(owner_client, url), timeout=BIG_JOB_SECONDS)

    assert job.status == Status.DONE, job.error
    assert job.commit == repo.head
    (tmp_path / "archived").mkdir()
    archived = download(owner_client, job, tmp_path / "archived")
    assert_archive_is_plain_git_clone(archived, url, tmp_path / "plain")
    case.check(archived)
    assert_left_nothing_behind(job)
    files = wait_for_job(submit(owner_client, url, history="files"), timeout=BIG_JOB_SECONDS)
    assert files.status == Status.DONE, files.error
    (tmp_path / "files").mkdir()
    download(owner_client, files, tmp_path / "files")
    for checked, folder in [(job, "archived"), (files, "files")]:
        archive = tmp_path / folder / checked.download_filename
        if case.differs and (checked is files or not case.files_only):
            with pytest.raises(verifier.NotVerified, match=case.differs):
                assert_tree_verifies(archive, checked, repo)
        else:
            assert_tree_verifies(archive, checked, repo)
    # Passed: nothing to look at, and the big case is 600 MiB.
    for copy in ["archived", "plain", "files"]:
        shutil.rmtree(tmp_path / copy)


def assert_tree_verifies(archive: Path, job: CloneJob, repo: ServedRepo) -> None:
    """The archive's files hash to the commit's tree, which its signed provenance records."""
    statement = verifier.verified_statement(
        job.snapshot.provenance, verifier.load_keys(signing.published())
    )
    tree = verifier.check_tree(archive, statement)
    assert tree == git_bytes("rev-parse", f"{job.commit}^{{tree}}", cwd=repo.bare).decode().strip()


# -- Histories a job must refuse, saying why -----------------------------------------------------


@dataclass(frozen=True)
class Refused:
    build: Builder
    plain_git_says: str  # a line of plain `git clone`'s stderr: what git itself makes of it
    error: str  # the job's error; {git_error} is plain git's first "error: " line, shortened
    server: str = "git_http"


def _first_error(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    return shorten(errors[0].removeprefix("error: ")) if errors else ""


REFUSED = {
    # Plain git clones it "successfully" into an empty directory: there is nothing to archive.
    "empty": Refused(
        corpus.empty, "warning: You appear to have cloned an empty repository.", EMPTY
    ),
    # Plain git fetches the history and checks nothing out; the job says why, not "empty".
    "default-branch-deleted": Refused(
        corpus.default_branch_deleted,
        "warning: remote HEAD refers to nonexistent ref, unable to checkout",
        "The repository's default branch, 'main', does not exist; give one of its branches or "
        "tags.",
    ),
    # Plain git (no fsck) fetches it, then refuses to check the path out; the service's fsck
    # refuses the tree as it arrives. Over git://, fetch-pack words index-pack's death its own
    # way ("invalid index-pack output"), so both servers.
    "dotgit-in-tree-http": Refused(corpus.dotgit_in_tree, CHECKOUT_FAILED, REFUSED_DOTGIT),
    "dotgit-in-tree-daemon": Refused(
        corpus.dotgit_in_tree, CHECKOUT_FAILED, REFUSED_DOTGIT, "git_daemon"
    ),
    # The history is sound; the file system cannot hold the name, for plain git either. git's
    # line is cut in the middle to 300 characters, so that its reason stays.
    "name-too-long": Refused(corpus.name_too_long, CHECKOUT_FAILED, NOT_CHECKED_OUT),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_a_history_git_cannot_take_fails_saying_why(
    case, request, corpus_repo, owner_client, start_worker, tmp_path
):
    url = request.getfixturevalue(case.server).url(corpus_repo(case.build).name)
    plain = plain_clone(url, tmp_path / "plain")
    assert case.plain_git_says in plain.stderr.splitlines(), plain.stderr
    start_worker()

    job = wait_for_job(submit(owner_client, url))

    assert job.status == Status.FAILED
    assert job.error == case.error.format(git_error=_first_error(plain.stderr))
    assert_left_nothing_behind(job)
