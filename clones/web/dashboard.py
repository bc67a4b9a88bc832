"""The staff dashboard at /dashboard/: the page and its charts, from the figures
(clones.web.figures), health's checks (clones.ops.health) and the admin links the user may open
(clones.web.adminlinks).

Nothing is cached: staff open this page when something is wrong, and then a queue depth or an
engine state from a minute ago would mislead; at 100,000 jobs the whole page takes about
130 ms on SQLite and 100 ms on PostgreSQL.
"""

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.utils.safestring import SafeString
from django.views.decorators.cache import never_cache

from .. import units
from ..models import Status
from ..ops import health
from . import charts, figures
from .adminlinks import JOBS_PERMISSION, job_changelist, links_for
from .figures import DayDurations, DayJobs

# --- Charts --------------------------------------------------------------------------------------

# Both charts count a job on the day it was submitted.
DAYS_ARE = "Day submitted"
# What became of a day's jobs, as the chart and its table name and colour them.
OUTCOME_LEGEND = {
    "done": ("Done", "#2457c5"),
    "failed": ("Failed", "#b54708"),
    "cancelled": ("Cancelled", "#5b6570"),
    "active": ("Queued or running", "#1d232a"),
}


def jobs_chart(days: list[DayJobs]) -> SafeString:
    series = [
        charts.Series(label, colour, [getattr(day, outcome) for day in days])
        for outcome, (label, colour) in OUTCOME_LEGEND.items()
    ]
    dates = [day.day for day in days]
    chart = charts.Chart("jobs-chart", "Jobs per day", dates, series, charts.JOBS, DAYS_ARE)
    return charts.stacked_bars(chart)


def durations_chart(days: list[DayDurations]) -> SafeString:
    longest = max((day.p95 for day in days if day.p95 is not None), default=0)
    series = [
        charts.Series("Median", "#2457c5", [day.median for day in days]),
        charts.Series("95th percentile", "#b54708", [day.p95 for day in days]),
    ]
    title = "Clone time of successful jobs per day"
    unit = charts.time_unit(longest)
    dates = [day.day for day in days]
    return charts.lines(charts.Chart("durations-chart", title, dates, series, unit, DAYS_ARE))


# --- The page ------------------------------------------------------------------------------------


def worker_late(worker: dict) -> str | None:
    """How late the recovery sweep is, if later than one pass of django-q2's scheduler (every
    30 s): up to that it is on time."""
    overdue = worker.get("overdue_seconds") or 0
    return units.human_age(overdue) if overdue > 30 else None


def context() -> dict:
    """Everything the page shows, as plain data."""
    starts = figures.day_starts()
    days = figures.jobs_per_day(starts)
    durations, overall = figures.durations_per_day(starts)
    queue, worker, engine = health.check_queue(), health.check_worker(), health.check_engine()
    return {
        "now": timezone.now(),
        "statuses": figures.jobs_by_status(),
        "queue": queue,
        "oldest_queued_age": units.human_age(queue["oldest_queued_seconds"]),
        "running": figures.running_jobs(),
        "worker": worker,
        "worker_late": worker_late(worker),
        "clusters": figures.clusters(),
        "engine": engine,
        "engine_reported_age": units.human_age(engine.get("reported_seconds_ago")),
        "storage": figures.storage(),
        "watches": figures.watches(),
        "mirrors": figures.mirror_cache(),
        "overdue_after": units.human_age(figures.WATCH_OVERDUE_AFTER.total_seconds()),
        "days": days,
        "jobs_in_window": sum(day.total for day in days),
        "durations": durations,
        "overall_duration": overall,
        "failures": figures.recent_failures(),
        "busiest": figures.busiest_repositories(starts[0]),
        "queued_url": job_changelist(status__exact=Status.QUEUED),
        "running_url": job_changelist(status__exact=Status.RUNNING),
    }


@never_cache
@login_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Staff who may view jobs only; anyone else logged in gets the 404 of a page that does not
    exist. Its links into the admin are those the user may open (the template asks `perms` for
    the ones inside its sections)."""
    if not (request.user.is_staff and request.user.has_perm(JOBS_PERMISSION)):
        raise Http404
    page = context()
    page["admin_links"] = links_for(request.user)
    # No chart for no data: the page says so in words instead.
    if page["jobs_in_window"]:
        page["jobs_chart"] = jobs_chart(page["days"])
    if page["overall_duration"].jobs:
        page["durations_chart"] = durations_chart(page["durations"])
    return render(request, "clones/dashboard.html", page)
