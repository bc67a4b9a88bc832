"""The retention table: how many of a year of hourly snapshots each policy keeps.

    .venv/bin/python scripts/retention_table.py

A watch snapshotted every hour of 2025 (UTC, 8,760 snapshots, tests/support/timeline.py), judged
by clones.retention.keep_set at midnight after the last one, for each policy of
timeline.policies(): how many it keeps, and the oldest it keeps. A watch keeps its newest
snapshot and its pinned ones besides (retention.apply), so "every count 0" keeps one. Pure
computation: no database, engine or worker. A script, not a test: it asserts nothing
(tests/test_retention.py checks the same sets).
"""

import harness

ROOT = harness.setup_django("cloneshelf-retention-")

from clones import retention  # noqa: E402
from tests.support.timeline import AFTER_THE_YEAR, hourly_year, policies  # noqa: E402


def main() -> None:
    year = hourly_year()
    time_of = dict(year)
    rows = []
    for name, policy in policies().items():
        kept = retention.keep_set(year, policy, now=AFTER_THE_YEAR)
        oldest = min(kept, key=time_of.__getitem__) if kept else "—"
        rows.append((name, str(len(kept)), oldest))
    print(f"{len(year):,} hourly snapshots of 2025, judged at {AFTER_THE_YEAR:%Y-%m-%d %H:%M} UTC")
    print()
    print("| policy | kept | oldest kept |")
    print("| --- | ---: | --- |")
    for row in rows:
        print(f"| {' | '.join(row)} |")


if __name__ == "__main__":
    try:
        main()
    finally:
        harness.remove(ROOT)  # settings want a data directory; nothing is written there
