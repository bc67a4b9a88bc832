"""Snapshots for real: the form, a worker, the test engine and git servers on 127.0.0.1. One
archive per commit and options, shared; reproducible; every history and format opens with the
standard tools."""

import hashlib
import subprocess
import threading
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.test import Client
from django.utils import timezone

from clones import jobs, tasks
from clones.models import CloneJob, Snapshot, SnapshotState, Status
from clones.pipeline import engine
from clones.web import apitokens

from ..support.gitservers import GitHTTPServer
from ..support.helpers import assert_is_clean_checkout, download, submit, wait_for_job, wait_until
from ..support.repos import git

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

FORMATS = ["tar", "tar.gz", "zip"]


def clone_containers_since(since: datetime, jobs: list[CloneJob]) -> int:
    """Clone containers this installation had the test engine create for `jobs` since `since`
    (a job of an earlier test, on its way out when it ended, may still make one)."""
    label = f"{engine.INSTALLATION_LABEL}={engine.installation()}"
    ids = {str(job.id) for job in jobs}
    with engine.connected() as client:
        events = client.events(
            since=since,
            until=datetime.now(UTC) + timedelta(seconds=1),
            filters={"type": "container", "event": "create", "label": label},
            decode=True,
        )
        return sum(1 for event in events if event["Actor"]["Attributes"][engine.JOB_LABEL] in ids)


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
    assert clone_containers_since(since, together) == 1

    since = datetime.now(UTC)
    repeat = wait_for_job(submit(owner_client, url + "/"))  # the same origin in .git/config

    assert repeat.status == Status.DONE
    assert repeat.snapshot_id == together[0].snapshot_id
    assert clone_containers_since(since, [repeat]) == 0


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


@pytest.mark.parametrize("history", ["full", "shallow"])
def test_a_checkouts_origin_is_the_repository_not_one_spelling_of_it_or_its_address(
    history, owner_client, start_worker, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    # git:// is pinned to the address the host name resolved to, which git would record.
    spelled = git_daemon.url(repo.name).replace("127.0.0.1", "LocalHost")
    start_worker()

    first = wait_for_job(submit(owner_client, spelled, history=history))
    second = wait_for_job(submit(owner_client, spelled.lower(), history=history))

    assert first.status == second.status == Status.DONE, first.error or second.error
    assert second.snapshot_id == first.snapshot_id  # one repository, one archive
    archive = tmp_path / first.download_filename
    archive.write_bytes(archive_bytes(first))
    unpack(archive, tmp_path)
    origin = git("remote", "get-url", "origin", cwd=tmp_path / first.top_level)
    assert origin == git_daemon.url(repo.name).replace("127.0.0.1", "localhost")


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


# --- The ref: keyed where the archive names it ---------------------------------------------------

TOKEN = "s3cret-fetch-token"


@pytest.fixture
def held(served_root):
    """A git server whose fetches of objects wait until `release` is set, so that jobs can be
    caught building. Anyone may list its refs; fetching objects needs the token TOKEN."""
    release = threading.Event()
    server = GitHTTPServer(
        served_root, auth=f"x-access-token:{TOKEN}", public_refs=True, hold_fetches=release
    )
    server.release = release
    yield server
    release.set()
    server.stop()


@dataclass
class User:
    """Someone who submits through the form and reads their job's page and API answer."""

    name: str
    client: Client
    api_token: str

    def submit(self, url: str, ref: str, token: str = TOKEN, **options) -> CloneJob:
        return submit(self.client, url, ref, token=token, **options)

    def sees(self, job: CloneJob) -> str:
        """All the owner is shown of the job: its page and its API answer."""
        page = self.client.get(job.get_absolute_url())
        api = self.client.get(
            f"/api/clones/{job.id}", headers={"Authorization": f"Bearer {self.api_token}"}
        )
        assert (page.status_code, api.status_code) == (200, 200)
        return page.content.decode() + api.content.decode()


@pytest.fixture
def users(django_user_model) -> list[User]:
    """Three users, with names no other's page holds."""

    def make(name: str) -> User:
        user = django_user_model.objects.create_user(name, password=f"pw-{name}-123")
        client = Client()
        client.force_login(user)
        return User(name, client, apitokens.make(user, "tests")[1])

    return [make(name) for name in ("ulrike-feature", "victor-default", "wanda-main")]


def building_or_following(job: CloneJob) -> CloneJob:
    """Once the job has taken its snapshot: it builds it, or waits for another's clone."""

    def taken() -> bool:
        job.refresh_from_db()
        building = job.status == Status.RUNNING and job.snapshot_id is not None
        return building or (job.status == Status.QUEUED and job.phase == jobs.FOLLOWING)

    wait_until(taken, what=f"job {job.id} building or following")
    return job


def assert_told_nothing_of(follower: CloneJob, user: User, builder: CloneJob, other: User):
    """A job waiting for another's clone shows nothing of it: not its id, owner, ref or words."""
    assert (follower.status, follower.phase) == (Status.QUEUED, jobs.FOLLOWING)
    seen = user.sees(follower)
    for detail in [str(builder.id), other.name, *filter(None, [builder.ref])]:
        assert detail not in seen


def heads_of(job: CloneJob, user: User, into: Path) -> dict[str, str]:
    """What the archive says of refs: a bundle's heads; a checkout's HEAD (the ref it names)
    and its branches."""
    into.mkdir()
    if job.history == "bundle":
        bundle = into / job.download_filename
        bundle.write_bytes(archive_bytes(job))
        git("init", "--quiet", "verifier", cwd=into)  # git lists a bundle in a repository
        listed = git("bundle", "list-heads", str(bundle), cwd=into / "verifier")
    else:
        checkout = download(user.client, job, into)
        head = git("symbolic-ref", "HEAD", cwd=checkout)
        branches = git(
            "for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", cwd=checkout
        )
        listed = "\n".join([f"{head} HEAD", *branches.splitlines()])
    return {name: value for value, name in (line.split(" ", 1) for line in listed.splitlines())}


@pytest.mark.parametrize("history", ["full", "files", "shallow", "bundle"])
def test_users_asking_for_one_commit_through_other_refs_each_get_what_their_ref_gives(
    history, users, start_worker, new_repo, held, tmp_path
):
    """feature-x and main name one commit. Whoever asks through feature-x, main or the default
    branch (main) gets the archive their ref gives alone, shares it only where the bytes are the
    same, and while waiting for another's clone is told nothing of it."""
    repo = new_repo()
    commit = repo.head
    git("branch", "feature-x", commit, cwd=repo.bare)
    url = held.url(repo.name)
    feature_user, default_user, main_user = users
    start_worker(env={"CLONES_WORKERS": "3"})  # up to three clones held at once

    feature = building_or_following(feature_user.submit(url, "feature-x", history=history))
    default = building_or_following(default_user.submit(url, "", history=history))
    main = building_or_following(main_user.submit(url, "main", history=history))

    # `files` holds no ref: all wait for the first. The others wait for a clone of main.
    builder, builder_user = (
        (feature, feature_user) if history == "files" else (default, default_user)
    )
    assert builder.status == Status.RUNNING
    for job, user in [(default, default_user), (main, main_user)]:
        if job != builder:
            assert_told_nothing_of(job, user, builder, builder_user)
            assert_told_nothing_of(job, user, feature, feature_user)
    held.release.set()
    done = [wait_for_job(job) for job in (feature, default, main)]

    assert [job.status for job in done] == [Status.DONE] * 3, [job.error for job in done]
    assert {job.commit for job in done} == {commit}
    assert done[1].snapshot_id == done[2].snapshot_id  # the default branch is main
    assert (done[0].snapshot_id == done[1].snapshot_id) is (history == "files")
    if history == "files":
        assert len({job.archive_sha256 for job in done}) == 1
        return
    for job, user, branch in zip(done, users, ["feature-x", "main", "main"], strict=True):
        head = commit if history == "bundle" else f"refs/heads/{branch}"
        # Its one branch: a full clone has the others as origin's, whichever ref it was asked.
        expected = {"HEAD": head, f"refs/heads/{branch}": commit}
        assert heads_of(job, user, tmp_path / user.name) == expected


def test_a_builder_failing_with_its_own_token_sends_its_follower_to_clone_with_its_own(
    users, start_worker, new_repo, held, tmp_path
):
    repo = new_repo()
    git("branch", "feature-x", repo.head, cwd=repo.bare)
    url = held.url(repo.name)
    builder_user, follower_user, _ = users
    start_worker()

    builder = building_or_following(
        builder_user.submit(url, "feature-x", token="not-the-token", history="files")
    )
    follower = building_or_following(follower_user.submit(url, "main", history="files"))
    assert_told_nothing_of(follower, follower_user, builder, builder_user)
    held.release.set()
    builder, follower = wait_for_job(builder), wait_for_job(follower)

    assert builder.status == Status.FAILED
    assert builder.error == (
        "This repository needs authentication; the access token given was not accepted."
    )
    # Back in the queue, it looked its ref up and cloned with its own token.
    assert follower.status == Status.DONE, follower.error
    assert follower.attempts == 1 and follower.snapshot_id == builder.snapshot_id
    expected = subprocess.run(
        ["git", "archive", "--format=tar", f"--prefix={follower.top_level}/", repo.head],
        cwd=repo.bare,
        capture_output=True,
        check=True,
    ).stdout
    assert archive_bytes(follower) == expected
    seen = follower_user.sees(follower)
    for detail in [str(builder.id), builder_user.name, "feature-x", "authentication"]:
        assert detail not in seen


def test_a_builder_failing_for_what_the_repository_holds_fails_its_follower_in_neutral_words(
    users, start_worker, new_repo, held
):
    repo = new_repo()
    git("branch", "feature-x", repo.head, cwd=repo.bare)
    url = held.url(repo.name)
    builder_user, follower_user, _ = users
    start_worker(env={"CLONES_MAX_REPO_FILES": "5"})  # a bare clone has more

    builder = building_or_following(builder_user.submit(url, "feature-x", history="files"))
    follower = building_or_following(follower_user.submit(url, "main", history="files"))
    assert_told_nothing_of(follower, follower_user, builder, builder_user)
    held.release.set()
    builder, follower = wait_for_job(builder), wait_for_job(follower)

    too_many = "The repository has more than 5 files, the most this service clones."
    assert (builder.status, builder.error) == (Status.FAILED, too_many)
    assert (follower.status, follower.error) == (Status.FAILED, too_many)
    assert follower.git_output == ""
    seen = follower_user.sees(follower)
    for detail in [str(builder.id), builder_user.name, "feature-x"]:
        assert detail not in seen


def test_a_full_clone_of_any_tag_of_a_commit_is_one_snapshot(
    owner_client, start_worker, new_repo, git_http, tmp_path
):
    """A full clone of a tag detaches HEAD at its commit and names the tag nowhere else: every
    tag of the commit gives the same bytes, and shares them."""
    repo = new_repo()
    git("tag", "-a", "v1.0-final", "-m", "the same release", repo.refs["v1.0"], cwd=repo.bare)
    url = git_http.url(repo.name)
    start_worker()

    first = wait_for_job(submit(owner_client, url, "v1.0"))
    second = wait_for_job(submit(owner_client, url, "v1.0-final"))

    assert (first.status, second.status) == (Status.DONE, Status.DONE), second.error
    assert second.snapshot_id == first.snapshot_id
    assert Snapshot.objects.get(pk=first.snapshot_id).ref == "refs/tags/*"
    checkout = download(owner_client, second, tmp_path)
    assert_is_clean_checkout(checkout, repo.refs["v1.0"])  # HEAD detached at the commit
    assert git("for-each-ref", "refs/heads", cwd=checkout) == ""
    assert "v1.0-final" in git("tag", "--list", cwd=checkout)
