"""The incremental mirror cache for real: jobs built from one bare mirror per repository on the
test engine, fetched from git servers on 127.0.0.1. The worker's task runs in this process
(tasks.run_clone_job), so the Mirror rows and the disk can be looked at between jobs."""

import hashlib
import os
import signal
import subprocess
import tarfile
import threading
import time
from pathlib import Path

import pytest
from django.utils import timezone

from clones import jobs, tasks
from clones.models import CloneJob, History, Mirror, MirrorState, Status, Watch
from clones.pipeline import engine, mirrors, refs
from clones.safety import urlpolicy
from clones.web import figures
from clones.web.forms import CloneRequestForm

from ..support.gitservers import GitHTTPServer
from ..support.helpers import assert_is_clean_checkout, assert_left_nothing_behind
from ..support.repos import ServedRepo, git

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

TOKEN = "mirror-s3cret"


def run(owner, url: str, ref: str = "", token: str = "", **options) -> CloneJob:
    job = jobs.submit(owner, url, ref, token, **options)
    tasks.run_clone_job(str(job.id))
    job.refresh_from_db()
    return job


def mirror_of(url: str) -> Mirror:
    return Mirror.objects.get(key=mirrors.key(url))


def mirror_dir(url: str) -> Path:
    return mirrors.root() / mirrors.key(url)


def push_commits(repo: ServedRepo, count: int, branch: str = "main") -> str:
    """`count` new commits on `branch` upstream; the new tip."""
    work = repo.bare.parent.parent / "work" / repo.name.removesuffix(".git")
    git("checkout", "--quiet", branch, cwd=work)
    for number in range(count):
        (work / "news.txt").write_text(f"news {number} {time.time_ns()}\n")
        git("add", ".", cwd=work)
        git("commit", "--quiet", "-m", f"news {number}", cwd=work)
    git("push", "--quiet", "--force", str(repo.bare), f"{branch}:{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def extract(job: CloneJob, into: Path) -> Path:
    with tarfile.open(job.archive.path) as tar:
        tar.extractall(into, filter="tar")
    return into / job.top_level


def server_refs(repo: ServedRepo) -> dict[str, str]:
    listed = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=repo.bare)
    return dict(line.split(" ") for line in listed.splitlines())


def test_a_second_snapshot_after_new_commits_fetches_only_them_into_the_same_mirror(
    owner, new_repo, git_http, tmp_path
):
    repo = new_repo()
    url = git_http.url(repo.name)
    first = run(owner, url)
    assert first.status == Status.DONE, first.error
    made = mirror_of(url)
    assert (made.state, made.hits, made.misses) == (MirrorState.READY, 0, 1)
    packs = {pack.name: pack.stat().st_ino for pack in mirror_dir(url).glob("objects/pack/*.pack")}

    new_head = push_commits(repo, 3)
    second = run(owner, url)

    assert second.status == Status.DONE, second.error
    assert second.commit == new_head
    reused = mirror_of(url)
    assert (reused.hits, reused.misses, reused.created_at) == (1, 1, made.created_at)
    # The first clone's pack is untouched: only the new commits' objects came.
    for name, inode in packs.items():
        assert (mirror_dir(url) / "objects" / "pack" / name).stat().st_ino == inode
    checkout = extract(second, tmp_path)
    assert_is_clean_checkout(checkout, new_head)
    assert git("config", "remote.origin.url", cwd=checkout) == urlpolicy.origin_url(url)
    # The branches and tags a clone from the server has, and nothing of the mirror's own.
    assert git("branch", "--list", cwd=checkout) == "* main"
    remotes = git("branch", "--remotes", cwd=checkout).split("\n")
    assert [name.strip() for name in remotes] == [
        "origin/HEAD -> origin/main",
        "origin/feature",
        "origin/main",
    ]
    assert git("tag", cwd=checkout) == "v1.0"
    assert reused.size_bytes > 0
    assert_left_nothing_behind(second)


def test_the_mirrors_head_follows_the_servers_default_branch(owner, new_repo, git_daemon, tmp_path):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    assert run(owner, url).status == Status.DONE
    git("symbolic-ref", "HEAD", "refs/heads/feature", cwd=repo.bare)

    job = run(owner, url)

    assert job.status == Status.DONE, job.error
    assert job.commit == repo.refs["feature"]
    assert (mirror_dir(url) / "HEAD").read_text() == "ref: refs/heads/feature\n"
    checkout = extract(job, tmp_path)
    assert git("symbolic-ref", "HEAD", cwd=checkout) == "refs/heads/feature"
    assert git("symbolic-ref", "refs/remotes/origin/HEAD", cwd=checkout) == (
        "refs/remotes/origin/feature"
    )


def test_a_mirror_corrupted_on_disk_is_detected_discarded_and_rebuilt(
    owner, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    assert run(owner, url).status == Status.DONE
    (pack,) = mirror_dir(url).glob("objects/pack/*.pack")
    damaged = bytearray(pack.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    pack.chmod(0o644)
    pack.write_bytes(damaged)
    with pytest.raises(mirrors.Corrupt, match="does not match its checksum"):
        mirrors.verify(mirror_dir(url))

    job = run(owner, url, "feature")

    assert job.status == Status.DONE, job.error
    rebuilt = mirror_of(url)
    assert (rebuilt.state, rebuilt.hits, rebuilt.misses) == (MirrorState.READY, 0, 2)
    mirrors.verify(mirror_dir(url))
    assert_is_clean_checkout(extract(job, tmp_path), repo.refs["feature"])


def test_a_damaged_loose_object_is_found(tmp_path):
    git("init", "--quiet", "--bare", str(tmp_path), cwd=tmp_path)
    name = subprocess.run(
        ["git", "-C", str(tmp_path), "hash-object", "-w", "--stdin"],
        input=b"hello\n", capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    mirrors.verify(tmp_path)
    loose = tmp_path / "objects" / name[:2] / name[2:]
    loose.chmod(0o644)
    loose.write_bytes(loose.read_bytes()[:-3])

    with pytest.raises(mirrors.Corrupt, match="does not inflate"):
        mirrors.verify(tmp_path)


def test_a_worker_killed_mid_fetch_leaves_a_mirror_that_is_rebuilt_not_served(
    owner, new_repo, served_root, start_worker, tmp_path
):
    release = threading.Event()
    server = GitHTTPServer(served_root, hold_fetches=release)
    repo = new_repo()
    url = server.url(repo.name)
    release.set()
    assert run(owner, url).status == Status.DONE
    new_head = push_commits(repo, 2)
    release.clear()  # the next fetch hangs, half-way through the mirror's update
    worker = start_worker()
    doomed = jobs.submit(owner, url, "feature")
    _wait_for(lambda: (mirrors.root() / f"{mirrors.key(url)}.fetching").exists(), "a fetch")

    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait()
    release.set()
    job = run(owner, url)

    assert job.status == Status.DONE, job.error
    assert job.commit == new_head
    rebuilt = mirror_of(url)
    assert (rebuilt.state, rebuilt.misses) == (MirrorState.READY, 2)  # not the one half-fetched
    assert not (mirrors.root() / f"{mirrors.key(url)}.fetching").exists()
    assert engine.remove_job_containers(str(doomed.id)) == 0  # its container went too
    assert_is_clean_checkout(extract(job, tmp_path), new_head)
    server.stop()


def _wait_for(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.1)


def test_the_least_recently_used_mirrors_are_evicted_past_the_limit(
    owner, new_repo, git_daemon, settings
):
    older, newer = new_repo(), new_repo()
    assert run(owner, git_daemon.url(older.name)).status == Status.DONE
    settings.CLONES_MIRROR_MAX_BYTES = mirror_of(git_daemon.url(older.name)).size_bytes + 1

    assert run(owner, git_daemon.url(newer.name)).status == Status.DONE

    assert mirror_of(git_daemon.url(older.name)).state == MirrorState.DISCARDED
    assert not mirror_dir(git_daemon.url(older.name)).exists()
    assert mirror_of(git_daemon.url(newer.name)).state == MirrorState.READY
    cache = figures.mirror_cache()  # the dashboard's figures
    assert (cache.mirrors, cache.size_bytes, cache.hits, cache.misses) == (
        1,
        mirror_of(git_daemon.url(newer.name)).size_bytes,
        0,
        2,
    )


def test_the_sweep_removes_mirror_directories_without_a_ready_row(owner, new_repo, git_daemon):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    assert run(owner, url).status == Status.DONE
    Mirror.objects.filter(key=mirrors.key(url)).delete()

    assert mirrors.reap() >= 1  # other tests' mirrors, their rows flushed, go too
    assert not mirror_dir(url).exists()


@pytest.fixture
def many_refs(new_repo) -> ServedRepo:
    """A repository with refs beyond branches and tags, as forges keep pull requests."""
    repo = new_repo()
    git("update-ref", "refs/pull/7/head", repo.refs["feature"], cwd=repo.bare)
    git("update-ref", "refs/notes/commits", repo.refs["v1.0"], cwd=repo.bare)
    return repo


def test_a_mirror_archive_is_the_bare_repository_with_every_ref(
    owner, many_refs, git_http, tmp_path
):
    url = git_http.url(many_refs.name)

    job = run(owner, url, history=History.MIRROR, archive_format="tar.gz")

    assert job.status == Status.DONE, job.error
    assert job.commit == many_refs.head
    expected = server_refs(many_refs)
    assert job.refs_digest == refs.digest(expected)
    assert job.snapshot.ref == f"all refs sha256:{job.refs_digest}"
    bare = extract(job, tmp_path)
    listed = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=bare)
    assert dict(line.split(" ") for line in listed.splitlines()) == expected
    assert git("config", "remote.origin.url", cwd=bare) == urlpolicy.origin_url(url)
    assert git("config", "remote.origin.mirror", cwd=bare) == "true"
    assert git("symbolic-ref", "HEAD", cwd=bare) == "refs/heads/main"
    git("fsck", "--strict", cwd=bare)
    with tarfile.open(job.archive.path) as tar:  # dated the commit's time, as checkouts are
        times = {member.mtime for member in tar.getmembers()}
    assert times == {int(git("log", "-1", "--format=%ct", cwd=many_refs.bare))}


def test_a_mirror_bundle_holds_every_ref_and_clones(owner, many_refs, git_daemon, tmp_path):
    url = git_daemon.url(many_refs.name)

    job = run(owner, url, history=History.MIRROR, archive_format="bundle")

    assert job.status == Status.DONE, job.error
    clone = tmp_path / "from-bundle.git"
    git("clone", "--quiet", "--mirror", job.archive.path, str(clone), cwd=tmp_path)
    listed = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=clone)
    assert dict(line.split(" ") for line in listed.splitlines()) == server_refs(many_refs)
    assert git("rev-parse", "HEAD", cwd=clone) == many_refs.head


def test_a_mirror_snapshot_is_shared_while_no_ref_moves_and_made_again_when_one_does(
    owner, many_refs, git_daemon
):
    url = git_daemon.url(many_refs.name)
    first = run(owner, url, history=History.MIRROR)
    same = run(owner, url, history=History.MIRROR)
    git("update-ref", "refs/pull/8/head", many_refs.refs["v1.0"], cwd=many_refs.bare)
    moved = run(owner, url, history=History.MIRROR)

    assert same.snapshot_id == first.snapshot_id
    assert moved.status == Status.DONE, moved.error
    assert moved.snapshot_id != first.snapshot_id
    assert moved.commit == first.commit  # HEAD did not move; another ref did


def test_a_mirror_fetched_with_one_persons_token_serves_another_only_after_their_own_lookup(
    owner, other_user, new_repo, served_root
):
    server = GitHTTPServer(served_root, auth=f"x-access-token:{TOKEN}")
    repo = new_repo()
    url = server.url(repo.name)
    assert run(owner, url, token=TOKEN).status == Status.DONE
    before = mirror_of(url)

    refused = run(other_user, url, "feature")

    assert refused.status == Status.FAILED
    assert "needs authentication" in refused.error
    assert refused.snapshot is None  # refused at the lookup, before any build
    after = mirror_of(url)
    assert (after.hits, after.misses, after.last_used_at) == (0, 1, before.last_used_at)
    allowed = run(other_user, url, "feature", token=TOKEN)
    assert allowed.status == Status.DONE, allowed.error
    assert mirror_of(url).hits == 1
    server.stop()


def test_a_force_push_upstream_leaves_a_snapshot_already_made_as_it_was(
    owner, new_repo, git_daemon
):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    before = run(owner, url)
    digest = hashlib.sha256(Path(before.archive.path).read_bytes()).hexdigest()
    work = repo.bare.parent.parent / "work" / repo.name.removesuffix(".git")
    git("reset", "--quiet", "--hard", repo.refs["v1.0"], cwd=work)  # history rewritten
    rewritten = push_commits(repo, 1)

    after = run(owner, url)

    assert after.status == Status.DONE, after.error
    assert after.commit == rewritten != before.commit
    before.refresh_from_db()
    assert before.status == Status.DONE
    assert hashlib.sha256(Path(before.archive.path).read_bytes()).hexdigest() == digest
    assert before.archive_sha256 == digest


def has_object(git_dir: Path, name: str) -> bool:
    # safe.directory: the mirror is the container user's.
    command = ["git", "-c", "safe.directory=*", "cat-file", "-e", name]
    return subprocess.run(command, cwd=git_dir).returncode == 0


@pytest.mark.parametrize("how", ["branch deleted", "force-pushed over"])
def test_a_commit_taken_back_upstream_leaves_the_mirror_and_is_in_no_later_archive(
    how, owner, new_repo, git_daemon, tmp_path
):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    work = repo.bare.parent.parent / "work" / repo.name.removesuffix(".git")
    branch = "leak" if how == "branch deleted" else "main"
    if branch == "leak":
        git("branch", "leak", cwd=work)  # a branch that should never have been pushed
    leaked = push_commits(repo, 1, branch=branch)
    assert run(owner, url).status == Status.DONE  # the mirror fetched it
    assert has_object(mirror_dir(url), leaked)
    # As an automatic gc leaves it: a commit-graph that names the commit.
    git("-c", "safe.directory=*", "commit-graph", "write", "--reachable", cwd=mirror_dir(url))
    graph = mirror_dir(url) / "objects" / "info" / "commit-graph"
    os.chown(graph, *engine.container_user())
    assert bytes.fromhex(leaked) in graph.read_bytes()
    if how == "branch deleted":
        git("push", "--quiet", str(repo.bare), ":leak", cwd=repo.bare)
    else:
        git("reset", "--quiet", "--hard", "HEAD~1", cwd=work)
        git("push", "--quiet", "--force", str(repo.bare), "main:main", cwd=work)
    push_commits(repo, 1)  # a new commit: a new snapshot, not the first one's archive

    full = run(owner, url)
    every_ref = run(owner, url, history=History.MIRROR)

    assert (full.status, every_ref.status) == (Status.DONE, Status.DONE)
    assert not has_object(mirror_dir(url), leaked), "the mirror kept the commit taken back"
    assert bytes.fromhex(leaked) not in graph.read_bytes(), "its commit-graph still names it"
    for job, git_dir in [(full, ".git"), (every_ref, ".")]:
        unpacked = extract(job, tmp_path / job.history) / git_dir
        assert not has_object(unpacked, leaked), f"the {job.history} archive holds it"
        assert git("fsck", "--no-dangling", "--strict", cwd=unpacked) == ""
        git("commit-graph", "verify", cwd=unpacked)  # fails if it names a missing commit


def watch_of(owner, url: str) -> Watch:
    return Watch.objects.create(owner=owner, url=url, next_check_at=timezone.now())


def test_a_watchs_snapshot_records_the_commits_since_its_previous_one(owner, new_repo, git_daemon):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    watch = watch_of(owner, url)
    first = run(owner, url, watch=watch, history=History.FILES)
    assert first.status == Status.DONE, first.error
    assert (first.changes, first.changes_total) == ([], None)  # nothing before it
    new_head = push_commits(repo, 3)

    second = run(owner, url, watch=watch, history=History.FILES)

    assert second.status == Status.DONE, second.error
    assert second.changes_total == 3
    assert [subject for _, subject in second.changes] == ["news 2", "news 1", "news 0"]
    assert second.changes[0][0] == new_head


def test_a_watchs_snapshot_built_by_another_watch_still_records_its_own_changes(
    owner, other_user, new_repo, git_daemon
):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    mine, theirs = watch_of(owner, url), watch_of(other_user, url)
    assert run(owner, url, watch=mine).status == Status.DONE
    assert run(other_user, url, watch=theirs).status == Status.DONE
    push_commits(repo, 2)
    built = run(owner, url, watch=mine)

    shared = run(other_user, url, watch=theirs)

    assert shared.status == Status.DONE, shared.error
    assert shared.snapshot_id == built.snapshot_id  # no build of its own
    assert (shared.changes, shared.changes_total) == (built.changes, 2)
    assert_left_nothing_behind(shared)


def test_commits_since_a_previous_snapshot_gone_from_the_mirror_are_not_told(
    owner, new_repo, git_daemon
):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    watch = watch_of(owner, url)
    # Its commit was force-pushed away and pruned before this mirror was made.
    CloneJob.objects.create(owner=owner, url=url, watch=watch, status=Status.DONE, commit="1" * 40)

    job = run(owner, url, watch=watch)

    assert job.status == Status.DONE, job.error
    assert (job.changes, job.changes_total) == ([], None)


def test_a_files_job_uses_a_mirror_only_once_there_is_one(owner, new_repo, git_daemon):
    repo = new_repo()
    url = git_daemon.url(repo.name)

    assert run(owner, url, history=History.FILES).status == Status.DONE
    assert not Mirror.objects.filter(key=mirrors.key(url)).exists()
    assert run(owner, url, "feature").status == Status.DONE  # full: makes the mirror
    files = run(owner, url, "feature", history=History.FILES, archive_format="zip")

    assert files.status == Status.DONE, files.error
    assert mirror_of(url).hits == 1


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"history": "mirror", "archive_format": "bundle"}, {}),
        ({"history": "mirror", "archive_format": "zip"}, {}),
        (
            {"history": "mirror", "ref": "main"},
            {
                "ref": [
                    "A mirror holds every branch and tag: leave the branch, tag or commit empty."
                ]
            },
        ),
        (
            {"history": "full", "archive_format": "bundle"},
            {"archive_format": ["A bundle is made of the bundle and mirror histories only."]},
        ),
    ],
)
def test_the_form_takes_a_mirror_with_any_format_and_no_ref(fields, errors):
    form = CloneRequestForm({"url": "http://127.0.0.1:9/team/repo.git", **fields})
    form.is_valid()
    assert form.errors == errors


@pytest.mark.parametrize("ref", ["feature", "v1.0", "commit"])
def test_a_shallow_clone_from_a_mirror_keeps_its_depth(ref, owner, new_repo, git_daemon, tmp_path):
    repo = new_repo()
    url = git_daemon.url(repo.name)
    assert run(owner, url).status == Status.DONE  # the mirror, with every commit
    asked = repo.refs["v1.0"] if ref == "commit" else ref

    job = run(owner, url, asked, history=History.SHALLOW, depth=1)

    assert job.status == Status.DONE, job.error
    assert mirror_of(url).hits == 1
    commit = repo.refs["v1.0" if ref == "commit" else ref]
    checkout = extract(job, tmp_path)
    assert git("rev-parse", "HEAD", cwd=checkout) == commit
    assert git("rev-list", "--count", "--all", cwd=checkout) == "1"
    assert git("config", "remote.origin.url", cwd=checkout) == urlpolicy.origin_url(url)
