"""Watches checked by two worker clusters sharing one PostgreSQL and one Redis, as scale-out
runs them (tests/test_scale_out.py): every due check runs exactly once, and a cluster killed
mid-check leaves its watch to the other. The git server counts the ref discoveries it is asked
for: one per check."""

import os
import signal
import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from clones import watches
from clones.models import CheckResult, CloneJob, Status, Watch

from .support.gitservers import GitHTTPServer
from .support.helpers import wait_until
from .support.repos import make_tiny_repo
from .support.services import redis_env
from .test_scale_out import postgres_only  # noqa: F401 - fixture

pytestmark = [pytest.mark.database, pytest.mark.usefixtures("postgres_only")]

WATCHES = 40


class CountingServer(GitHTTPServer):
    """Smart HTTP that counts, per repository, the ref advertisements it was asked for."""

    def __init__(self, base, **options):
        super().__init__(base, **options)
        self.base = base
        self.discoveries: Counter[str] = Counter()
        counts, handler = self.discoveries, self.server.RequestHandlerClass

        class Counting(handler):
            def do_GET(self) -> None:
                if "/info/refs" in self.path:
                    counts[self.path.split("/")[1]] += 1
                super().do_GET()

        self.server.RequestHandlerClass = Counting


@pytest.fixture
def counting_server(served_root):
    started = []

    def start(**options) -> CountingServer:
        started.append(CountingServer(served_root, **options))
        return started[-1]

    yield start
    for server in started:
        server.stop()


def unchanged_watch(owner, server: GitHTTPServer, name: str) -> Watch:
    """A watch whose latest snapshot has the repository's commit: its check changes nothing
    and needs no engine."""
    repo = make_tiny_repo(server.base, name)
    watch = watches.create(owner, server.url(repo.name))
    CloneJob.objects.create(
        owner=owner, watch=watch, url=watch.url, status=Status.DONE, commit=repo.head
    )
    return watch


def group_gone(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return True
    return False


def all_checked() -> bool:
    return not Watch.objects.filter(last_checked_at__isnull=True).exists() and not (
        Watch.objects.filter(checking_since__isnull=False).exists()
    )


def test_two_clusters_and_two_more_dispatchers_check_every_due_watch_exactly_once(
    redis, owner, start_worker, counting_server
):
    server = counting_server()
    watched = [unchanged_watch(owner, server, f"watched-{n}") for n in range(WATCHES)]
    for _ in range(2):
        start_worker(env=redis_env(redis))
    stop = threading.Event()

    def dispatch_until_stopped() -> None:  # as two more clusters' schedules would, at once
        while not stop.is_set():
            watches.dispatch()
            time.sleep(0.05)
        connection.close()

    dispatchers = [threading.Thread(target=dispatch_until_stopped) for _ in range(2)]
    for dispatcher in dispatchers:
        dispatcher.start()
    Watch.objects.update(next_check_at=timezone.now())
    try:
        wait_until(lambda: all_checked(), timeout=120, what="every watch checked")
    finally:
        stop.set()
        for dispatcher in dispatchers:
            dispatcher.join()

    assert server.discoveries == Counter({watch.url.rsplit("/", 1)[1]: 1 for watch in watched})
    results = Counter(Watch.objects.values_list("last_result", flat=True))
    assert results == Counter({CheckResult.UNCHANGED: WATCHES})
    assert CloneJob.objects.count() == WATCHES  # the snapshots made above, and no more


def test_a_cluster_killed_mid_check_leaves_its_watch_to_the_other(
    redis, owner, start_worker, counting_server
):
    slow = counting_server(delay=3)  # each request of a check waits: time to kill it
    watch = unchanged_watch(owner, slow, "slow")
    name = watch.url.rsplit("/", 1)[1]
    first = start_worker(env=redis_env(redis))
    Watch.objects.update(next_check_at=timezone.now())
    watches.dispatch()
    wait_until(lambda: slow.discoveries[name] == 1, timeout=60, what="the first check begun")

    os.killpg(first.pid, signal.SIGKILL)  # mid-check
    first.wait()
    # Until its last process is gone, Redis may still hand a task to its pusher, which dies
    # with it: lost, and taken up once more only after another lease.
    wait_until(lambda: group_gone(first.pid), timeout=30, what="the killed cluster gone")
    start_worker(env=redis_env(redis))
    assert watches.dispatch() == 0  # its claim holds until its lease ends
    lease = timedelta(seconds=watches.CLAIM_LEASE_SECONDS + 1)
    Watch.objects.update(checking_since=timezone.now() - lease)  # as if the lease had passed
    assert watches.dispatch() == 1
    wait_until(lambda: all_checked(), timeout=60, what="the watch checked by the other")

    watch.refresh_from_db()
    assert (watch.last_result, watch.failures, slow.discoveries[name]) == ("unchanged", 0, 2)
