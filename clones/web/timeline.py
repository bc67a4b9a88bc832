"""A watch's timeline (/watches/<id>/): its snapshots, the commits between two of them, and its
charts of archive size and commits over time.

Commit subjects come from the repository: untrusted text, shown only through the templates'
autoescaping (never marked safe here or there).
"""

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from django import forms
from django.utils import timezone
from django.utils.safestring import SafeString

from ..models import CloneJob, Status, Watch
from . import charts

# The snapshots whose commits were recorded: done ones, and done ones expired since.
MADE = (Status.DONE, Status.EXPIRED)
# The charts' span: the last this many days that have snapshots (ending on the newest one's).
CHART_DAYS = 90
COMMITS = charts.Unit("commits", whole=True)
DAYS_ARE = "Day of the snapshot"


@dataclass(frozen=True)
class Comparison:
    older: CloneJob
    newer: CloneJob
    commits: list[tuple[str, str]]  # [sha, subject], newest first
    # A snapshot between them does not know its commits since the one before: the history was
    # rewritten upstream (a force-push), so there is no chain of commits to list.
    broken: bool
    unlisted: int  # commits counted but not listed (each snapshot lists at most a few)


def made_snapshots(watch: Watch):
    return watch.snapshots.filter(status__in=MADE).order_by("-created_at", "-id")


class CompareForm(forms.Form):
    """Two of a watch's snapshots (in either order), for the commits between them. Offered: the
    snapshots on the page shown (a select of hundreds helps nobody, and takes long to draw);
    accepted: any of the watch's, as a link may name."""

    older = forms.ModelChoiceField(queryset=CloneJob.objects.none(), label="From snapshot")
    newer = forms.ModelChoiceField(queryset=CloneJob.objects.none(), label="To snapshot")

    def __init__(self, watch: Watch, shown: list[CloneJob], data=None):
        super().__init__(data)
        offered = [(str(job.id), _snapshot_name(job)) for job in shown if job.status in MADE]
        for name, choices in [("older", offered[1:] + offered[:1]), ("newer", offered)]:
            self.fields[name].queryset = made_snapshots(watch)
            self.fields[name].widget.choices = choices  # the second newest first, as "from"

    @property
    def offers_two(self) -> bool:
        return len(self.fields["newer"].widget.choices) > 1

    def clean(self) -> dict:
        cleaned = super().clean()
        if cleaned.get("older") and cleaned.get("older") == cleaned.get("newer"):
            raise forms.ValidationError("Pick two different snapshots.")
        return cleaned

    def comparison(self) -> Comparison:
        picked = [self.cleaned_data["older"], self.cleaned_data["newer"]]
        older, newer = sorted(picked, key=lambda job: (job.created_at, str(job.id)))
        return compare(older, newer)


def _snapshot_name(job: CloneJob) -> str:
    return f"{timezone.localtime(job.created_at):%Y-%m-%d %H:%M} · {job.commit[:10]}"


def compare(older: CloneJob, newer: CloneJob) -> Comparison:
    """The commits from `older` to `newer`: those each snapshot after `older`, up to `newer`,
    recorded since the one before it."""
    between = made_snapshots(older.watch).filter(
        created_at__gt=older.created_at, created_at__lte=newer.created_at
    )
    commits, unlisted, broken = [], 0, False
    for job in between:
        commits.extend((sha, subject) for sha, subject in job.changes)
        if job.changes_total is None:
            broken = True
        else:
            unlisted += max(job.changes_total - len(job.changes), 0)
    return Comparison(older, newer, commits, broken, unlisted)


# --- Charts --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Day:
    day: date
    size: int | None  # bytes of the day's newest snapshot
    commits: int | None


def days(watch: Watch) -> list[Day]:
    """Each day of the charts' span: the size of its newest snapshot and the commits recorded
    that day (a snapshot after a force-push counts those it could list)."""
    newest = made_snapshots(watch).values_list("created_at", flat=True).first()
    if newest is None:
        return []
    last = timezone.localtime(newest).date()
    first = last - timedelta(days=CHART_DAYS - 1)
    sizes: dict[date, int] = {}
    commits: dict[date, int] = {}
    in_span = made_snapshots(watch).filter(created_at__gte=_midnight(first)).order_by("created_at")
    rows = list(in_span.values_list("created_at", "archive_size", "changes_total", "pk"))
    # The lists of commits are read only where no count was recorded (after a force-push).
    uncounted = [pk for *_, total, pk in rows if total is None]
    listed = (
        dict(in_span.filter(pk__in=uncounted).values_list("pk", "changes")) if uncounted else {}
    )
    for created_at, size, total, pk in rows:
        day = timezone.localtime(created_at).date()
        if size is not None:
            sizes[day] = size
        counted = total if total is not None else len(listed[pk])
        commits[day] = commits.get(day, 0) + counted
    start = min(sizes.keys() | commits.keys())
    span = [start + timedelta(days=n) for n in range((last - start).days + 1)]
    return [Day(day, sizes.get(day), commits.get(day)) for day in span]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.get_current_timezone())


def commits_of(job: CloneJob) -> int:
    return job.changes_total if job.changes_total is not None else len(job.changes)


def size_chart(span: list[Day]) -> SafeString:
    largest = max((day.size for day in span if day.size is not None), default=0)
    unit = charts.size_unit(largest)
    series = [charts.Series("Archive size", "#2457c5", [day.size for day in span])]
    dates = [day.day for day in span]
    chart = charts.Chart("size-chart", "Archive size over time", dates, series, unit, DAYS_ARE)
    return charts.lines(chart)


def commits_chart(span: list[Day]) -> SafeString:
    series = [charts.Series("Commits", "#2457c5", [day.commits for day in span])]
    dates = [day.day for day in span]
    chart = charts.Chart("commits-chart", "New commits per day", dates, series, COMMITS, DAYS_ARE)
    return charts.stacked_bars(chart)
