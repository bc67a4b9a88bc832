"""A simulated year of a watch's snapshots, for retention's tests and scripts/retention_table.py:
one every hour of 2025 (UTC), at half past, judged at midnight after the last."""

from datetime import UTC, datetime, timedelta

from clones.models import Watch
from clones.retention import Policy

YEAR_START = datetime(2025, 1, 1, 0, 30, tzinfo=UTC)
AFTER_THE_YEAR = datetime(2026, 1, 1, tzinfo=UTC)  # the fixed clock


def label(moment: datetime) -> str:
    """A snapshot's id in these simulations: its time, "2025-12-31T23:30"."""
    return moment.strftime("%Y-%m-%dT%H:%M")


def hourly_year() -> list[tuple[str, datetime]]:
    """(id, time) of each of the year's 8,760 hourly snapshots, oldest first."""
    moments = [YEAR_START + timedelta(hours=hour) for hour in range(365 * 24)]
    return [(label(moment), moment) for moment in moments]


def policies() -> dict:
    """Policies worth comparing over the simulated year, by name (clones.retention.Policy)."""
    return {
        "keep_last 10": Policy(keep_last=10),
        "keep_hourly 48": Policy(keep_hourly=48),
        "keep_daily 7": Policy(keep_daily=7),
        "keep_weekly 4": Policy(keep_weekly=4),
        "keep_monthly 12": Policy(keep_monthly=12),
        "keep_monthly 24": Policy(keep_monthly=24),
        "keep_yearly 5": Policy(keep_yearly=5),
        "a new watch's (last 10, daily 7, weekly 4, monthly 12)": Policy.of(Watch()),
        "restic's example (daily 7, weekly 5, monthly 12, yearly 75)": Policy(
            keep_daily=7, keep_weekly=5, keep_monthly=12, keep_yearly=75
        ),
        "hourly 24, daily 30, weekly 52, monthly 12, yearly 10": Policy(
            keep_hourly=24, keep_daily=30, keep_weekly=52, keep_monthly=12, keep_yearly=10
        ),
        "every count 0": Policy(),
    }
