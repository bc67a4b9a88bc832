"""Watches checked against real git servers on 127.0.0.1 whose repositories change between
checks (clones.watches): the checks run from the queue here, in this process, and the snapshot
jobs they queue run here too, on the real test engine.
"""

import hashlib
import shutil
import tarfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from django_q.models import OrmQ, Schedule

from clones import queue, tasks, watches
from clones.models import CheckResult, CloneJob, Follow, History, Status, Watch
from clones.pipeline import gitwords, refs, snapshots
from clones.safety import tokens, urlpolicy

from .notify.test_webhooks import run_queued_tasks
from .support.gitservers import GitHTTPServer
from .support.repos import ServedRepo, git

pytestmark = [pytest.mark.database, pytest.mark.django_db(transaction=True)]


# The repository upstream, changed between checks.


def work_of(repo: ServedRepo) -> Path:
    """The working copy make_repo built the served repository from."""
    return repo.bare.parent.parent / "work" / repo.name.removesuffix(".git")


def push_commit(repo: ServedRepo, branch: str = "main") -> str:
    work = work_of(repo)
    git("checkout", "--quiet", branch, cwd=work)
    (work / "change.txt").write_text(f"{uuid.uuid4()}\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "a change", cwd=work)
    git("push", "--quiet", str(repo.bare), f"{branch}:{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def force_push(repo: ServedRepo) -> str:
    """Rewrite main's last commit and force it upstream."""
    work = work_of(repo)
    git("checkout", "--quiet", "main", cwd=work)
    git("reset", "--quiet", "--hard", "HEAD~1", cwd=work)
    (work / "rewritten.txt").write_text("history rewritten\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "rewritten", cwd=work)
    git("push", "--quiet", "--force", str(repo.bare), "main:main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def push_tag(repo: ServedRepo, tag: str) -> str:
    work = work_of(repo)
    git("tag", "-a", tag, "-m", f"release {tag}", "main", cwd=work)
    git("push", "--quiet", str(repo.bare), f"refs/tags/{tag}", cwd=work)
    return git("rev-parse", "main", cwd=work)


# The service's side.


def watch_of(owner, url: str, **options) -> Watch:
    return watches.create(owner, url, **options)


def check(watch: Watch) -> Watch:
    """Make the watch due, dispatch, and run its check's task from the queue."""
    Watch.objects.filter(pk=watch.pk).update(next_check_at=timezone.now())
    assert watches.dispatch() == 1
    run_queued_tasks(queue.CHECK_WATCH)
    watch.refresh_from_db()
    assert watch.checking_since is None
    return watch


def queued_snapshots(watch: Watch) -> list[CloneJob]:
    return list(watch.snapshots.filter(status=Status.QUEUED).order_by("ref"))


def run_snapshots(watch: Watch) -> list[CloneJob]:
    """Run the watch's queued snapshot jobs, as a worker takes them from the queue."""
    ran = queued_snapshots(watch)
    OrmQ.objects.all().delete()  # their tasks: run here instead
    for job in ran:
        tasks.run_clone_job(str(job.id))
        job.refresh_from_db()
        assert job.status == Status.DONE, job.error
    return ran


def file_sha256(job: CloneJob) -> str:
    with default_storage.open(job.archive.name) as file:
        return hashlib.sha256(file.read()).hexdigest()


def dispatched_tasks(func: str) -> int:
    return sum(1 for queued in OrmQ.objects.all() if queued.func() == func)


# Changes and no changes.


def test_new_commits_make_a_snapshot_and_an_unchanged_repository_makes_nothing(
    owner, new_repo, git_http
):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name))

    assert check(watch).last_result == CheckResult.CHANGED
    [first] = run_snapshots(watch)
    assert (first.commit, first.ref, first.owner, first.expires_at) == (repo.head, "", owner, None)

    watch = check(watch)
    assert watch.last_result == CheckResult.UNCHANGED
    assert watch.snapshots.count() == 1  # no job, so no container
    assert dispatched_tasks(queue.RUN_CLONE_JOB) == 0

    moved = push_commit(repo)
    assert check(watch).last_result == CheckResult.CHANGED
    [second] = run_snapshots(watch)
    assert second.commit == moved
    assert second.expires_at is None  # kept by retention, not for the one-off TTL
    watch.refresh_from_db()
    assert (watch.failures, watch.last_error) == (0, "")
    assert watch.last_changed_at is not None and watch.last_lag_seconds >= 0


def test_a_watch_limited_to_paths_makes_snapshots_of_just_them(owner, new_repo, git_http):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name), history=History.FILES, paths=["docs"])
    check(watch)

    [snapshot] = run_snapshots(watch)

    assert snapshot.paths == ["docs"]
    with tarfile.open(snapshot.archive.path) as tar:
        names = {member.name for member in tar}
    top = snapshot.top_level
    assert names == {top, f"{top}/docs", f"{top}/docs/guide.txt"}


def test_a_snapshot_under_way_stands_for_its_ref_and_is_not_queued_twice(owner, new_repo, git_http):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name))
    check(watch)
    push_commit(repo)

    assert check(watch).last_result == CheckResult.UNCHANGED  # the queued one looks it up
    assert len(queued_snapshots(watch)) == 1


def test_a_new_tag_that_a_watch_names_is_snapshotted_once_it_appears(owner, new_repo, git_daemon):
    repo = new_repo()
    watch = watch_of(owner, git_daemon.url(repo.name), follow=Follow.REFS, refs="main\nv2.0")

    watch = check(watch)
    assert watch.last_result == CheckResult.FAILED  # main is snapshotted all the same
    assert watch.last_error == gitwords.NO_SUCH_REF.format(ref="v2.0")
    assert [job.ref for job in run_snapshots(watch)] == ["main"]

    tagged = push_tag(repo, "v2.0")
    assert check(watch).last_result == CheckResult.CHANGED
    [tag_snapshot] = run_snapshots(watch)
    assert (tag_snapshot.ref, tag_snapshot.commit) == ("v2.0", tagged)  # the peeled commit
    watch = check(watch)
    assert (watch.last_result, watch.failures, watch.last_error) == ("unchanged", 0, "")


def test_a_watch_of_every_ref_compares_the_digest_of_all_of_them(owner, new_repo, git_http):
    repo = new_repo()
    url = git_http.url(repo.name)
    watch = watch_of(owner, url, follow=Follow.EVERYTHING, history=History.MIRROR)

    assert check(watch).last_result == CheckResult.CHANGED
    [job] = queued_snapshots(watch)
    # What a mirror's build records (clones.pipeline.mirrors), stood in for here.
    listed = refs.list_refs(url, urlpolicy.pin(url))
    assert set(listed) >= {"refs/heads/main", "refs/heads/feature", "refs/tags/v1.0"}
    assert listed["refs/tags/v1.0^{}"] == repo.refs["v1.0"]
    CloneJob.objects.filter(pk=job.pk).update(status=Status.DONE, refs_digest=refs.digest(listed))

    assert check(watch).last_result == CheckResult.UNCHANGED
    push_tag(repo, "v3.0")  # a new tag on a commit already snapshotted: every ref counts
    assert check(watch).last_result == CheckResult.CHANGED


def test_the_refs_digest_is_of_every_ref_and_its_object_sorted_without_peeled_lines():
    listed = {"refs/tags/v1": "b" * 40, "refs/tags/v1^{}": "c" * 40, "refs/heads/main": "a" * 40}
    lines = f"refs/heads/main {'a' * 40}\nrefs/tags/v1 {'b' * 40}\n"
    assert refs.digest(listed) == hashlib.sha256(lines.encode()).hexdigest()


# Upstream rewritten, branches deleted, repositories removed.


def test_a_force_push_makes_a_new_snapshot_and_the_old_one_keeps_its_bytes(
    owner, new_repo, git_http
):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name))
    check(watch)
    [before] = run_snapshots(watch)
    bytes_before = file_sha256(before)

    rewritten = force_push(repo)
    assert check(watch).last_result == CheckResult.CHANGED
    [after] = run_snapshots(watch)

    assert after.commit == rewritten != before.commit
    # Told before the mirror lets the commit force-pushed away go: what the new tip has that
    # the old one had not.
    assert (after.changes_total, after.changes) == (1, [[rewritten, "rewritten"]])
    before.refresh_from_db()
    assert before.status == Status.DONE
    assert file_sha256(before) == bytes_before == before.archive_sha256


def test_a_deleted_followed_branch_fails_the_watch_saying_it_is_gone(owner, new_repo, git_http):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name), follow=Follow.REFS, refs="feature")
    check(watch)
    [kept] = run_snapshots(watch)

    git("branch", "--quiet", "-D", "feature", cwd=repo.bare)
    watch = check(watch)

    assert (watch.last_result, watch.failures) == (CheckResult.FAILED, 1)
    assert watch.last_error == (
        "The branch or tag 'feature' is gone from the repository; its snapshots are kept."
    )
    kept.refresh_from_db()
    assert kept.status == Status.DONE and default_storage.exists(kept.archive.name)


def test_a_removed_repository_leaves_the_timeline_and_a_failing_watch_saying_why(
    owner, new_repo, git_http, git_daemon
):
    repo = new_repo()
    for url in (git_http.url(repo.name), git_daemon.url(repo.name)):
        watch = watch_of(owner, url)
        check(watch)
        run_snapshots(watch)
    shutil.rmtree(repo.bare)

    for watch in Watch.objects.all():
        watch = check(watch)
        assert watch.last_result == CheckResult.FAILED
        assert watch.last_error == gitwords.NO_REPOSITORY.format(url=watch.url)
        [kept] = watch.snapshots.all()
        assert kept.status == Status.DONE and file_sha256(kept) == kept.archive_sha256


def test_a_failing_watch_backs_off_doubling_to_at_most_a_day(owner, new_repo, git_http):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name), interval_minutes=240)
    shutil.rmtree(repo.bare)

    waits = []
    for _ in range(5):
        started = timezone.now()
        watch = check(watch)
        waits.append(round((watch.next_check_at - started) / timedelta(hours=1)))
    assert waits == [4, 8, 16, 24, 24]
    assert watch.failures == 5


def test_a_failed_snapshot_counts_as_a_failure_of_its_watch(owner, new_repo, git_http):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name))
    check(watch)
    [job] = queued_snapshots(watch)
    shutil.rmtree(repo.bare)  # gone before its clone ran

    tasks.run_clone_job(str(job.id))

    job.refresh_from_db()
    watch.refresh_from_db()
    assert job.status == Status.FAILED
    assert (watch.failures, watch.last_error) == (1, f"Its latest snapshot failed: {job.error}")


# A watch's credential.

TOKEN = "glpat-watched-4321"


@pytest.fixture
def private_server(served_root):
    server = GitHTTPServer(served_root, auth=f"{gitwords.TOKEN_USER}:{TOKEN}")
    yield server
    server.stop()


def test_a_stored_credential_opens_a_private_repository_for_the_check_and_its_snapshot(
    owner, new_repo, private_server
):
    repo = new_repo()
    url = private_server.url(repo.name)
    watch = watch_of(owner, url, credential=TOKEN)
    assert TOKEN not in watch.credential
    anonymous = watch_of(owner, url)

    assert check(watch).last_result == CheckResult.CHANGED
    [job] = queued_snapshots(watch)
    assert job.used_token and tokens.read(job.id) == TOKEN  # for its clone only
    run_snapshots(watch)
    assert tokens.read(job.id) == ""
    anonymous = check(anonymous)
    assert anonymous.last_result == CheckResult.FAILED
    assert anonymous.last_error.startswith("This repository needs authentication")


def test_a_credential_no_key_opens_fails_the_watch_saying_so(owner, new_repo, private_server):
    repo = new_repo()
    watch = watch_of(owner, private_server.url(repo.name), credential=TOKEN)
    Watch.objects.filter(pk=watch.pk).update(credential=watch.credential[:-8] + "AAAAAAA=")

    watch = check(watch)

    assert watch.last_result == CheckResult.FAILED
    assert watch.last_error.startswith("The stored access token cannot be decrypted")
    assert not watch.snapshots.exists()


# Scheduling.


def test_an_interval_keeps_the_watchs_moment_in_it_even_after_a_late_check(owner, settings):
    due = datetime(2026, 3, 1, 10, 17, 23, tzinfo=UTC)
    watch = Watch(owner=owner, url="https://example.com/a.git", interval_minutes=60)
    watch.next_check_at = due

    assert watches.next_check_at(watch, due + timedelta(seconds=3)) == due + timedelta(hours=1)
    late = due + timedelta(hours=2, minutes=50)  # a check that began very late
    assert watches.next_check_at(watch, late) == due + timedelta(hours=3)
    settings.CLONES_WATCH_MIN_INTERVAL_MINUTES = 120
    assert watches.next_check_at(watch, due) == due + timedelta(hours=2)


def test_a_cron_expression_names_the_next_check_no_sooner_than_the_minimum(owner, settings):
    settings.CLONES_WATCH_MIN_INTERVAL_MINUTES = 15
    watch = Watch(owner=owner, url="https://example.com/a.git", cron="*/5 * * * *")
    after = datetime(2026, 3, 1, 10, 1, tzinfo=UTC)
    assert watches.next_check_at(watch, after) == datetime(2026, 3, 1, 10, 20, tzinfo=UTC)
    watch.cron = "30 2 * * 1"  # Mondays at 02:30; 2026-03-01 is a Sunday
    assert watches.next_check_at(watch, after) == datetime(2026, 3, 2, 2, 30, tzinfo=UTC)


def test_dispatch_claims_each_due_watch_once_and_a_dead_checks_claim_after_its_lease(
    owner, new_repo, git_http
):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name))
    paused = watch_of(owner, git_http.url(repo.name))
    watches.set_active(paused, False)
    Watch.objects.update(next_check_at=timezone.now())

    assert watches.dispatch() == 1
    assert watches.dispatch() == 0  # claimed: not again while its check may run
    [stale] = [queued.task for queued in OrmQ.objects.all()]
    OrmQ.objects.all().delete()  # the cluster that held it died

    lease = timedelta(seconds=watches.CLAIM_LEASE_SECONDS + 1)
    Watch.objects.filter(pk=watch.pk).update(checking_since=timezone.now() - lease)
    assert watches.dispatch() == 1
    assert watches.check(*stale["args"]) is None  # a stale task, should it run, does nothing
    run_queued_tasks(queue.CHECK_WATCH)
    watch.refresh_from_db()
    assert (watch.last_result, watch.checking_since) == (CheckResult.CHANGED, None)
    assert watch.snapshots.count() == 1


def test_the_check_schedule_runs_every_minute():
    tasks.ensure_schedules()
    schedule = Schedule.objects.get(name=queue.CHECKS_SCHEDULE)
    assert (schedule.func, schedule.minutes) == (queue.DISPATCH_CHECKS, 1)


def test_a_full_queue_leaves_the_change_to_the_next_check(owner, new_repo, git_http, settings):
    settings.CLONES_MAX_QUEUED = 0
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name))

    watch = check(watch)

    assert (watch.last_result, watch.failures, watch.snapshots.count()) == ("", 0, 0)
    assert watch.next_check_at > timezone.now()
    settings.CLONES_MAX_QUEUED = 10
    assert check(watch).last_result == CheckResult.CHANGED


# Keeping a watch's snapshots.


def test_a_watchs_snapshot_is_never_deleted_by_the_expiry_sweep_until_retention_says(
    owner, new_repo, git_http
):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name))
    check(watch)
    [kept] = run_snapshots(watch)
    one_off = CloneJob.objects.create(owner=owner, url=watch.url, status=Status.DONE)
    CloneJob.objects.filter(pk=one_off.pk).update(
        snapshot=kept.snapshot, archive=kept.archive.name, expires_at=timezone.now()
    )
    kept.snapshot.__class__.objects.filter(pk=kept.snapshot_id).update(
        expires_at=timezone.now() - timedelta(hours=1)
    )

    assert tasks.expire_archives() == 1  # the one-off job
    kept.refresh_from_db()
    assert kept.status == Status.DONE and default_storage.exists(kept.archive.name)
    assert not snapshots.due_for_deletion().exists()

    # A newer snapshot, and a policy that keeps the newest alone: retention forgets the first.
    Watch.objects.filter(pk=watch.pk).update(
        keep_last=1, keep_daily=0, keep_weekly=0, keep_monthly=0
    )
    push_commit(repo)
    check(watch)
    run_snapshots(watch)
    tasks.expire_archives()
    assert not default_storage.exists(kept.archive.name)


def test_a_watch_failing_for_weeks_backs_off_a_day_and_no_more(owner):
    watch = watch_of(owner, "https://example.org/gone.git", interval_minutes=5)
    watch.failures = 1000  # 2 ** 999 intervals would overflow any date
    now = timezone.now()
    assert watches._backed_off(watch, now) == now + watches.MAX_BACKOFF


def test_deleting_a_watch_cancels_its_snapshots_on_their_way_and_drops_their_token(
    owner, new_repo, git_http
):
    repo = new_repo()
    watch = watch_of(owner, git_http.url(repo.name), credential="watch-s3cret")
    check(watch)
    [queued] = queued_snapshots(watch)
    assert tokens.read(queued.id) == "watch-s3cret"

    watches.delete(watch)

    queued.refresh_from_db()
    assert queued.status == Status.CANCELLED and queued.watch is None
    assert tokens.read(queued.id) == ""


def test_a_snapshot_left_without_its_watch_and_an_expiry_gets_the_one_off_expiry(owner, settings):
    watch = watch_of(owner, "https://example.org/widget.git")
    kept = CloneJob.objects.create(
        owner=owner, url=watch.url, watch=watch, status=Status.DONE, expires_at=None
    )
    Watch.objects.filter(pk=watch.pk).delete()  # not through watches.delete: no expiry given

    tasks.expire_archives()

    kept.refresh_from_db()
    assert kept.expires_at is not None
    assert kept.expires_at > timezone.now() + timedelta(hours=settings.CLONES_ARCHIVE_TTL_HOURS - 1)
