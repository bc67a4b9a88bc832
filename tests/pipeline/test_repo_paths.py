"""Archives limited to some of a repository's paths, for real: files-only archives of just them
and full or shallow clones with a sparse checkout of them, cloned on the test engine from git
servers on 127.0.0.1 (the worker's task runs in this process)."""

import subprocess
from pathlib import Path

import pytest

from clones.models import History, Status
from clones.web.forms import CloneRequestForm

from ..support.helpers import assert_left_nothing_behind, run_job, unpacked
from ..support.repos import git

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

# A name with a wildcard, and one it would match as a pattern: only the first is asked for.
FILES = {"we*ird": "asked for\n", "weXird": "not asked for\n"}
PATHS = ["bin/run.sh", "docs", "we*ird"]
# What the checkout holds of the repository at main: the paths, and nothing else.
EXPECTED = {"bin/run.sh", "docs/guide.txt", "we*ird"}


def files_under(top: Path) -> set[str]:
    return {
        str(path.relative_to(top))
        for path in top.rglob("*")
        if not path.is_dir() and ".git" not in path.relative_to(top).parts
    }


@pytest.mark.parametrize("mirror", [False, True], ids=["from the server", "from the mirror"])
def test_a_files_archive_holds_just_the_paths(mirror, owner, new_repo, git_daemon, tmp_path):
    repo = new_repo(files=FILES)
    url = git_daemon.url(repo.name)
    if mirror:  # a full job makes the repository's mirror, which files jobs then use
        assert run_job(owner, url).status == Status.DONE

    job = run_job(owner, url, history=History.FILES, paths=PATHS)

    assert job.status == Status.DONE, job.error
    assert files_under(unpacked(job, tmp_path)) == EXPECTED
    assert_left_nothing_behind(job)


@pytest.mark.parametrize(
    "history, ref",
    [
        (History.FULL, "main"),
        (History.FULL, "commit"),  # every branch, HEAD detached
        (History.SHALLOW, "main"),
        (History.SHALLOW, "commit"),  # fetched by name
    ],
)
def test_a_clone_checks_out_just_the_paths_and_keeps_the_whole_history(
    history, ref, owner, new_repo, git_http, tmp_path
):
    repo = new_repo(files=FILES)
    asked = repo.head if ref == "commit" else ref

    depth = 1 if history == History.SHALLOW else None  # as the form fills it in
    job = run_job(owner, git_http.url(repo.name), asked, history=history, depth=depth, paths=PATHS)

    assert job.status == Status.DONE, job.error
    checkout = unpacked(job, tmp_path)
    assert files_under(checkout) == EXPECTED
    assert git("rev-parse", "HEAD", cwd=checkout) == repo.head
    # git sees a clean sparse checkout: nothing deleted, nothing changed.
    assert git("status", "--porcelain", cwd=checkout) == ""
    assert git("sparse-checkout", "list", cwd=checkout).splitlines() == [
        "/bin/run.sh",
        "/docs",
        "/we\\*ird",
    ]
    # Every file is in the history, whether checked out or not.
    assert git("show", "HEAD:README.md", cwd=checkout).startswith("# ")
    assert_left_nothing_behind(job)


def test_a_path_the_commit_does_not_have_fails_the_job_naming_it(owner, new_repo, git_daemon):
    repo = new_repo()
    url = git_daemon.url(repo.name)

    for history in (History.FILES, History.FULL):
        job = run_job(owner, url, history=history, paths=["docs", "no/such thing"])

        assert job.status == Status.FAILED
        assert job.error == (
            f"The repository has no file or folder 'no/such thing' at commit {repo.head}."
        )
        assert_left_nothing_behind(job)


def test_other_paths_make_another_snapshot_and_another_spelling_the_same(
    owner, new_repo, git_daemon
):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    whole = run_job(owner, url, history=History.FILES)
    docs = run_job(owner, url, history=History.FILES, paths=["docs"])
    form = CloneRequestForm({"url": url, "history": History.FILES, "paths": "./docs/\n"})
    assert form.is_valid(), form.errors

    spelled = run_job(owner, **form.cleaned_data)

    assert whole.status == docs.status == spelled.status == Status.DONE
    assert docs.snapshot_id != whole.snapshot_id
    assert spelled.snapshot_id == docs.snapshot_id
    assert whole.snapshot.paths == [] and docs.snapshot.paths == ["docs"]


def test_the_archive_opens_with_git_as_a_sparse_checkout_git_can_widen(
    owner, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    job = run_job(owner, git_daemon.url(repo.name), paths=["docs"])
    assert job.status == Status.DONE, job.error
    checkout = unpacked(job, tmp_path)

    subprocess.run(["git", "sparse-checkout", "disable"], cwd=checkout, check=True)

    assert {"README.md", "docs/guide.txt", "bin/run.sh"} <= files_under(checkout)
    assert git("status", "--porcelain", cwd=checkout) == ""
