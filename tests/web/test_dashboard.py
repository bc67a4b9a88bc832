"""The staff dashboard's page: who may see it, what it shows of crafted jobs (the figures' own
queries: test_figures.py), its charts as well-formed SVG, the empty state, and a number of
queries that does not grow with the jobs."""

import re
import xml.etree.ElementTree as ET
from datetime import date, timedelta
from types import SimpleNamespace

import pytest
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule
from django_q.status import Stat
from redis import RedisError

from clones import queue
from clones.models import CloneJob, Snapshot, SnapshotState, Status, WorkerReport
from clones.web import charts

from ..support.helpers import make_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

DASHBOARD = reverse("clones:dashboard")
SVG = re.compile(r"<svg\b.*?</svg>", re.DOTALL)
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture
def staff_client(client, staff):
    client.force_login(staff)
    return client


def page_of(client) -> str:
    return client.get(DASHBOARD).content.decode()


def svgs(page: str) -> list[ET.Element]:
    """Every inline chart, parsed as XML: a chart that is not well-formed fails here."""
    return [ET.fromstring(markup) for markup in SVG.findall(page)]


# --- Who sees it ---------------------------------------------------------------------------------


def test_anonymous_visitors_are_sent_to_log_in(client):
    response = client.get(DASHBOARD)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={DASHBOARD}"


@pytest.mark.parametrize(
    ("is_staff", "permission"),
    [(False, "view_clonejob"), (True, "view_user")],
    ids=["not staff", "staff who may not view jobs"],
)
def test_others_get_404_and_no_link_to_it(client, django_user_model, is_staff, permission):
    user = django_user_model.objects.create_user("someone", is_staff=is_staff)
    user.user_permissions.set(Permission.objects.filter(codename=permission))
    client.force_login(user)
    assert client.get(DASHBOARD).status_code == 404
    assert DASHBOARD not in client.get(reverse("clones:history")).content.decode()


def test_staff_who_may_view_jobs_see_only_the_admin_links_they_may_open(client, django_user_model):
    user = django_user_model.objects.create_user("watcher", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="view_clonejob"))
    failed = make_job(user, status=Status.FAILED, finished_at=timezone.now(), error="it broke")
    Snapshot.objects.create(
        url="https://example.com/a", commit="a" * 40, history="full", archive_format="tar",
        state=SnapshotState.READY, archive_size=1000,
    )  # fmt: skip
    client.force_login(user)

    response = client.get(DASHBOARD)
    page = response.content.decode()

    assert response.status_code == 200
    assert [label for label, _ in response.context["admin_links"]] == [
        "All jobs",
        "Failed jobs",
        "Queued jobs",
        "Running jobs",
    ]
    assert "1 archive ready" in page and "it broke" in page
    for closed in [
        "admin:clones_snapshot_changelist",
        "admin:django_q_schedule_changelist",
        "admin:django_q_failure_changelist",
        "admin:auth_user_changelist",  # and the owners' pages under it
    ]:
        assert reverse(closed) not in page
    assert reverse("admin:clones_clonejob_change", args=[failed.id]) in page


def test_staff_find_it_in_the_navigation_and_it_is_never_cached(staff_client):
    assert f'href="{DASHBOARD}"' in staff_client.get(reverse("clones:history")).content.decode()
    response = staff_client.get(DASHBOARD)
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]


# --- What it shows -------------------------------------------------------------------------------


def test_counts_by_status_and_the_queue(staff_client, owner):
    make_job(owner, status=Status.QUEUED, ago=timedelta(minutes=5))
    make_job(owner, status=Status.QUEUED, ago=timedelta(minutes=1))
    make_job(owner, status=Status.DONE, seconds=10)
    make_job(owner, status=Status.FAILED, error="no", seconds=1)
    make_job(owner, status=Status.EXPIRED, seconds=10, ago=timedelta(days=40))  # counted here too

    response = staff_client.get(DASHBOARD)

    counts = {count.status: count.jobs for count in response.context["statuses"]}
    assert counts == {
        "queued": 2,
        "running": 0,
        "done": 1,
        "failed": 1,
        "expired": 1,
        "cancelled": 0,
    }
    queue = response.context["queue"]
    assert (queue["queued"], queue["running"]) == (2, 0)
    assert 299 <= queue["oldest_queued_seconds"] <= 302
    page = response.content.decode()
    assert "2 queued" in page and "The oldest has waited 5 min" in page
    assert "/admin/clones/clonejob/?status__exact=failed" in page


def test_running_jobs_with_their_heartbeat(staff_client, owner):
    now = timezone.now()
    make_job(owner, status=Status.RUNNING, started_at=now, heartbeat_at=now)
    make_job(
        owner,
        url="https://example.com/team/stuck.git",
        status=Status.RUNNING,
        started_at=now - timedelta(minutes=3),
        heartbeat_at=now - timedelta(minutes=2),
    )

    response = staff_client.get(DASHBOARD)

    running = response.context["running"]
    assert [job.url.rsplit("/", 1)[-1] for job in running] == ["stuck.git", "app.git"]
    assert [job.silent for job in running] == [True, False]
    assert "2 min ago" in response.content.decode()
    assert "the next sweep takes it back" in response.content.decode()


def test_the_engine_state_and_the_workers_as_health_sees_them(staff_client):
    WorkerReport.objects.create(
        pk=1, reported_at=timezone.now(), engine_ok=False, engine_error="The engine is gone."
    )
    recovery = Schedule.objects.filter(name=queue.RECOVERY_SCHEDULE)
    recovery.update(next_run=timezone.now() - timedelta(minutes=10))

    page = page_of(staff_client)

    assert "Unreachable" in page and "The engine is gone." in page
    assert "None seen" in page and "The recovery sweep is 600 s overdue" in page
    # The ORM broker keeps django-q2's cluster reports in each process's own memory.
    assert "Cluster details need the Redis queue" in page

    recovery.update(next_run=timezone.now())
    assert "The recovery sweep is on time." in page_of(staff_client)


def test_django_q2_cluster_reports_where_they_can_be_read(staff_client, settings, monkeypatch):
    settings.CLONES_REDIS_URL = "redis://127.0.0.1:1/0"  # reports kept in Redis, for all to read
    report = SimpleNamespace(
        host="worker-a", status="Idle", workers=[7, 8], timestamp=timezone.now()
    )
    monkeypatch.setattr(Stat, "get_all", lambda: [report])
    assert "worker-a: 2 worker processes, idle, reported 0 s ago" in page_of(staff_client)

    def unreachable():
        raise RedisError("Connection refused.")

    monkeypatch.setattr(Stat, "get_all", unreachable)
    assert "Cluster details could not be read: Connection refused." in page_of(staff_client)


def earlier_today() -> timedelta:
    """How long before now a job of today's was submitted: an hour ago, or less just after
    midnight (UTC), when an hour ago was yesterday."""
    now = timezone.now()
    since_midnight = now - now.replace(hour=0, minute=0, second=0, microsecond=0)
    return min(timedelta(hours=1), since_midnight / 2)


def test_median_and_95th_percentile_of_successful_jobs(staff_client, owner):
    today = earlier_today()
    for seconds in [10, 20, 30, 40, 100]:
        make_job(owner, status=Status.DONE, seconds=seconds, ago=today)
    make_job(owner, status=Status.EXPIRED, seconds=50, ago=timedelta(days=2))  # was done
    make_job(owner, status=Status.FAILED, seconds=9999, ago=today)  # not a success
    make_job(owner, status=Status.DONE, ago=today)  # waited for an identical job: no time
    make_job(owner, status=Status.DONE, seconds=9999, ago=timedelta(days=31))  # too old

    response = staff_client.get(DASHBOARD)

    overall = response.context["overall_duration"]
    # 10 20 30 40 50 100: median between 30 and 40; p95 at rank 4.75, between 50 and 100.
    assert (overall.jobs, overall.median, overall.p95) == (6, 35, pytest.approx(87.5))
    days = response.context["durations"]
    today = days[-1]
    assert (today.jobs, today.median, today.p95) == (5, 30, pytest.approx(88))
    assert days[-3].median == days[-3].p95 == pytest.approx(50)
    assert "median 35 s, 95th percentile 1 min 28 s" in response.content.decode()


def test_recent_failures_newest_first_with_their_reasons(staff_client, owner):
    for number in range(12):
        make_job(
            owner,
            url=f"https://example.com/team/broken-{number}.git",
            status=Status.FAILED,
            error=f"Reason number {number}.",
            seconds=1,
            ago=timedelta(hours=12 - number),
        )

    response = staff_client.get(DASHBOARD)

    failures = response.context["failures"]
    assert [failure.error for failure in failures] == [
        f"Reason number {n}." for n in range(11, 1, -1)
    ]
    page = response.content.decode()
    assert "Reason number 11." in page and "Reason number 1." not in page
    job = CloneJob.objects.get(url__endswith="broken-11.git")
    assert reverse("admin:clones_clonejob_change", args=[job.id]) in page
    assert reverse("admin:auth_user_change", args=[owner.id]) in page


def test_both_charts_are_well_formed_accessible_svg(staff_client, owner):
    make_job(owner, status=Status.DONE, seconds=30)
    make_job(owner, status=Status.FAILED, seconds=2, ago=timedelta(days=3))

    page = staff_client.get(DASHBOARD).content.decode()

    charts_found = svgs(page)
    assert len(charts_found) == 2
    for svg in charts_found:
        assert svg.get("role") == "img" and svg.get("viewBox") == "0 0 560 300"
        title, desc = svg.find(f"{SVG_NS}title"), svg.find(f"{SVG_NS}desc")
        assert svg.get("aria-labelledby") == f"{title.get('id')} {desc.get('id')}"
        assert desc.text
    assert "In all 2 jobs: 1 done, 1 failed, 0 cancelled, 0 queued or running" in page
    assert "Jobs per day as a table" in page and "Clone time per day as a table" in page


def test_an_empty_database_says_so_instead_of_drawing(staff_client):
    page = staff_client.get(DASHBOARD).content.decode()
    assert "No jobs in the last 30 days." in page
    assert "<svg" not in page
    assert "No job has failed." in page and "No job is running." in page


def test_the_number_of_queries_does_not_grow_with_the_jobs(
    staff_client, owner, django_assert_max_num_queries
):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert staff_client.get(DASHBOARD).status_code == 200
        return len(captured)

    make_job(owner, status=Status.DONE, seconds=3)
    few = queries()
    for number in range(30):
        make_job(
            owner,
            url=f"https://example.com/{number % 7}.git",
            status=[Status.DONE, Status.FAILED, Status.RUNNING, Status.QUEUED][number % 4],
            seconds=number,
            error="no",
            ago=timedelta(days=number, minutes=number),
        )
    assert queries() == few
    # The session and its user, and one query for each figure but the cluster reports (two
    # for the watches: their counts and their check lags).
    with django_assert_max_num_queries(15):
        staff_client.get(DASHBOARD)


# --- The chart functions -------------------------------------------------------------------------


DAYS = [date(2026, 11, 1) + timedelta(days=n) for n in range(30)]


def test_a_stacked_bar_is_as_tall_as_its_day_with_a_segment_for_each_series():
    series = [
        charts.Series("Done", "#000", [0] * 29 + [3]),
        charts.Series("Failed", "#111", [0] * 29 + [1]),
    ]
    svg = ET.fromstring(charts.stacked_bars(charts.Chart("c", "T", DAYS, series, charts.JOBS)))
    segments = [r for r in svg.findall(f"{SVG_NS}rect") if r.find(f"{SVG_NS}title") is not None]
    assert [rect.find(f"{SVG_NS}title").text for rect in segments] == [
        "30 Nov: 3 done",
        "30 Nov: 1 failed",
    ]
    heights = [float(rect.get("height")) for rect in segments]
    assert heights[0] == pytest.approx(3 * heights[1])
    assert sum(heights) == pytest.approx(charts.BOTTOM - charts.TOP)  # 4 jobs, the axis's top


def median_line(values: list) -> str:
    median = charts.Series("Median", "#000", values)
    return charts.lines(charts.Chart("c", "T", DAYS, [median], charts.Unit("s")))


def test_a_line_with_a_single_day_still_shows_a_marker():
    values = [None] * 29 + [42.0]
    svg = ET.fromstring(median_line(values))
    assert len(svg.findall(f"{SVG_NS}circle")) == 2  # the legend's and the day's
    assert "from 42 to 42 s over 1 day." in svg.find(f"{SVG_NS}desc").text


def test_a_line_breaks_where_a_day_has_no_value():
    values = [1.0, 2.0, None, 4.0] + [None] * 26
    svg = ET.fromstring(median_line(values))
    assert svg.find(f"{SVG_NS}path").get("d").count("M") == 2


def test_the_axis_ends_on_a_round_number():
    assert charts.nice_top(0, charts.JOBS) == 4
    assert charts.nice_top(3, charts.JOBS) == 4
    assert charts.nice_top(37, charts.JOBS) == 40
    assert charts.nice_top(130, charts.JOBS) == 200
    assert charts.nice_top(150, charts.Unit("minutes", 60)) == 240  # 4 minutes
