"""Benchmark: the staff dashboard's queries and its whole page at 100,000 jobs.

    .venv/bin/python scripts/bench_dashboard.py [--jobs 100000] [--days 60] [--repos 3000]
        [--runs 7] [--explain] [--without-indexes]

On PostgreSQL: CLONESHELF_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:55432/postgres in the
environment; the script creates a database of its own there and drops it at the end (SQLite:
a file in a temporary directory, removed at the end). No engine, no worker.

Fills the database with JOBS jobs submitted over DAYS days by 500 users, asking for REPOS
repositories with a skewed popularity (a few are asked for thousands of times, most a handful):
about 81% done (expired once older than the archive TTL; 5% of them waited for an identical
job and have no start), 12% failed with a reason and some of git's output, 5% cancelled, a
few queued and running now; clone times log-normal around 20 s; a snapshot for most successful
jobs, ready while their archive lives. Then ANALYZE (autovacuum's and the planner's view of a
database in use), and times each figure of clones.web.figures and GET /dashboard/ as a logged-in
staff member: the median of RUNS runs after one warm-up, with its number of queries.
`--explain` prints each query's plan; `--without-indexes` drops the indexes that migration
0009_dashboard_indexes adds before timing, to see what they are for. A script, not a test: it
asserts nothing.
"""

import argparse
import contextlib
import importlib
import math
import random
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

import harness

ROOT = harness.setup_django("cloneshelf-dashboard-")

from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.urls import reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from clones.models import CloneJob, Snapshot, SnapshotState, Status  # noqa: E402
from clones.ops import health  # noqa: E402
from clones.web import dashboard, figures  # noqa: E402

USERS = 500
BATCH = 5000
REASONS = [
    "The repository was not found, or it needs an access token: git said 'not found'.",
    "The clone took longer than 1800 seconds and was stopped.",
    "The repository is larger than 2 GiB (CLONES_MAX_REPO_BYTES) and was not kept.",
    "The branch 'main' moved while it was cloned; ask again.",
    "The server's disk is full.",
]
GIT_OUTPUT = "remote: Counting objects: 100% (4242/4242), done.\n" * 40  # about 2 KB


def populate(jobs: int, days: int, repos: int) -> None:
    rng = random.Random(11)
    owners = make_owners()
    urls = [f"https://git.example.com/team-{n % 97}/project-{n}.git" for n in range(repos)]
    # Zipf-like popularity: the n-th repository is asked for about 1/n^1.1 as often as the first.
    weights = [1 / (rank + 1) ** 1.1 for rank in range(repos)]
    now = timezone.now()
    ttl = timedelta(hours=settings.CLONES_ARCHIVE_TTL_HOURS)
    # Oldest first, as jobs arrive: rows lie in the table in the order they were submitted.
    ages = sorted((rng.uniform(0, days * 86400) for _ in range(jobs)), reverse=True)
    batch_jobs, batch_snapshots = [], []
    for url, owner, age in zip(
        rng.choices(urls, weights, k=jobs), rng.choices(owners, k=jobs), ages, strict=True
    ):
        created = now - timedelta(seconds=age)
        job, snapshot = make_job(rng, url, owner, created, now, ttl)
        batch_jobs.append(job)
        if snapshot:
            batch_snapshots.append(snapshot)
        if len(batch_jobs) == BATCH:
            save(batch_snapshots, batch_jobs)
            batch_jobs, batch_snapshots = [], []
    save(batch_snapshots, batch_jobs)
    add_active_jobs(rng, urls, owners, now)
    analyze()


def make_owners() -> list:
    users = [get_user_model()(username=f"user-{n}") for n in range(USERS)]
    return get_user_model().objects.bulk_create(users)


def make_job(rng: random.Random, url: str, owner, created, now, ttl):
    """One finished job submitted at `created`, and the snapshot it made, if it made one."""
    started = created + timedelta(seconds=rng.lognormvariate(0.5, 1))
    finished = started + timedelta(seconds=rng.lognormvariate(math.log(20), 0.9))
    job = CloneJob(
        id=uuid.uuid4(), owner=owner, url=url, created_at=created, started_at=started,
        finished_at=finished, attempts=1,
    )  # fmt: skip
    roll = rng.random()
    if roll < 0.12:
        job.status, job.error, job.git_output = Status.FAILED, rng.choice(REASONS), GIT_OUTPUT
        return job, None
    if roll < 0.17:
        job.status = Status.CANCELLED
        return job, None
    expired = finished + ttl < now
    job.status = Status.EXPIRED if expired else Status.DONE
    job.commit = f"{rng.getrandbits(160):040x}"
    job.archive_size = int(rng.lognormvariate(math.log(20 * 2**20), 1.5))
    job.expires_at = finished + ttl
    if roll < 0.21:
        job.started_at = None  # it waited for an identical job, and shares its snapshot
        return job, None
    state = SnapshotState.DELETED if expired else SnapshotState.READY
    snapshot = Snapshot(
        key=uuid.uuid4().hex, url=url, commit=job.commit, history="full", archive_format="tar",
        state=state, archive_size=job.archive_size, created_at=started, ready_at=finished,
        expires_at=job.expires_at,
    )  # fmt: skip
    job.snapshot = snapshot
    return job, snapshot


def add_active_jobs(rng: random.Random, urls: list[str], owners: list, now) -> None:
    """A queue of 40 and 4 running, as on a busy afternoon."""
    active = [
        CloneJob(
            owner=rng.choice(owners), url=rng.choice(urls), created_at=now - timedelta(seconds=s)
        )
        for s in range(0, 400, 10)
    ]
    for job in active[:4]:
        job.status, job.started_at, job.heartbeat_at = Status.RUNNING, job.created_at, now
    CloneJob.objects.bulk_create(active)


def save(snapshots: list[Snapshot], jobs: list[CloneJob]) -> None:
    Snapshot.objects.bulk_create(snapshots)
    CloneJob.objects.bulk_create(jobs)


def analyze() -> None:
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    if connection.vendor == "postgresql":
        # Autovacuum's work on a database in use: the visibility map index-only scans need.
        with connection.cursor() as cursor:
            cursor.execute("VACUUM clones_clonejob")
            cursor.execute("VACUUM clones_snapshot")


def drop_dashboard_indexes() -> None:
    migration = importlib.import_module("clones.migrations.0009_dashboard_indexes").Migration
    with connection.schema_editor() as editor:
        for operation in migration.operations:
            editor.remove_index(CloneJob, operation.index)
    analyze()


def figures_to_time() -> dict[str, Callable[[], object]]:
    starts = figures.day_starts()
    return {
        "jobs by status": figures.jobs_by_status,
        "queue (health.check_queue)": health.check_queue,
        "running jobs": figures.running_jobs,
        "worker (health.check_worker)": health.check_worker,
        "clusters (django-q2 Stat)": figures.clusters,
        "engine (health.check_engine)": health.check_engine,
        "storage": figures.storage,
        "jobs per day, 30 days": lambda: figures.jobs_per_day(starts),
        "clone time per day, 30 days": lambda: figures.durations_per_day(starts),
        "recent failures": figures.recent_failures,
        "busiest repositories": lambda: figures.busiest_repositories(starts[0]),
        "all figures (dashboard.context())": dashboard.context,
    }


def timed(action: Callable[[], object], runs: int) -> tuple[float, int]:
    """Median milliseconds of `runs` runs after a warm-up, and the queries of one run."""
    action()
    times = []
    for _ in range(runs):
        with CaptureQueriesContext(connection) as queries:
            started = time.perf_counter()
            action()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(queries)


def page_request() -> Callable[[], object]:
    staff = get_user_model().objects.create_superuser("bench-staff")
    client = Client(HTTP_HOST="localhost")
    client.force_login(staff)
    url = reverse("clones:dashboard")

    def get():
        response = client.get(url)
        assert response.status_code == 200, response.status_code

    return get


def explain(label: str, action: Callable[[], object]) -> None:
    with CaptureQueriesContext(connection) as queries:
        action()
    for query in queries.captured_queries:
        with connection.cursor() as cursor:
            prefix = "EXPLAIN QUERY PLAN" if connection.vendor == "sqlite" else "EXPLAIN"
            cursor.execute(f"{prefix} {query['sql']}")
            plan = "\n    ".join(" ".join(map(str, row)) for row in cursor.fetchall())
        print(f"-- {label}\n    {plan}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--repos", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--explain", action="store_true", help="print each query's plan")
    parser.add_argument("--without-indexes", action="store_true", help="drop 0009's indexes")
    options = parser.parse_args()

    with contextlib.ExitStack() as cleanup:
        cleanup.callback(harness.remove, ROOT)
        harness.migrate()
        cleanup.callback(harness.drop_database)
        started = time.perf_counter()
        populate(options.jobs, options.days, options.repos)
        if options.without_indexes:
            drop_dashboard_indexes()
        total = CloneJob.objects.count()
        print(
            f"{connection.vendor}: {total:,} jobs, {Snapshot.objects.count():,} snapshots over "
            f"{options.days} days, made in {time.perf_counter() - started:.0f} s"
        )
        print(f"\n{'figure':<32} {'median ms':>10} {'queries':>8}")
        steps = {**figures_to_time(), "GET /dashboard/ (whole page)": page_request()}
        for label, action in steps.items():
            milliseconds, queries = timed(action, options.runs)
            print(f"{label:<32} {milliseconds:>10.1f} {queries:>8}")
        if options.explain:
            print()
            for label, action in figures_to_time().items():
                if not label.startswith("all figures"):
                    explain(label, action)


if __name__ == "__main__":
    main()
