"""Which of a watch's snapshots are kept, and how many bytes of archives a person may keep.

Retention follows restic's `forget`: keep the last N snapshots, and for each of hourly, daily,
weekly (ISO weeks, Monday to Sunday), monthly and yearly, the newest snapshot of each of the N
most recent such periods that have one, in UTC. A snapshot kept by any rule is kept: each rule
is counted on its own over every snapshot (borg's `prune` applies its rules in sequence, and a
period whose newest archive an earlier rule kept does not count for a later one; restic's way
is taken because a rule then means the same whatever the others say, "keep_weekly 4" is always
the last four weeks, and raising one count never lets go of a snapshot another kept). As both
restic (0.17) and borg (1.2) do, a rule that finds fewer periods than its count keeps the oldest
snapshot as well, so that the first snapshot ages until a newer one can take its place.

Beyond the policy: pinned snapshots, and the newest done one of each ref a watch follows, are
never forgotten. Forgetting sets a done job's `expires_at` to now; the expiry sweep
(clones.tasks.expire_archives) then expires it, and deletes its snapshot's file once no other job
needs it.
"""

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, fields
from datetime import UTC, datetime

from django.conf import settings
from django.db.models import Exists, OuterRef, Q, Sum
from django.utils import timezone

from . import units
from .models import CloneJob, Profile, Snapshot, Status, Watch
from .pipeline import gitwords

UPDATE_BATCH_SIZE = 500  # ids per UPDATE: SQLite caps the parameters of one statement


@dataclass(frozen=True)
class Policy:
    """A retention policy, as a Watch's keep_* fields say it; 0 keeps none by that rule."""

    keep_last: int = 0
    keep_hourly: int = 0
    keep_daily: int = 0
    keep_weekly: int = 0
    keep_monthly: int = 0
    keep_yearly: int = 0

    @classmethod
    def of(cls, watch: Watch) -> "Policy":
        return cls(**{field.name: getattr(watch, field.name) for field in fields(cls)})


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


# Each period rule: the count it takes from a policy, and the period a moment falls in.
PERIODS: list[tuple[str, Callable[[datetime], Hashable]]] = [
    ("keep_hourly", lambda moment: _utc(moment).strftime("%Y-%m-%d %H")),
    ("keep_daily", lambda moment: _utc(moment).date()),
    ("keep_weekly", lambda moment: _utc(moment).isocalendar()[:2]),  # ISO year and week
    ("keep_monthly", lambda moment: (_utc(moment).year, _utc(moment).month)),
    ("keep_yearly", lambda moment: _utc(moment).year),
]


def keep_set(times: Iterable[tuple[Hashable, datetime]], policy: Policy, now: datetime) -> set:
    """The ids of the snapshots `policy` keeps, of `times` given as (id, time) pairs. One timed
    after `now` (a clock ahead) is kept and counts for no rule: too new to judge."""
    times = list(times)
    kept = {snapshot_id for snapshot_id, moment in times if moment > now}
    # Newest first; ties broken by id, so that the same snapshots always give the same set.
    past = sorted(((moment, snapshot_id) for snapshot_id, moment in times if moment <= now))
    past.reverse()
    kept.update(snapshot_id for _, snapshot_id in past[: policy.keep_last])
    for count_name, period in PERIODS:
        kept.update(_newest_per_period(past, getattr(policy, count_name), period))
    return kept


def _newest_per_period(past: list, count: int, period) -> list:
    """The newest of each of the `count` most recent periods of `past` (newest first), and the
    oldest of all if there were fewer periods than that (restic's and borg's "oldest")."""
    kept, last_period = [], None
    for moment, snapshot_id in past:
        if len(kept) == count:
            return kept
        if period(moment) != last_period:
            last_period = period(moment)
            kept.append(snapshot_id)
    if past and len(kept) < count:
        kept.append(past[-1][1])
    return kept


def apply(watch: Watch) -> int:
    """Forget the watch's done snapshots that its policy does not keep, nor a pin, nor being its
    newest; take back, with no expiry, those forgotten but not expired yet that are kept now
    (pinned again, or a policy changed meanwhile). Returns how many it forgot."""
    done = CloneJob.objects.filter(watch=watch, status=Status.DONE)
    rows = list(done.values_list("pk", "created_at", "pinned", "expires_at", "ref"))
    now = timezone.now()
    kept = _kept(rows, Policy.of(watch), now)
    taken_back = [pk for pk, _, _, expires, _ in rows if pk in kept and expires is not None]
    _in_batches(taken_back, lambda batch: done.filter(pk__in=batch).update(expires_at=None))
    # Not forgotten yet: no expiry, or one to come (the TTL a job is done with, should one
    # have been given).
    forget = [pk for pk, _, _, expires, _ in rows if pk not in kept and not _due(expires, now)]
    # Asked again in the UPDATE: one pinned since it was read stays.
    still_forgettable = done.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=now), pinned=False
    )
    return _in_batches(
        forget, lambda batch: still_forgettable.filter(pk__in=batch).update(expires_at=now)
    )


def _kept(rows: list, policy: Policy, now: datetime) -> set:
    """The ids of the rows (id, time, pinned, expiry, ref) kept: by the policy, pinned, or the
    newest of each followed ref (a watch of `main` and `stable` keeps stable's last one however
    busy main is: its check compares with it, and would snapshot it again were it gone)."""
    kept = keep_set([(pk, created) for pk, created, *_ in rows], policy, now)
    kept.update(pk for pk, _, pinned, *_ in rows if pinned)
    newest = {}
    for row in sorted(rows, key=lambda row: (row[1], row[0])):  # as keep_set orders
        newest[row[4]] = row[0]
    kept.update(newest.values())
    return kept


def _due(expires: datetime | None, now: datetime) -> bool:
    return expires is not None and expires <= now


def _in_batches(ids: list, update: Callable[[list], int]) -> int:
    return sum(
        update(ids[start : start + UPDATE_BATCH_SIZE])
        for start in range(0, len(ids), UPDATE_BATCH_SIZE)
    )


def quota(user) -> int | None:
    """The most bytes of archives `user` may keep: their profile's quota, or
    CLONES_USER_QUOTA_BYTES; None for no quota (either says 0)."""
    own = Profile.objects.filter(user=user).values_list("quota_bytes", flat=True).first()
    return (settings.CLONES_USER_QUOTA_BYTES if own is None else own) or None


def usage(user) -> int:
    """Bytes of the archives `user` keeps: those of their done jobs, one-off and watched, each
    archive once however many of their jobs deliver it (identical jobs share one snapshot)."""
    kept = CloneJob.objects.filter(owner=user, status=Status.DONE)
    snapshots = Snapshot.objects.filter(Exists(kept.filter(snapshot=OuterRef("pk"))))
    # A job whose snapshot row was deleted by hand keeps its own file.
    own_files = kept.filter(snapshot__isnull=True)
    return _total_size(snapshots) + _total_size(own_files)


def _total_size(rows) -> int:
    return rows.aggregate(total=Sum("archive_size"))["total"] or 0


def check_quota(job: CloneJob) -> None:
    """Refuse (gitwords.CloneFailed, the job's own failure) a job whose owner's archives have
    reached their quota. A new archive's size is known only once it is made, so the job that
    crosses the quota is made, and the next is refused; a cache hit is refused alike, as the
    archive it delivers counts against its owner's quota too."""
    limit = quota(job.owner)
    if limit is None:
        return
    used = usage(job.owner)
    if used >= limit:
        raise gitwords.CloneFailed(
            f"Your archives take {units.human_size(used)} of your {units.human_size(limit)} "
            "quota, so no new archive is made for you. To make room, unpin snapshots or keep "
            "fewer of them in your watches' retention (they go at the next expiry run), or wait "
            "for one-off archives to expire; or ask staff for a larger quota."
        )
