"""Stopping `manage.py worker`, with real processes and a real engine, by every usual signal:
SIGTERM to the main process (docker stop), SIGTERM to the whole process group (systemd,
`kill -- -PGID`), SIGINT to the group (Ctrl-C), and a second signal during the grace period.
Each is sent ROUNDS times; every worker exits 0 in time, and a running clone is handed back."""

import contextlib
import os
import signal
import subprocess
import time
from functools import partial
from pathlib import Path
from typing import NamedTuple

import psutil
import pytest
from django_q.tasks import async_task

from clones.models import CloneJob, Status

from .support.gitservers import StallingServer
from .support.helpers import assert_handed_back, containers_of, refreshed, submit, wait_until

# Five rounds of each way of stopping, eight kinds in all: forty stops a run, enough to catch a
# race that fails one stop in ten, while keeping CI's whole run well under 20 minutes.
ROUNDS = 5
ONE_WORKER = {"CLONES_WORKERS": "1"}
IDLE_EXIT_SECONDS = 5
# Past the grace: a second or so for the clone to notice, then the container and the cluster go.
EXIT_MARGIN_SECONDS = 8
SECOND_SIGNAL_AFTER = 0.5


def term_main(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)


def term_group(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGTERM)


def int_group(worker: subprocess.Popen) -> None:
    os.killpg(worker.pid, signal.SIGINT)


def term_group_twice(worker: subprocess.Popen) -> None:
    term_group(worker)
    time.sleep(SECOND_SIGNAL_AFTER)
    with contextlib.suppress(ProcessLookupError):  # an idle one may be gone already
        term_group(worker)


class Stop(NamedTuple):
    send: object
    grace: int  # CLONES_STOP_GRACE of the worker running a clone
    within: float  # seconds it may take that worker to exit


STOPS = {
    "SIGTERM to the main process": Stop(term_main, 2, 2 + EXIT_MARGIN_SECONDS),
    "SIGTERM to the group": Stop(term_group, 2, 2 + EXIT_MARGIN_SECONDS),
    "SIGINT to the group": Stop(int_group, 2, 2 + EXIT_MARGIN_SECONDS),
    # The second signal ends a long grace at once.
    "SIGTERM to the group, twice": Stop(term_group_twice, 60, 15),
}


def stop(worker: subprocess.Popen, send, within: float) -> float:
    """Send the stop signal; the seconds the worker took to exit, cleanly."""
    started = time.monotonic()
    send(worker)
    try:
        exit_code = worker.wait(timeout=within)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker was still running {within} s after the signal")
    took = time.monotonic() - started
    assert exit_code == 0
    return took


def wait_until_running(log: Path) -> None:
    def running() -> bool:  # both clusters: the clones' and the webhooks'
        return log.exists() and log.read_text(errors="replace").count("] running.") == 2

    wait_until(running, timeout=30, what="the clusters to run")


def report(how: str, state: str, took: list[float]) -> None:
    print(f"\n{how:28} | {state:12} | {len(took)} rounds, all exited | max {max(took):.1f} s")


@pytest.mark.parametrize("how", STOPS)
def test_an_idle_worker_exits_on_every_stop_signal(how, start_worker, tmp_path):
    took = []
    for round_ in range(ROUNDS):
        worker = start_worker(env=ONE_WORKER)
        wait_until_running(tmp_path / f"worker-{round_}.log")  # start_worker's naming
        took.append(stop(worker, STOPS[how].send, IDLE_EXIT_SECONDS))
    assert not CloneJob.objects.filter(status=Status.RUNNING).exists()
    report(how, "idle", took)


@pytest.mark.parametrize("how", STOPS)
def test_a_worker_running_a_clone_hands_it_back_on_every_stop_signal(
    how, owner_client, start_worker
):
    send, grace, within = STOPS[how]
    stalling = StallingServer()
    job = submit(owner_client, stalling.url())  # one job: each round's worker takes it up again
    took = []
    for _ in range(ROUNDS):
        worker = start_worker(env={**ONE_WORKER, "CLONES_STOP_GRACE": str(grace)})
        wait_until(
            lambda: refreshed(job).status == Status.RUNNING and containers_of(job),
            timeout=30,
            what="a running clone",
        )
        took.append(stop(worker, send, within))
        assert_handed_back(job)
    report(how, "with a clone", took)
    stalling.stop()


def cluster_starting(worker: subprocess.Popen) -> bool:
    """The worker has set its stop handler and forked a sentinel. Any child will not do: while
    the worker starts, croniter's import runs `file`, whose child has the worker's command line
    until it execs, and a SIGTERM then meets no handler yet."""
    process = psutil.Process(worker.pid)
    if not catches(worker.pid, signal.SIGTERM):
        return False
    own = process.cmdline()
    with contextlib.suppress(psutil.Error):  # a child that has just ended
        return any(child.cmdline() == own for child in process.children())
    return False


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler of its own for `signum` (/proc's SigCgt mask)."""
    status = Path(f"/proc/{pid}/status").read_text()
    caught = next(line for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(int(caught.split()[1], 16) & (1 << (signum - 1)))


def test_a_worker_told_to_stop_as_its_cluster_starts_exits_cleanly(start_worker):
    took = []
    for _ in range(ROUNDS):
        worker = start_worker(env=ONE_WORKER)
        # The sentinel is forked, and has yet to make itself deaf to the signals.
        wait_until(partial(cluster_starting, worker), interval=0.005)
        took.append(stop(worker, term_group, IDLE_EXIT_SECONDS))
    report("SIGTERM to the group", "starting", took)


@pytest.mark.parametrize("cluster", ["clones", "webhooks"])
def test_a_worker_whose_sentinel_dies_exits_with_an_error(cluster, start_worker, tmp_path):
    worker = start_worker(env=ONE_WORKER)
    wait_until_running(tmp_path / "worker-0.log")
    # Forked one after the other, the clones' first: their process ids say which is which.
    sentinels = sorted(psutil.Process(worker.pid).children(), key=lambda process: process.pid)
    dying = sentinels[["clones", "webhooks"].index(cluster)]

    dying.kill()  # as the OOM killer might

    assert worker.wait(timeout=IDLE_EXIT_SECONDS) == 1
    assert not any(sentinel.is_running() for sentinel in sentinels)  # the other one stopped


def hang_past_the_timeout(pid_file: str) -> None:
    """A task django-q2's timeout alarm cannot interrupt."""
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(3600)


def test_a_worker_stuck_past_its_task_timeout_is_still_killed(start_worker, tmp_path):
    # The cluster's processes ignore SIGTERM, which django-q2's guard sends to such a worker.
    start_worker(env={**ONE_WORKER, "CLONES_CLONE_TIMEOUT": "1", "CLONES_TASK_OVERHEAD": "1"})
    pid_file = tmp_path / "stuck.pid"
    async_task(f"{__name__}.hang_past_the_timeout", str(pid_file))
    wait_until(pid_file.exists, timeout=30, what="the task to start")
    stuck = psutil.Process(int(pid_file.read_text()))

    def gone() -> bool:
        try:
            return stuck.status() == psutil.STATUS_ZOMBIE  # its sentinel reaps it later
        except psutil.NoSuchProcess:
            return True

    # The guard gives the task its timeout (2 s) and 3 s more.
    wait_until(gone, timeout=15, what="the stuck worker to be killed")
