"""The rules by which jobs share snapshots, on the database alone: who builds, who waits, who
is done at once, and what happens to those waiting when the builder ends."""

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from clones import jobs
from clones.models import LOST_AFTER_BEATS, CloneJob, Snapshot, SnapshotState, Status
from clones.ops import recovery
from clones.pipeline import archives, cloning, snapshots
from clones.pipeline.refs import Resolved
from clones.pipeline.snapshots import Role
from clones.safety import urlpolicy

pytestmark = [pytest.mark.database, pytest.mark.django_db]

URL = "https://example.com/team/widget.git"
COMMIT = "c" * 40
MAIN = Resolved(COMMIT, "refs/heads/main")


@pytest.fixture
def running(owner):
    """A new job, claimed by a worker, as many as a test asks for."""

    def make(url: str = URL, **options) -> CloneJob:
        job = CloneJob.objects.create(owner=owner, url=url, **options)
        return jobs.claim(job.id)

    return make


def build(job: CloneJob) -> Snapshot:
    snapshot, role = snapshots.take(job, MAIN)
    assert role is Role.BUILD
    jobs.record_builder(job, snapshot)
    return snapshot


def finish_building(snapshot: Snapshot, builder: CloneJob) -> None:
    assert snapshots.ready(snapshot, builder, archives.Archive("s.tar", 10, "a" * 64), {})
    assert jobs.mark_done(builder, Snapshot.objects.get(pk=snapshot.pk))


@pytest.mark.parametrize(
    "spelling",
    [
        "https://EXAMPLE.com/team/widget.git",
        "https://example.com:443/team/widget",
        "https://example.com/team/widget/",
        "https://example.com/team/widget.git/",
    ],
)
@pytest.mark.parametrize("history", ["files", "bundle"])
def test_spellings_of_one_repository_share_an_archive_that_names_no_origin(spelling, history):
    assert urlpolicy.normalized_url(spelling) == "https://example.com/team/widget"
    assert snapshots.key(spelling, COMMIT, history, None, "tar", "") == snapshots.key(
        URL, COMMIT, history, None, "tar", ""
    )


@pytest.mark.parametrize("history", ["full", "shallow"])
def test_a_checkout_which_names_its_origin_is_shared_by_the_spellings_of_that_origin(history):
    """Case, default port and trailing slash change nothing of .git/config's origin; .git does."""

    def key(url: str) -> str:
        return snapshots.key(url, COMMIT, history, 1, "tar", "refs/heads/main")

    assert urlpolicy.origin_url("HTTPS://Example.COM:443/team/widget.git/") == (
        "https://example.com/team/widget.git"
    )
    assert key("HTTPS://Example.COM:443/team/widget.git/") == key(
        "https://example.com/team/widget.git"
    )
    assert key("https://example.com/team/widget") != key("https://example.com/team/widget.git")


def test_other_commits_options_paths_or_refs_do_not_share_a_key():
    base = snapshots.key(URL, COMMIT, "full", None, "tar", "refs/heads/main")
    others = [
        snapshots.key(URL, "d" * 40, "full", None, "tar", "refs/heads/main"),
        snapshots.key(URL, COMMIT, "files", None, "tar", "refs/heads/main"),
        snapshots.key(URL, COMMIT, "shallow", 1, "tar", "refs/heads/main"),
        snapshots.key(URL, COMMIT, "shallow", 2, "tar", "refs/heads/main"),
        snapshots.key(URL, COMMIT, "full", None, "zip", "refs/heads/main"),
        snapshots.key(URL, COMMIT, "full", None, "tar", "refs/heads/feature-x"),
        snapshots.key(URL, COMMIT, "full", None, "tar", ""),
        snapshots.key("https://example.com/team/Widget", COMMIT, "full", None, "tar", ""),
        snapshots.key("https://example.com:8443/team/widget", COMMIT, "full", None, "tar", ""),
    ]
    assert len({base, *others}) == len(others) + 1


# What the archives of each history hold of the ref, as tried with git
# (tests/pipeline/test_snapshots.py compares the real archives): files nothing; full the branch, or
# only that it is a tag.
@pytest.mark.parametrize(
    ("history", "ref", "in_archive"),
    [
        ("files", "refs/heads/feature-x", ""),
        ("files", "refs/tags/v1.0", ""),
        ("full", "refs/heads/feature-x", "refs/heads/feature-x"),
        ("full", "refs/tags/v1.0", cloning.ANY_TAG),
        ("full", "", ""),
        ("shallow", "refs/tags/v1.0", "refs/tags/v1.0"),
        ("bundle", "refs/heads/feature-x", "refs/heads/feature-x"),
        ("bundle", "", ""),
    ],
)
def test_a_key_holds_the_part_of_the_ref_the_archive_holds(history, ref, in_archive):
    assert cloning.ref_in_archive(history, Resolved(COMMIT, ref)) == in_archive


def test_identical_jobs_wait_for_the_builder_and_are_done_with_it(running):
    builder, waiting = running(), running()
    snapshot = build(builder)
    assert snapshots.take(waiting, MAIN) == (snapshot, Role.FOLLOW)
    assert jobs.follow(waiting, snapshot)
    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED and waiting.phase == jobs.FOLLOWING
    assert str(builder.id) not in waiting.phase

    finish_building(snapshot, builder)

    waiting.refresh_from_db()
    assert waiting.status == Status.DONE
    assert (waiting.archive.name, waiting.archive_sha256, waiting.commit) == (
        "s.tar",
        "a" * 64,
        COMMIT,
    )


def test_a_job_that_starts_waiting_as_the_builder_finishes_is_not_left_behind(running):
    builder, late = running(), running()
    snapshot = build(builder)
    assert snapshots.take(late, MAIN)[1] is Role.FOLLOW
    finish_building(snapshot, builder)  # between the look and the wait

    jobs.follow(late, snapshot)

    late.refresh_from_db()
    assert late.status == Status.DONE


def test_a_ready_snapshot_is_a_hit_that_extends_its_expiry(running):
    builder = running()
    snapshot = build(builder)
    finish_building(snapshot, builder)
    Snapshot.objects.filter(pk=snapshot.pk).update(expires_at=timezone.now() + timedelta(hours=1))

    hit, role = snapshots.take(running(), MAIN)

    assert (hit, role) == (snapshot, Role.HIT)
    hit.refresh_from_db()
    assert hit.expires_at > timezone.now() + timedelta(hours=2)


def test_a_failed_builder_fails_those_waiting_with_its_reason(running):
    builder, waiting = running(), running()
    snapshot = build(builder)
    jobs.follow(waiting, snapshot)

    too_large = "The repository is larger than 1 MiB, the most this service clones."
    jobs.mark_failed(builder, too_large, shared=True)

    waiting.refresh_from_db()
    assert waiting.status == Status.FAILED
    assert waiting.error.startswith("The repository is larger than 1 MiB")
    # A later request tries again rather than inheriting the failure.
    assert snapshots.take(running(), MAIN)[1] is Role.BUILD


def test_a_cancelled_builder_sends_those_waiting_back_to_the_queue(running):
    builder, waiting = running(), running()
    snapshot = build(builder)
    jobs.follow(waiting, snapshot)

    jobs.cancel(builder, by="owner")

    assert_sent_back_to_build(waiting, snapshot)


def assert_sent_back_to_build(waiting: CloneJob, snapshot: Snapshot) -> None:
    """Queued again, with a task, told nothing of the builder, and it builds the snapshot."""
    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED and waiting.snapshot is None
    assert (waiting.phase, waiting.error) == (jobs.QUEUED_AGAIN, "")
    assert waiting.task_due_at is not None
    assert Snapshot.objects.get(pk=snapshot.pk).state == SnapshotState.ABANDONED
    claimed = jobs.claim(waiting.id)
    assert snapshots.take(claimed, MAIN) == (snapshot, Role.BUILD)  # it builds it now


def test_a_builder_failing_for_a_reason_of_its_own_sends_those_waiting_back_to_the_queue(
    running,
):
    """Its token refused, its ref moved: not the snapshot's failure (CloneFailed.shared)."""
    builder, waiting = running(), running()
    snapshot = build(builder)
    jobs.follow(waiting, snapshot)

    jobs.mark_failed(builder, "This repository needs authentication; the access token given …")

    assert CloneJob.objects.get(pk=builder.pk).status == Status.FAILED
    assert_sent_back_to_build(waiting, snapshot)


def test_a_builder_whose_worker_stopped_twice_sends_those_waiting_back_to_the_queue(
    running, settings
):
    builder, waiting = running(attempts=1), running()
    snapshot = build(builder)
    jobs.follow(waiting, snapshot)
    silent = timezone.now() - timedelta(
        seconds=settings.CLONES_HEARTBEAT_SECONDS * (LOST_AFTER_BEATS + 1)
    )
    CloneJob.objects.filter(pk=builder.pk).update(heartbeat_at=silent)

    assert jobs.recover(CloneJob.objects.get(pk=builder.pk))

    assert CloneJob.objects.get(pk=builder.pk).status == Status.FAILED
    assert_sent_back_to_build(waiting, snapshot)


def test_the_builder_comes_back_to_its_own_snapshot_after_an_interruption(running):
    builder, waiting = running(), running()
    snapshot = build(builder)
    jobs.follow(waiting, snapshot)

    assert jobs.hand_back(builder)  # its worker stopped
    again = jobs.claim(builder.id)

    assert snapshots.take(again, MAIN) == (snapshot, Role.BUILD)
    assert CloneJob.objects.get(pk=waiting.pk).status == Status.QUEUED  # still waiting


def test_a_hit_and_the_deletion_of_the_same_snapshot_cannot_both_win(running):
    builder = running()
    snapshot = build(builder)
    finish_building(snapshot, builder)
    CloneJob.objects.filter(pk=builder.pk).update(expires_at=timezone.now())  # its time came
    Snapshot.objects.filter(pk=snapshot.pk).update(expires_at=timezone.now())
    stale = Snapshot.objects.get(pk=snapshot.pk)

    assert snapshots.delete(stale)
    # The hit that came a moment too late builds the snapshot again, under the same key.
    assert snapshots.take(running(), MAIN) == (snapshot, Role.BUILD)
    assert not snapshots.delete(stale)


def test_a_snapshot_past_its_time_but_not_yet_deleted_is_a_hit_again(running):
    """ "Clone again" right after an archive expired, before the sweep deleted its file: this
    once failed the job ("kept changing under job")."""
    builder = running()
    snapshot = build(builder)
    finish_building(snapshot, builder)
    CloneJob.objects.filter(pk=builder.pk).update(expires_at=timezone.now())
    Snapshot.objects.filter(pk=snapshot.pk).update(expires_at=timezone.now())

    assert snapshots.take(running(), MAIN) == (snapshot, Role.HIT)
    assert not snapshots.delete(Snapshot.objects.get(pk=snapshot.pk))  # needed again
    assert Snapshot.objects.get(pk=snapshot.pk).expires_at > timezone.now()


def test_jobs_waiting_for_a_builder_that_vanished_are_sent_back_by_the_sweep(running):
    builder, waiting = running(), running()
    snapshot = build(builder)
    jobs.follow(waiting, snapshot)
    CloneJob.objects.filter(pk=builder.pk).delete()  # its owner was deleted, say

    recovery.recover()

    waiting.refresh_from_db()
    assert waiting.status == Status.QUEUED and waiting.snapshot is None
    assert Snapshot.objects.get(pk=snapshot.pk).state == SnapshotState.ABANDONED


def test_a_snapshot_is_never_deleted_while_a_done_job_still_delivers_it(running):
    builder = running()
    snapshot = build(builder)
    finish_building(snapshot, builder)
    # Its own time has come, but the job's (taken a moment later) has not.
    Snapshot.objects.filter(pk=snapshot.pk).update(expires_at=timezone.now())

    assert not snapshots.delete(Snapshot.objects.get(pk=snapshot.pk))

    CloneJob.objects.filter(pk=builder.pk).update(expires_at=timezone.now())
    assert snapshots.delete(Snapshot.objects.get(pk=snapshot.pk))


def test_deleting_a_job_keeps_the_archive_its_snapshot_shares_and_its_own_goes(
    running, django_capture_on_commit_callbacks
):
    builder, other = running(), running()
    snapshot = build(builder)
    assert snapshots.take(other, MAIN) == (snapshot, Role.FOLLOW) and jobs.follow(other, snapshot)
    stored = default_storage.save("s.tar", ContentFile(b"shared"))
    assert stored == "s.tar"
    finish_building(snapshot, builder)

    with django_capture_on_commit_callbacks(execute=True):
        CloneJob.objects.filter(pk=builder.pk).delete()  # an admin's delete, or its owner's

    assert default_storage.exists("s.tar")  # the other job still delivers it
    assert CloneJob.objects.get(pk=other.pk).can_download
    own = CloneJob.objects.get(pk=other.pk)
    CloneJob.objects.filter(pk=own.pk).update(snapshot=None)  # an archive of its own
    with django_capture_on_commit_callbacks(execute=True):
        CloneJob.objects.filter(pk=own.pk).delete()
    assert not default_storage.exists("s.tar")
