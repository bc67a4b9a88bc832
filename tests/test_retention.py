"""Retention and quota (clones.retention): the keep set over a simulated year against one worked
out apart; a watch's snapshots forgotten and their files deleted by the expiry sweep, pinned and
newest ones kept; a job refused by its owner's quota; the profile's usage."""

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils import timezone

from clones import retention, tasks, watches
from clones.models import CloneJob, Profile, Snapshot, SnapshotState, Status, Watch
from clones.pipeline import archives
from clones.retention import Policy

from .support.helpers import make_done_job, submit, wait_for_job
from .support.timeline import AFTER_THE_YEAR, hourly_year, label, policies

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

# What each rule's period is, written as strftime sees it (apart from clones.retention's).
PERIOD_FORMATS = {
    "keep_hourly": "%Y-%m-%d %H",
    "keep_daily": "%Y-%m-%d",
    "keep_weekly": "%G-W%V",  # ISO year and week
    "keep_monthly": "%Y-%m",
    "keep_yearly": "%Y",
}


def expected_keep_set(snapshots: list, policy: Policy) -> set:
    """restic's forget worked out another way: group the snapshots by period, keep the newest
    of the `count` latest periods, and the oldest snapshot if there were fewer periods."""
    newest_first = sorted(snapshots, key=lambda snapshot: snapshot[1], reverse=True)
    kept = {snapshot_id for snapshot_id, _ in newest_first[: policy.keep_last]}
    for rule, period_format in PERIOD_FORMATS.items():
        count = getattr(policy, rule)
        newest_of = {}
        for snapshot_id, moment in newest_first:
            newest_of.setdefault(moment.strftime(period_format), snapshot_id)
        latest_periods = sorted(newest_of, reverse=True)[:count]  # the formats sort as time
        kept.update(newest_of[period] for period in latest_periods)
        if len(newest_of) < count:
            kept.add(newest_first[-1][0])
    return kept


# Counted by hand over the hourly snapshots of 2025 (2025-12-29 starts ISO week 2026-W01; the
# Sundays Aug 31 and Nov 30 end their months).
KEPT_OF_A_YEAR = {
    "keep_last 10": 10,
    "keep_hourly 48": 48,
    "keep_daily 7": 7,
    "keep_weekly 4": 4,
    "keep_monthly 12": 12,
    "keep_monthly 24": 13,  # a month-end each, and the oldest: fewer months than asked
    "keep_yearly 5": 2,  # the year's newest and the oldest
    # 10 last; Dec 25-30 (6 more days); Sundays Dec 21 and 14; 11 other month-ends
    "a new watch's (last 10, daily 7, weekly 4, monthly 12)": 29,
    # 7 days; Dec 21, 14, 7; 11 other month-ends; the oldest, for the yearly rule
    "restic's example (daily 7, weekly 5, monthly 12, yearly 75)": 22,
    # 24 hours; 29 more days; 47 more Sundays; 9 more month-ends; the oldest
    "hourly 24, daily 30, weekly 52, monthly 12, yearly 10": 110,
    "every count 0": 0,
}


@pytest.mark.parametrize("name", KEPT_OF_A_YEAR)
def test_the_keep_set_of_a_year_of_hourly_snapshots(name):
    year, policy = hourly_year(), policies()[name]

    kept = retention.keep_set(year, policy, now=AFTER_THE_YEAR)

    assert kept == expected_keep_set(year, policy)
    assert len(kept) == KEPT_OF_A_YEAR[name]


def test_weeks_are_iso_weeks_and_a_rule_short_of_periods_keeps_the_oldest():
    year = hourly_year()

    weekly = retention.keep_set(year, Policy(keep_weekly=3), now=AFTER_THE_YEAR)
    monthly = retention.keep_set(year, Policy(keep_monthly=13), now=AFTER_THE_YEAR)

    # Wednesday Dec 31 is in the ISO week of Monday Dec 29; the two before end on Sundays.
    assert weekly == {"2025-12-31T23:30", "2025-12-28T23:30", "2025-12-21T23:30"}
    month_ends = {"2025-01-31T23:30", "2025-02-28T23:30", "2025-03-31T23:30"}
    assert month_ends < monthly and "2025-01-01T00:30" in monthly and len(monthly) == 13


def test_a_snapshot_timed_after_now_is_kept_and_counts_for_no_rule():
    year = hourly_year()
    ahead = AFTER_THE_YEAR + timedelta(minutes=5)  # a clock ahead of ours

    kept = retention.keep_set([*year, ("ahead", ahead)], Policy(keep_last=1), AFTER_THE_YEAR)

    assert kept == {"ahead", "2025-12-31T23:30"}


# A watch's snapshots in the database.


@pytest.fixture
def watch(owner):
    return Watch.objects.create(
        owner=owner, url="https://example.com/team/widget.git", next_check_at=timezone.now()
    )


def with_policy(watch: Watch, **counts) -> Watch:
    """The watch with every keep_* count 0 but `counts`."""
    for field, value in (vars(Policy()) | counts).items():
        setattr(watch, field, value)
    watch.save()
    return watch


def year_of_snapshot_jobs(watch: Watch) -> dict:
    """A done job for each hour of the simulated year, with no archive: label -> job id."""
    made = CloneJob.objects.bulk_create(
        CloneJob(owner=watch.owner, url=watch.url, watch=watch, status=Status.DONE, created_at=at)
        for _, at in hourly_year()
    )
    return {label(job.created_at): job.pk for job in made}


def kept_labels(watch: Watch) -> set:
    kept = CloneJob.objects.filter(watch=watch, status=Status.DONE, expires_at__isnull=True)
    return {label(created) for created in kept.values_list("created_at", flat=True)}


@pytest.mark.django_db
def test_apply_forgets_what_the_policy_and_the_pins_do_not_keep(watch):
    with_policy(watch, keep_last=10, keep_daily=7, keep_weekly=4, keep_monthly=12)
    jobs = year_of_snapshot_jobs(watch)
    CloneJob.objects.filter(pk=jobs["2025-03-14T15:30"]).update(pinned=True)
    expected = expected_keep_set(hourly_year(), Policy.of(watch)) | {"2025-03-14T15:30"}

    forgotten = retention.apply(watch)

    assert kept_labels(watch) == expected
    assert forgotten == len(jobs) - len(expected)
    assert retention.apply(watch) == 0  # forgotten once
    due = CloneJob.objects.filter(watch=watch, expires_at__lte=timezone.now())
    assert due.count() == forgotten  # for the expiry sweep


@pytest.mark.django_db
def test_a_policy_of_zeros_keeps_the_newest_and_the_pinned_only(watch):
    with_policy(watch)
    jobs = year_of_snapshot_jobs(watch)
    CloneJob.objects.filter(pk=jobs["2025-06-01T12:30"]).update(pinned=True)

    retention.apply(watch)

    assert kept_labels(watch) == {"2025-12-31T23:30", "2025-06-01T12:30"}


@pytest.mark.django_db
def test_apply_ignores_an_archive_ttl_a_snapshot_was_done_with(watch):
    with_policy(watch, keep_last=1)
    jobs = year_of_snapshot_jobs(watch)
    ttl = timezone.now() + timedelta(days=7)
    CloneJob.objects.filter(watch=watch).update(expires_at=ttl)

    forgotten = retention.apply(watch)

    assert forgotten == len(jobs) - 1
    assert kept_labels(watch) == {"2025-12-31T23:30"}  # no expiry: the policy keeps it
    assert not CloneJob.objects.filter(expires_at=ttl).exists()


def snapshot_job(watch: Watch, days_ago: int, tmp_path, **fields) -> CloneJob:
    """A done snapshot of the watch made `days_ago`, its archive really stored (through
    clones.pipeline.archives) and its Snapshot's own expiry long past, as a watch's kept one's
    is once CLONES_ARCHIVE_TTL_HOURS has gone by."""
    staged = tmp_path / f"{days_ago}.tar"
    staged.write_bytes(f"snapshot of {days_ago} days ago".encode())
    archive = archives.store_file(staged, f"watched-{days_ago}.tar")
    made = timezone.now() - timedelta(days=days_ago)
    snapshot = Snapshot.objects.create(
        key=archive.sha256, url=watch.url, commit=f"{days_ago:040x}", history="full",
        archive_format="tar", state=SnapshotState.READY, archive=archive.name,
        archive_size=archive.size, archive_sha256=archive.sha256, ready_at=made,
        expires_at=timezone.now() - timedelta(hours=1),
    )  # fmt: skip
    return CloneJob.objects.create(
        owner=watch.owner, url=watch.url, watch=watch, status=Status.DONE, created_at=made,
        snapshot=snapshot, commit=snapshot.commit, archive=archive.name,
        archive_size=archive.size, archive_sha256=archive.sha256, **fields,
    )  # fmt: skip


def stored(job: CloneJob) -> bool:
    return default_storage.exists(job.archive.name)


def status_of(job: CloneJob) -> str:
    return CloneJob.objects.get(pk=job.pk).status


@pytest.mark.django_db
def test_the_expiry_sweep_deletes_the_forgotten_snapshots_files_and_keeps_the_rest(
    watch, other_user, tmp_path
):
    with_policy(watch, keep_last=2)
    made = {days: snapshot_job(watch, days, tmp_path) for days in range(1, 7)}
    CloneJob.objects.filter(pk=made[6].pk).update(pinned=True)
    # Another person's one-off job delivers the snapshot of 5 days ago for an hour more.
    shared = CloneJob.objects.create(
        owner=other_user, url=watch.url, status=Status.DONE, snapshot=made[5].snapshot,
        archive=made[5].archive.name, expires_at=timezone.now() + timedelta(hours=1),
    )  # fmt: skip

    tasks.expire_archives()  # the policy is applied there too, for every watch

    kept, pinned, forgotten = [made[1], made[2]], made[6], [made[3], made[4], made[5]]
    assert all(status_of(job) == Status.DONE and stored(job) for job in [*kept, pinned])
    assert all(status_of(job) == Status.EXPIRED for job in forgotten)
    assert not stored(made[3]) and not stored(made[4])
    assert stored(made[5])  # until the other person's job expires
    CloneJob.objects.filter(pk=shared.pk).update(expires_at=timezone.now())
    tasks.expire_archives()
    assert not stored(made[5])


@pytest.mark.django_db
def test_a_snapshot_pinned_after_it_was_forgotten_is_taken_back(watch, tmp_path):
    with_policy(watch, keep_last=1)
    older, newest = snapshot_job(watch, 2, tmp_path), snapshot_job(watch, 1, tmp_path)
    assert retention.apply(watch) == 1

    assert watches.pin(older, True)  # before the sweep came
    tasks.expire_archives()

    older.refresh_from_db()
    assert (older.status, older.expires_at) == (Status.DONE, None)
    assert stored(older) and stored(newest)


@pytest.mark.django_db
def test_a_pinned_snapshot_is_not_expired_even_when_its_watchs_retention_fails(
    watch, tmp_path, monkeypatch
):
    with_policy(watch, keep_last=1)
    older, _ = snapshot_job(watch, 2, tmp_path), snapshot_job(watch, 1, tmp_path)
    retention.apply(watch)
    watches.pin(older, True)

    def fails(watch):
        raise RuntimeError("retention could not run")

    monkeypatch.setattr(retention, "apply", fails)
    tasks.expire_archives()

    assert status_of(older) == Status.DONE and stored(older)


@pytest.mark.django_db
def test_a_changed_policy_takes_effect_at_the_next_expiry_run(watch, tmp_path):
    with_policy(watch, keep_last=5)
    made = [snapshot_job(watch, days, tmp_path) for days in range(1, 6)]
    tasks.expire_archives()
    assert all(status_of(job) == Status.DONE for job in made)

    with_policy(watch, keep_last=2)
    tasks.expire_archives()

    assert [status_of(job) for job in made] == [Status.DONE] * 2 + [Status.EXPIRED] * 3


# Quota.


@pytest.mark.django_db
def test_the_quota_is_the_profiles_or_the_setting_and_0_is_none(owner, settings):
    settings.CLONES_USER_QUOTA_BYTES = 10 * 2**30
    assert retention.quota(owner) == 10 * 2**30  # no profile yet
    Profile.objects.create(user=owner, quota_bytes=2048)
    assert retention.quota(owner) == 2048
    Profile.objects.filter(user=owner).update(quota_bytes=0)
    assert retention.quota(owner) is None  # staff exempted them
    Profile.objects.filter(user=owner).update(quota_bytes=None)
    settings.CLONES_USER_QUOTA_BYTES = 0
    assert retention.quota(owner) is None


@pytest.mark.django_db
def test_usage_counts_each_archive_one_keeps_once(owner, other_user, watch, tmp_path):
    watched = snapshot_job(watch, 1, tmp_path)
    CloneJob.objects.create(  # an identical one-off job: the same archive
        owner=owner, url=watch.url, status=Status.DONE, snapshot=watched.snapshot,
        archive_size=watched.archive_size,
    )  # fmt: skip
    make_done_job(owner, b"x" * 1000)  # its own file, no snapshot
    CloneJob.objects.filter(pk=make_done_job(owner, b"y" * 500).pk).update(status=Status.EXPIRED)
    make_done_job(other_user, b"z" * 300)

    assert retention.usage(owner) == watched.archive_size + 1000
    assert retention.usage(other_user) == 300


def test_a_job_past_its_owners_quota_fails_saying_so(
    owner, owner_client, start_worker, new_repo, git_daemon
):
    make_done_job(owner, b"x" * 3000)
    Profile.objects.update_or_create(user=owner, defaults={"quota_bytes": 2048})
    start_worker()

    job = wait_for_job(submit(owner_client, git_daemon.url(new_repo().name)))

    assert job.status == Status.FAILED
    assert job.error == (
        "Your archives take 2.9 KiB of your 2 KiB quota, so no new archive is made for you. To "
        "make room, unpin snapshots or keep fewer of them in your watches' retention (they go at "
        "the next expiry run), or wait for one-off archives to expire; or ask staff for a larger "
        "quota."
    )
    assert job.snapshot_id is None and not job.commit  # refused before its ref was looked up


@pytest.mark.django_db
def test_the_profile_shows_what_ones_archives_take(owner, owner_client, settings):
    make_done_job(owner, b"x" * 1024)
    Profile.objects.create(user=owner, quota_bytes=4096)

    page = owner_client.get(reverse("clones:profile")).content.decode()

    assert "Your archives take 1 KiB of your 4 KiB quota (25%)." in page
    assert '<meter min="0" max="4096" value="1024"' in page
    settings.CLONES_USER_QUOTA_BYTES = 0
    Profile.objects.filter(user=owner).update(quota_bytes=None)
    page = owner_client.get(reverse("clones:profile")).content.decode()
    assert "Your archives take 1 KiB; you have no quota." in page


@pytest.mark.django_db
def test_staff_set_a_persons_quota_in_the_admin(client, staff, owner):
    make_done_job(owner, b"x" * 1024)
    profile = Profile.objects.create(user=owner)
    client.force_login(staff)
    change = reverse("admin:clones_profile_change", args=[profile.pk])
    assert filesizeformat(1024) in client.get(change).content.decode()  # what they keep

    response = client.post(change, {"quota_bytes": "5000"})

    assert response.status_code == 302, response.content.decode()
    assert retention.quota(owner) == 5000
    listed = client.get(reverse("admin:clones_profile_changelist")).content.decode()
    assert "owner" in listed and "5000" in listed


@pytest.mark.django_db
def test_the_newest_snapshot_of_each_followed_ref_is_kept_however_busy_the_others_are(watch):
    with_policy(watch, keep_last=3)
    now = timezone.now()
    made = [("stable", 10)] + [("main", hours) for hours in (5, 4, 3, 2, 1)]
    for ref, hours_ago in made:
        CloneJob.objects.create(
            owner=watch.owner, url=watch.url, watch=watch, ref=ref, status=Status.DONE,
            created_at=now - timedelta(hours=hours_ago),
        )  # fmt: skip

    assert retention.apply(watch) == 2  # the two oldest of main's

    kept = CloneJob.objects.filter(watch=watch, expires_at__isnull=True)
    assert sorted(kept.values_list("ref", flat=True)) == ["main", "main", "main", "stable"]
