"""Benchmark: 1,000 due watches checked by one worker, and the site's pages meanwhile.

    .venv/bin/python scripts/bench_watches.py [--watches 1000] [--repos 1000] [--readers 4]
        [--timeout 300]

On PostgreSQL and Redis as deployed: CLONESHELF_TEST_DATABASE_URL=postgres://… and
CLONES_REDIS_URL=redis://… in the environment (SQLite and the ORM broker otherwise).

Builds REPOS small repositories (one commit each, `git fast-import`) served by `git daemon` on
127.0.0.1, and WATCHES watches of them, round-robin (one per repository by default), each with
a done snapshot of the repository's commit, so that every check finds it unchanged, as most
checks do. Starts the real web server and one `manage.py worker` (CLONES_WORKERS=2 clone
workers, whose cluster runs the schedules; checks run on the light queue's
CLONES_WEBHOOK_WORKERS=2 workers beside it). Then makes every watch due at once and measures,
until the last is checked (or the timeout):

- the time from "all due" to the last check recorded, which includes waiting for the minute's
  schedule (`cloneshelf: check due watches`) to come round;
- the checks' lag (last_lag_seconds: from due to begun), p50/p95/max;
- clone containers created on the engine in that time (docker events of this installation's
  clone containers) and snapshot jobs made: an unchanged check makes none;
- the latency of the pages READERS threads fetch back to back as the watches' owner: the
  history, and the watch list where this build has one (p50/p95/p99/max).

A script, not a test: it asserts nothing.
"""

import argparse
import contextlib
import random
import statistics
import threading
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime

import harness

ROOT = harness.setup_django(
    "cloneshelf-watches-", {"CLONES_WORKERS": "2", "CLONES_WEBHOOK_WORKERS": "2"}
)

import docker  # noqa: E402
from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.urls import NoReverseMatch, reverse  # noqa: E402
from django.utils import timezone  # noqa: E402

from clones import watches  # noqa: E402
from clones.models import CloneJob, Status, Watch  # noqa: E402
from clones.pipeline import engine  # noqa: E402
from tests.support.gitservers import GitDaemon, free_port  # noqa: E402
from tests.support.repos import make_tiny_repo  # noqa: E402

PASSWORD = "watch-bench-pw"
PAGES = {"history": "clones:history", "watch list": "clones:watches"}


def make_watches(owners, daemon: GitDaemon, count: int, repos: int) -> None:
    served = [make_tiny_repo(daemon.base, f"watched-{n}") for n in range(repos)]
    snapshots = []
    for number in range(count):
        repo = served[number % repos]
        owner = owners[number % len(owners)]
        watch = watches.create(owner, daemon.url(repo.name))
        snapshots.append(
            CloneJob(owner=owner, watch=watch, url=watch.url, status=Status.DONE, commit=repo.head)
        )
    CloneJob.objects.bulk_create(snapshots)


def pages_in_this_build() -> dict[str, str]:
    paths = {}
    for page, name in PAGES.items():
        with contextlib.suppress(NoReverseMatch):  # the watch list is the web branch's
            paths[page] = reverse(name)
    return paths


def read_pages(tabs, base: str, paths: dict, seconds: defaultdict, errors: Counter, over) -> None:
    while not over.is_set():
        page = random.choice(list(paths))
        started = time.perf_counter()
        answer = random.choice(tabs).get(base + paths[page])
        seconds[page].append(time.perf_counter() - started)
        if answer.status_code != 200:
            errors[f"{page}: HTTP {answer.status_code}"] += 1


def clones_started(since: datetime) -> int:
    client = docker.from_env()
    try:
        events = client.events(
            since=since,
            until=datetime.now(UTC),
            filters={
                "type": "container",
                "event": "create",
                "label": [engine.JOB_LABEL, f"{engine.INSTALLATION_LABEL}={engine.installation()}"],
            },
            decode=True,
        )
        return sum(1 for _ in events)
    finally:
        client.close()


def wait_for_checks(due_at, count: int, timeout: float) -> float | None:
    """Seconds from due_at until `count` watches were checked since; None on timeout."""
    deadline = time.monotonic() + timeout
    checked = Watch.objects.filter(last_checked_at__gte=due_at)
    while time.monotonic() < deadline:
        if checked.count() >= count:
            last = max(checked.values_list("last_checked_at", flat=True))
            return (last - due_at).total_seconds()
        time.sleep(0.5)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--watches", type=int, default=1000)
    parser.add_argument("--repos", type=int, default=1000)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=300)
    options = parser.parse_args()

    with contextlib.ExitStack() as cleanup:
        cleanup.callback(harness.remove, ROOT)
        harness.migrate()
        cleanup.callback(harness.drop_database)
        served = ROOT / "served"
        served.mkdir()
        daemon = GitDaemon(served)
        cleanup.callback(daemon.stop)
        # At most CLONES_MAX_WATCHES_PER_USER each.
        users = -(-options.watches // settings.CLONES_MAX_WATCHES_PER_USER)
        owners = harness.create_users([f"watcher-{n}" for n in range(users)], password=PASSWORD)
        made = time.monotonic()
        make_watches(owners, daemon, options.watches, options.repos)
        print(
            f"database {connection.vendor}, queue {'redis' if settings.CLONES_REDIS_URL else 'orm'}"
            f"; {options.watches} watches of {options.repos} repositories made in "
            f"{time.monotonic() - made:.1f} s"
        )
        port = free_port()
        cleanup.callback(harness.start_web(port, ROOT / "web.log").stop)
        cleanup.callback(harness.start_worker(ROOT / "worker.log").stop)
        base = f"http://127.0.0.1:{port}"
        tabs = [harness.Visitor(base, owner.username, PASSWORD).another_tab() for owner in owners]
        paths = pages_in_this_build()
        seconds, errors, over = defaultdict(list), Counter(), threading.Event()
        readers = [
            threading.Thread(target=read_pages, args=(tabs, base, paths, seconds, errors, over))
            for _ in range(options.readers)
        ]
        time.sleep(5)  # the worker's clusters up
        jobs_before = CloneJob.objects.count()
        since, due_at = datetime.now(UTC), timezone.now()
        Watch.objects.update(next_check_at=due_at)
        for reader in readers:
            reader.start()
        took = wait_for_checks(due_at, options.watches, options.timeout)
        over.set()
        for reader in readers:
            reader.join()

        lags = list(
            Watch.objects.values_list("last_lag_seconds", flat=True).exclude(last_lag_seconds=None)
        )
        results = Counter(Watch.objects.values_list("last_result", flat=True))
        print(
            f"all {options.watches} checked in {took:.1f} s after they fell due"
            if took is not None
            else f"not all checked within {options.timeout:.0f} s"
        )
        print(f"results: {dict(results)}")
        if len(lags) > 1:
            cuts = statistics.quantiles(lags, n=100, method="inclusive")
            print(
                f"lag (due -> begun) s: p50 {cuts[49]:.1f}  p95 {cuts[94]:.1f}  max {max(lags):.1f}"
            )
        print(f"snapshot jobs made: {CloneJob.objects.count() - jobs_before}")
        print(f"clone containers created meanwhile: {clones_started(since)}")
        print(f"\n{'latency in ms':<22}{'p50':>7}  {'p95':>7}  {'p99':>7}  {'max':>7}  requests")
        for page in paths:
            print(f"  {page:<20}{harness.milliseconds(seconds[page])}  {len(seconds[page])}")
        missing = set(PAGES) - set(paths)
        if missing:
            print(f"  not in this build: {', '.join(sorted(missing))}")
        print(f"page errors: {dict(errors) or 'none'}")


if __name__ == "__main__":
    main()
