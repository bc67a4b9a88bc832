"""The staff dashboard's figures: what the service is doing now and did in the last 30 days, as
plain queries returning plain data (the page and its charts: clones.web.dashboard).

One query each (or none), however many jobs there are: counts are grouped in the database, and
the only rows that reach Python are the clone times of the last 30 days' successful jobs, as
numbers the database computed, for the percentiles (SQLite has no percentile function). Days are
the site's time zone's, told apart by nested CASEs of plain comparisons that both databases
evaluate natively (Django's TruncDate calls back into Python for every row on SQLite), and the
last 30 days are read from an index of their own (migration 0009). scripts/bench_dashboard.py
times every figure at 100,000 jobs (README, "Staff dashboard").
"""

import math
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from uuid import UUID

from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.db import connection
from django.db.models import Case, Count, FloatField, Func, IntegerField, Q, Sum, Value, When
from django.utils import timezone
from django_q.conf import Conf
from django_q.status import Stat
from redis import RedisError

from .. import units
from ..models import (
    LOST_AFTER_BEATS,
    CloneJob,
    Mirror,
    MirrorState,
    Snapshot,
    SnapshotState,
    Status,
    Watch,
)
from ..pipeline import paths
from .adminlinks import admin_url, job_change_url, job_changelist, user_change_url

WINDOW_DAYS = 30
RECENT_FAILURES = 10
BUSIEST_REPOSITORIES = 10
# More running jobs than this is no longer a list anyone reads; the count is shown above it.
RUNNING_SHOWN = 50
# A due watch no check has begun after this long is overdue: the dispatcher runs every minute,
# and a busy queue may hold a check a little longer.
WATCH_OVERDUE_AFTER = timedelta(minutes=5)

# What became of the jobs of a day. An expired job was done: its archive was made, and deleted
# after its time, so it counts as done, and its duration counts too.
SUCCEEDED = (Status.DONE, Status.EXPIRED)
OUTCOMES = {
    "done": SUCCEEDED,
    "failed": (Status.FAILED,),
    "cancelled": (Status.CANCELLED,),
    "active": (Status.QUEUED, Status.RUNNING),
}


@dataclass(frozen=True)
class StatusCount:
    status: str
    label: str
    jobs: int
    admin_url: str


@dataclass(frozen=True)
class RunningJob:
    id: UUID
    url: str
    owner: str
    running_for: str
    heartbeat_age: str  # how long ago its worker last said it is alive
    silent: bool  # its worker missed LOST_AFTER_BEATS heartbeats: the next sweep takes it back
    admin_url: str


@dataclass(frozen=True)
class Cluster:
    """One django-q2 cluster, as it last reported itself."""

    host: str
    status: str
    workers: int
    reported_age: str


@dataclass(frozen=True)
class Clusters:
    reports: list[Cluster]
    unseen_because: str = ""  # why django-q2's reports cannot be read here, if they cannot


@dataclass(frozen=True)
class Storage:
    archives: int
    archive_bytes: int
    free_bytes: int | None  # on CLONES_DATA_DIR; None if it cannot be read
    admin_url: str


@dataclass(frozen=True)
class WatchFigures:
    total: int
    due: int  # active, due, no check begun
    overdue: int  # of those, due for longer than WATCH_OVERDUE_AFTER
    failing: int  # active, their last checks (or snapshots) failed
    # How late checks began (Watch.last_lag_seconds), over active watches: the 95th percentile.
    lag_p95: float | None
    admin_url: str
    failing_url: str

    @property
    def lag_p95_text(self) -> str:
        return units.human_duration(self.lag_p95)


@dataclass(frozen=True)
class MirrorCache:
    mirrors: int  # ready to serve
    size_bytes: int
    limit_bytes: int
    hits: int  # builds served by a fetch into a mirror, since each mirror was made
    misses: int  # builds that had to make their mirror

    @property
    def hit_rate(self) -> float | None:
        builds = self.hits + self.misses
        return self.hits / builds if builds else None


@dataclass(frozen=True)
class DayJobs:
    day: date
    done: int = 0
    failed: int = 0
    cancelled: int = 0
    active: int = 0

    @property
    def total(self) -> int:
        return self.done + self.failed + self.cancelled + self.active


@dataclass(frozen=True)
class DayDurations:
    """Seconds from start to finish of a day's successful jobs (None: there were none)."""

    day: date
    jobs: int
    median: float | None
    p95: float | None

    @property
    def median_text(self) -> str:
        return units.human_duration(self.median)

    @property
    def p95_text(self) -> str:
        return units.human_duration(self.p95)


@dataclass(frozen=True)
class Failure:
    id: UUID
    url: str
    ref: str
    owner: str
    error: str
    finished_at: datetime
    admin_url: str
    owner_admin_url: str


@dataclass(frozen=True)
class BusyRepository:
    url: str
    jobs: int
    failures: int
    admin_url: str


# --- Now -----------------------------------------------------------------------------------------


def jobs_by_status() -> list[StatusCount]:
    """Every job there is, by status, zeros included, in the order of the lifecycle."""
    rows = CloneJob.objects.order_by().values("status").annotate(jobs=Count("*"))
    counts = {row["status"]: row["jobs"] for row in rows}
    return [
        StatusCount(status, label, counts.get(status, 0), job_changelist(status__exact=status))
        for status, label in Status.choices
    ]


def running_jobs() -> list[RunningJob]:
    now = timezone.now()
    silent_after = settings.CLONES_HEARTBEAT_SECONDS * LOST_AFTER_BEATS
    rows = (
        CloneJob.objects.filter(status=Status.RUNNING)
        .order_by("started_at")
        .values("id", "url", "owner__username", "started_at", "heartbeat_at")[:RUNNING_SHOWN]
    )
    jobs = []
    for row in rows:
        beat_age = units.seconds_since(row["heartbeat_at"], now)
        jobs.append(
            RunningJob(
                id=row["id"],
                url=row["url"],
                owner=row["owner__username"],
                running_for=units.human_age(units.seconds_since(row["started_at"], now)),
                heartbeat_age=units.human_age(beat_age),
                # As the recovery sweep sees it (CloneJob.objects.lost()).
                silent=beat_age is not None and beat_age > silent_after,
                admin_url=job_change_url(row["id"]),
            )
        )
    return jobs


def clusters() -> Clusters:
    """django-q2's own reports of the clusters that run, where this process can see them: with
    the ORM broker they are kept in Django's cache, which is each process's own memory unless
    CACHES names a shared one (Redis keeps them in Redis). Each report lives 3 seconds,
    refreshed while its cluster runs."""
    if not settings.CLONES_REDIS_URL and isinstance(caches[Conf.CACHE], LocMemCache):
        return Clusters(
            [],
            "Cluster details need the Redis queue: with the queue in the "
            "database, each process keeps them to itself.",
        )
    try:
        stats = Stat.get_all()
    except (RedisError, OSError) as exc:
        return Clusters([], f"Cluster details could not be read: {exc}")
    now = timezone.now()
    reports = [
        Cluster(
            host=stat.host,
            status=stat.status,
            workers=len(stat.workers),
            reported_age=units.human_age(units.seconds_since(stat.timestamp, now)),
        )
        for stat in stats
    ]
    return Clusters(reports)


def storage() -> Storage:
    totals = Snapshot.objects.filter(state=SnapshotState.READY).aggregate(
        archives=Count("*"), archive_bytes=Sum("archive_size")
    )
    try:
        free = paths.free_bytes()
    except OSError:
        free = None
    return Storage(
        archives=totals["archives"],
        archive_bytes=totals["archive_bytes"] or 0,
        free_bytes=free,
        admin_url=admin_url("admin:clones_snapshot_changelist", state__exact=SnapshotState.READY),
    )


def watch_counts(watches) -> dict[str, int]:
    """How many of `watches` (a Watch queryset) there are, and are due, overdue and failing,
    each by its queryset's own definition, in one query: the dashboard's, and a person's on
    their history page."""
    now = timezone.now()
    due = watches.due(now)
    overdue = due.filter(next_check_at__lt=now - WATCH_OVERDUE_AFTER)
    return watches.aggregate(
        total=Count("pk"),
        due=Count("pk", filter=Q(pk__in=due.values("pk"))),
        overdue=Count("pk", filter=Q(pk__in=overdue.values("pk"))),
        failing=Count("pk", filter=Q(pk__in=watches.failing().values("pk"))),
    )


def watches() -> WatchFigures:
    """Two queries: the counts (watch_counts), and the lags."""
    counts = watch_counts(Watch.objects.all())
    lags = sorted(
        Watch.objects.filter(active=True, last_lag_seconds__isnull=False).values_list(
            "last_lag_seconds", flat=True
        )
    )
    return WatchFigures(
        **counts,
        lag_p95=percentile(lags, 0.95) if lags else None,
        admin_url=admin_url("admin:clones_watch_changelist"),
        failing_url=admin_url("admin:clones_watch_changelist", failing="yes"),
    )


def mirror_cache() -> MirrorCache:
    """The mirrors on the data volume (clones.pipeline.mirrors): their size and how often a
    build found its mirror there."""
    totals = Mirror.objects.aggregate(
        mirrors=Count("pk", filter=Q(state=MirrorState.READY)),
        size_bytes=Sum("size_bytes", filter=Q(state=MirrorState.READY)),
        hits=Sum("hits"),
        misses=Sum("misses"),
    )
    return MirrorCache(
        mirrors=totals["mirrors"],
        size_bytes=totals["size_bytes"] or 0,
        limit_bytes=settings.CLONES_MIRROR_MAX_BYTES,
        hits=totals["hits"] or 0,
        misses=totals["misses"] or 0,
    )


# --- The last 30 days ----------------------------------------------------------------------------


def day_starts(days: int = WINDOW_DAYS) -> list[datetime]:
    """Midnight in the site's time zone of each of the last `days` days, today's last."""
    today, zone = timezone.localdate(), timezone.get_current_timezone()
    return [
        datetime.combine(today - timedelta(days=back), time.min, tzinfo=zone)
        for back in range(days - 1, -1, -1)
    ]


def day_index(
    field: str, starts: list[datetime], first: int = 0, last: int | None = None
) -> Case | Value:
    """Which of `starts`' days `field` falls on (0 for the first), computed by the database as
    nested CASEs that halve the days at each level: five comparisons a row for 30 days, where
    one WHEN a day took fifteen on average (twice the time on SQLite at 100,000 jobs)."""
    last = len(starts) - 1 if last is None else last
    if first == last:
        return Value(first)
    middle = (first + last + 1) // 2
    later = When(**{f"{field}__gte": starts[middle]}, then=day_index(field, starts, middle, last))
    earlier = day_index(field, starts, first, middle - 1)
    return Case(later, default=earlier, output_field=IntegerField())


class SecondsBetween(Func):
    """From `start` to `end` in seconds, as a float the database computes: no datetime of a row
    is parsed in Python. For SQLite and PostgreSQL, the databases cloneshelf runs on."""

    output_field = FloatField()

    def __init__(self, start: str, end: str):
        super().__init__(end, start)

    def as_sqlite(self, compiler, connection, **extra):
        template = "ROUND((julianday(%(expressions)s)) * 86400.0, 3)"
        return self.as_sql(
            compiler, connection, template=template, arg_joiner=") - julianday(", **extra
        )

    def as_postgresql(self, compiler, connection, **extra):
        template = "EXTRACT(EPOCH FROM %(expressions)s)::double precision"
        return self.as_sql(compiler, connection, template=template, arg_joiner=" - ", **extra)


def jobs_per_day(starts: list[datetime]) -> list[DayJobs]:
    """The jobs submitted on each day, by what became of them."""
    # Grouped by day alone: grouped by status too, SQLite walks a status index through every
    # job, not the last 30 days' range of the created_at index.
    outcomes = {
        outcome: Count("status", filter=Q(status__in=statuses))
        for outcome, statuses in OUTCOMES.items()
    }
    rows = (
        CloneJob.objects.filter(created_at__gte=starts[0])
        .annotate(day=day_index("created_at", starts))
        .order_by()
        .values("day")
        .annotate(**outcomes)
    )
    by_day = {row.pop("day"): row for row in rows}
    return [DayJobs(start.date(), **by_day.get(index, {})) for index, start in enumerate(starts)]


def durations_per_day(starts: list[datetime]) -> tuple[list[DayDurations], DayDurations]:
    """Median and 95th percentile of the clone time of each day's successful jobs, by the day
    they were submitted, and of all of them together (its `day` is the first day). Jobs that
    only waited for an identical one have no start and are left out."""
    query = (
        CloneJob.objects.filter(
            status__in=SUCCEEDED,
            created_at__gte=starts[0],
            started_at__isnull=False,
            finished_at__isnull=False,
        )
        .annotate(
            day=day_index("created_at", starts), seconds=SecondsBetween("started_at", "finished_at")
        )
        .order_by()
        .values_list("day", "seconds")
    )
    # The ORM writes the query; its rows are read as the driver gives them (an int and a
    # float): Django's converters, called for every value, took as long as the query itself.
    with connection.cursor() as cursor:
        cursor.execute(*query.query.sql_with_params())
        rows = cursor.fetchall()
    by_day: dict[int, list[float]] = defaultdict(list)
    for day, seconds in rows:
        by_day[day].append(seconds)
    days = [summarise(start.date(), by_day[index]) for index, start in enumerate(starts)]
    every = [seconds for durations in by_day.values() for seconds in durations]
    return days, summarise(starts[0].date(), every)


def summarise(day: date, durations: list[float]) -> DayDurations:
    if not durations:
        return DayDurations(day, 0, None, None)
    ordered = sorted(durations)
    return DayDurations(day, len(ordered), percentile(ordered, 0.5), percentile(ordered, 0.95))


def percentile(ordered: list[float], fraction: float) -> float:
    """Interpolated between the nearest ranks, as PostgreSQL's percentile_cont."""
    position = (len(ordered) - 1) * fraction
    below = math.floor(position)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (position - below)


def recent_failures(limit: int = RECENT_FAILURES) -> list[Failure]:
    # Every failed job has finished_at; asking for it keeps PostgreSQL, which sorts NULLs first
    # in descending order, from putting one that had not at the top.
    rows = (
        CloneJob.objects.filter(status=Status.FAILED, finished_at__isnull=False)
        .order_by("-finished_at")
        .values("id", "url", "ref", "owner_id", "owner__username", "error", "finished_at")[:limit]
    )
    return [
        Failure(
            id=row["id"],
            url=row["url"],
            ref=row["ref"],
            owner=row["owner__username"],
            error=row["error"],
            finished_at=row["finished_at"],
            admin_url=job_change_url(row["id"]),
            owner_admin_url=user_change_url(row["owner_id"]),
        )
        for row in rows
    ]


def busiest_repositories(
    since: datetime, limit: int = BUSIEST_REPOSITORIES
) -> list[BusyRepository]:
    """The URLs asked for most since `since`, as submitted (not normalized)."""
    rows = (
        CloneJob.objects.filter(created_at__gte=since)
        .values("url")
        .annotate(jobs=Count("*"), failures=Count("pk", filter=Q(status=Status.FAILED)))
        .order_by("-jobs", "url")[:limit]
    )
    return [
        BusyRepository(row["url"], row["jobs"], row["failures"], job_changelist(url=row["url"]))
        for row in rows
    ]
