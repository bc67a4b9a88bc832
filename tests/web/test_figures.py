"""The staff dashboard's figures, as queries against crafted jobs (the page that shows them:
test_dashboard.py)."""

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from clones.models import Snapshot, SnapshotState, Status
from clones.web import figures

from ..support.helpers import make_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


def test_storage_used_by_ready_archives(db):
    for state, size in [
        (SnapshotState.READY, 1000),
        (SnapshotState.READY, 2048),
        (SnapshotState.DELETED, 10**9),
        (SnapshotState.BUILDING, None),
    ]:
        Snapshot.objects.create(
            url="https://example.com/a", commit="a" * 40, history="full", archive_format="tar",
            state=state, archive_size=size,
        )  # fmt: skip

    storage = figures.storage()

    assert (storage.archives, storage.archive_bytes) == (2, 3048)
    assert storage.free_bytes > 0


@pytest.mark.skipif(connection.vendor != "postgresql", reason="percentile_cont is PostgreSQL's")
def test_the_percentiles_are_postgresql_own(owner):
    for seconds in [1.5, 3, 7, 7, 12.25, 60, 61, 400]:
        make_job(owner, status=Status.DONE, seconds=seconds)

    _days, overall = figures.durations_per_day(figures.day_starts())

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP "
            "(ORDER BY EXTRACT(EPOCH FROM finished_at - started_at)) FROM clones_clonejob"
        )
        median, p95 = cursor.fetchone()[0]
    assert (overall.median, overall.p95) == (pytest.approx(median), pytest.approx(p95))


def test_jobs_per_day_by_outcome_in_the_site_time_zone(owner, settings):
    settings.TIME_ZONE = "Pacific/Auckland"  # far from UTC: its days start at another hour
    starts = figures.day_starts()
    yesterday_late = starts[-1] - timedelta(minutes=1)
    make_job(owner, status=Status.DONE, ago=timezone.now() - yesterday_late)
    make_job(owner, status=Status.EXPIRED, ago=timezone.now() - yesterday_late)  # was done
    make_job(owner, status=Status.FAILED, ago=timezone.now() - starts[-1])
    make_job(owner, status=Status.QUEUED, ago=timedelta(0))
    make_job(owner, status=Status.CANCELLED, ago=timezone.now() - starts[0])
    make_job(owner, status=Status.DONE, ago=timezone.now() - starts[0] + timedelta(seconds=1))

    days = figures.jobs_per_day(starts)

    assert len(days) == 30 and days[-1].day == timezone.localdate()
    assert (days[-2].done, days[-2].total) == (2, 2)
    assert (days[-1].failed, days[-1].active, days[-1].total) == (1, 1, 2)
    assert (days[0].cancelled, days[0].total) == (1, 1)
    assert sum(day.total for day in days) == 5


def test_busiest_repositories_of_the_last_30_days(owner):
    for url, jobs, failed in [("https://a.example/x", 3, 1), ("https://b.example/y", 5, 0)]:
        for number in range(jobs):
            make_job(owner, url=url, status=Status.FAILED if number < failed else Status.DONE)
    for _ in range(9):
        make_job(owner, url="https://old.example/z", ago=timedelta(days=45))

    busiest = figures.busiest_repositories(figures.day_starts()[0])

    assert [(r.url, r.jobs, r.failures) for r in busiest] == [
        ("https://b.example/y", 5, 0),
        ("https://a.example/x", 3, 1),
    ]
    assert busiest[0].admin_url.endswith("?url=https%3A%2F%2Fb.example%2Fy")


def test_percentiles_interpolate_as_postgresql_does():
    assert figures.percentile([5.0], 0.95) == 5
    assert figures.percentile([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert figures.percentile([10.0, 20.0, 30.0, 40.0, 100.0], 0.95) == pytest.approx(88)
