"""Snapshots for real: the form, a worker, the test engine and git servers on 127.0.0.1. One
archive per commit and options, shared; reproducible; every history and format opens with the
standard tools."""

import hashlib
import subprocess
import zipfile
from datetime import UTC, datetime, timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from clones import engine, jobs, tasks
from clones.models import CloneJob, Snapshot, SnapshotState, Status

from .helpers import assert_is_clean_checkout, download, submit, wait_for_job
from .repos import git

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

FORMATS = ["tar", "tar.gz", "zip"]


def clone_containers_since(since: datetime) -> int:
    """Clone containers this installation had the test engine create since `since`."""
    label = f"{engine.INSTALLATION_LABEL}={engine.installation()}"
    with engine.connected() as client:
        events = client.events(
            since=since,
            until=datetime.now(UTC) + timedelta(seconds=1),
            filters={"type": "container", "event": "create", "label": label},
            decode=True,
        )
        return sum(1 for _ in events)


def archive_bytes(job: CloneJob) -> bytes:
    with default_storage.open(job.archive.name) as file:
        return file.read()


def expire_now(job: CloneJob) -> None:
    """As the expiry sweep would once its time has come."""
    CloneJob.objects.filter(pk=job.pk).update(expires_at=timezone.now())
    tasks.expire_archives()


def unpack(archive, into) -> None:
    """With the standard tools, which must not complain."""
    if archive.name.endswith(".zip"):
        command = ["unzip", "-q", str(archive), "-d", str(into)]
    else:
        command = ["tar", "-xf", str(archive), "-C", str(into)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    assert result.stderr == ""


def test_identical_submissions_at_once_start_one_clone_and_a_repeat_none(
    owner_client, start_worker, new_repo, git_http
):
    repo = new_repo()
    url = git_http.url(repo.name)
    start_worker()  # two worker processes: both take jobs at once
    since = datetime.now(UTC)

    together = [wait_for_job(submit(owner_client, url)) for _ in range(5)]

    assert [job.status for job in together] == [Status.DONE] * 5, [j.error for j in together]
    assert len({job.snapshot_id for job in together}) == 1
    assert len({job.archive_sha256 for job in together}) == 1
    assert clone_containers_since(since) == 1

    since = datetime.now(UTC)
    repeat = wait_for_job(submit(owner_client, url.removesuffix(".git") + "/"))  # same repository

    assert repeat.status == Status.DONE
    assert repeat.snapshot_id == together[0].snapshot_id
    assert clone_containers_since(since) == 0


def test_a_shared_file_is_deleted_only_when_its_last_job_expires(
    owner_client, start_worker, new_repo, git_daemon
):
    repo = new_repo()
    start_worker()
    first = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))
    second = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))
    assert second.snapshot_id == first.snapshot_id
    name = first.archive.name

    expire_now(first)

    assert default_storage.exists(name)
    assert CloneJob.objects.get(pk=first.pk).status == Status.EXPIRED
    assert Snapshot.objects.get(pk=first.snapshot_id).state == SnapshotState.READY

    jobs.expire(CloneJob.objects.get(pk=second.pk))  # the admin's "expire now"
    tasks.expire_archives()

    assert not default_storage.exists(name)
    assert Snapshot.objects.get(pk=first.snapshot_id).state == SnapshotState.DELETED


@pytest.mark.parametrize("history", ["full", "files"])
@pytest.mark.parametrize("archive_format", FORMATS)
def test_two_jobs_for_one_commit_made_apart_give_byte_identical_archives(
    history, archive_format, owner_client, start_worker, new_repo, git_http
):
    repo = new_repo()
    url = git_http.url(repo.name)
    options = {"history": history, "archive_format": archive_format}
    start_worker()
    first = wait_for_job(submit(owner_client, url, **options))
    assert first.status == Status.DONE, first.error
    first_bytes = archive_bytes(first)
    expire_now(first)  # the snapshot is deleted: the next job clones afresh

    second = wait_for_job(submit(owner_client, url, **options))

    assert second.status == Status.DONE, second.error
    assert second.snapshot_id == first.snapshot_id  # the same key, built again
    assert archive_bytes(second) == first_bytes
    assert second.archive_sha256 == first.archive_sha256
    assert second.download_filename.endswith(f"-{repo.head[:7]}.{archive_format}")


@pytest.mark.parametrize("archive_format", FORMATS)
def test_a_full_clone_of_a_commit_no_branch_points_at_opens_with_the_standard_tools(
    archive_format, owner_client, start_worker, new_repo, git_http, tmp_path
):
    repo = new_repo()
    commit = repo.refs["v1.0"]  # the first commit: no branch tip
    start_worker()

    job = wait_for_job(
        submit(owner_client, git_http.url(repo.name), commit, archive_format=archive_format)
    )

    assert job.status == Status.DONE, job.error
    assert job.commit == commit
    archive = tmp_path / job.download_filename
    archive.write_bytes(archive_bytes(job))
    unpack(archive, tmp_path)
    checkout = tmp_path / job.top_level
    assert_is_clean_checkout(checkout, commit)
    assert "origin/feature" in git("branch", "--remotes", cwd=checkout)  # a full clone


@pytest.mark.parametrize("archive_format", FORMATS)
def test_files_only_is_what_git_archive_makes_of_that_commit(
    archive_format, owner_client, start_worker, new_repo, git_http, tmp_path
):
    repo = new_repo()
    start_worker()

    job = wait_for_job(
        submit(
            owner_client,
            git_http.url(repo.name),
            "feature",
            history="files",
            archive_format=archive_format,
        )
    )

    assert job.status == Status.DONE, job.error
    expected = subprocess.run(
        ["git", "archive", f"--format={archive_format}", f"--prefix={job.top_level}/", job.commit],
        cwd=repo.bare,
        capture_output=True,
        check=True,
    ).stdout
    assert hashlib.sha256(expected).hexdigest() == job.archive_sha256
    archive = tmp_path / job.download_filename
    archive.write_bytes(archive_bytes(job))
    unpack(archive, tmp_path)
    files = tmp_path / job.top_level
    assert (files / "feature.txt").read_text() == "only on the feature branch\n"
    assert not (files / ".git").exists()
    if archive_format == "zip":
        assert zipfile.ZipFile(archive).testzip() is None


def test_a_shallow_clone_keeps_the_commits_asked_for(
    owner_client, start_worker, new_repo, git_http, tmp_path
):
    repo = new_repo()
    start_worker()

    job = wait_for_job(
        submit(owner_client, git_http.url(repo.name), "feature", history="shallow", depth=2)
    )

    assert job.status == Status.DONE, job.error
    checkout = download(owner_client, job, tmp_path)
    assert_is_clean_checkout(checkout, repo.refs["feature"])
    assert git("rev-list", "--count", "HEAD", cwd=checkout) == "2"
    assert (checkout / ".git" / "shallow").is_file()


@pytest.mark.parametrize("ref", ["", "v1.0"])
def test_a_bundle_verifies_and_clones(
    ref, owner_client, start_worker, new_repo, git_http, tmp_path
):
    repo = new_repo()
    start_worker()

    job = wait_for_job(submit(owner_client, git_http.url(repo.name), ref, history="bundle"))

    assert job.status == Status.DONE, job.error
    assert job.download_filename.endswith(".bundle")
    bundle = tmp_path / job.download_filename
    bundle.write_bytes(archive_bytes(job))
    git("init", "--quiet", "verifier", cwd=tmp_path)  # git verifies a bundle in a repository
    git("bundle", "verify", str(bundle), cwd=tmp_path / "verifier")
    git("clone", "--quiet", str(bundle), "cloned", cwd=tmp_path)
    assert git("rev-parse", "HEAD", cwd=tmp_path / "cloned") == repo.refs[ref or "main"]
    assert git("status", "--porcelain", cwd=tmp_path / "cloned") == ""
