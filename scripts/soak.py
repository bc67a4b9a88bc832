"""Soak: clone jobs while worker clusters and the Docker engine are killed; then count leaks.

Jobs are submitted without pause while worker clusters and the Docker engine are killed at
random; then comes a drain, and a count of everything left behind.

    .venv/bin/python scripts/soak.py [--minutes 5] [--kill-every 40] [--clusters 2]
                                     [--drain-timeout 180] [--seed N] [--keep]

Run as root with the test engine up (`bash .ci/engine.sh`): the clones run on a Docker engine of
the run's own (tests/support/engines.py, through scripts/harness.py), which this script kills. Small
repositories are served by `git daemon` and, slowly (1 s per request), over smart HTTP, so that
kills also land in the middle of clones.

For MINUTES, one job is submitted every 1-2 s (clones.jobs.submit, in this process, round-robin
over 3 users) to CLUSTERS worker clusters (`manage.py worker`). At random intervals around
KILL_EVERY seconds, either one cluster's whole process group is SIGKILLed and a new one started
at once, or the engine's dockerd is SIGKILLed and started again 3-8 s later. Every event is
printed with the jobs that were running at that moment.

Timeouts are short (SETTINGS below, for this process and the workers), so that recovery happens
within the run: a task may take 40 s, a job running for 50 s has lost its worker. The recovery
sweep is the django-q2 schedule clones.queue.RECOVERY_SCHEDULE, every minute, and
django-q2's own scheduler runs only every 30 s in each cluster; this script also calls
django_q.scheduler.scheduler() every 10 s, which queues schedules that are due, among them the
one-off "cloneshelf: retry <id>" of jobs waiting for the engine.

Then the drain: no more submissions or kills; the engine up, one cluster (the others stopped
with SIGTERM). It lasts until no job is queued or running and a recovery sweep has finished that
was queued (made due at once, as tests/support/helpers.py:run_schedule_now does) more than
clones.ops.recovery.STALE_AFTER_SECONDS after the drain began, that is after the last kill: the
sweep leaves younger leftovers alone. The sweep is made due every 30 s meanwhile, which also
recovers jobs whose worker was killed. At most DRAIN_TIMEOUT seconds.

What is left is counted as it is, without reaping anything: submitted, done, failed (by error),
cancelled, still queued or running ("stuck"), and the leaks: clone containers on the engine,
job directories, archive files no job points at, done jobs without their archive, archives
whose sha256 is not the job's. Also printed: what the workers' own sweeps reaped during the run
(from their logs: leftovers that only the sweep cleaned up) and the errors they logged. Exit
status 1 if any of stuck and the five leak counts is not 0; the data directory (database, worker
logs with times, dockerd.log) is then kept, and each job named is shown with its row and the
worker log lines that mention it.
"""

import argparse
import ast
import contextlib
import hashlib
import random
import re
import shutil
import subprocess
import time
from collections import Counter
from datetime import timedelta

import harness

SETTINGS = {
    "CLONES_CLONE_TIMEOUT": "20",
    "CLONES_TASK_OVERHEAD": "20",  # task timeout 40 s; django-q2 hands a lost task on at 100 s
    "CLONES_HEARTBEAT_SECONDS": "2",  # a killed cluster's jobs are taken back 8 s after
    "CLONES_WAIT_SECONDS": "2",
    "CLONES_WAIT_RETRIES": "30",
    "CLONES_RECOVERY_INTERVAL_MINUTES": "1",
    "CLONES_STOP_GRACE": "5",  # a cluster stopped for the drain hands its clones back soon
    "CLONES_MAX_ACTIVE_PER_USER": "10000",
    "CLONES_MAX_SUBMISSIONS_PER_HOUR": "10000",
}
ROOT = harness.setup_django("cloneshelf-soak-", SETTINGS)

from django.core.files.storage import default_storage  # noqa: E402
from django.utils import timezone  # noqa: E402
from django_q.models import Schedule, Task  # noqa: E402
from django_q.scheduler import scheduler  # noqa: E402

from clones import jobs, queue  # noqa: E402
from clones.models import CloneJob, Status  # noqa: E402
from clones.ops.recovery import STALE_AFTER_SECONDS  # noqa: E402
from clones.pipeline import paths  # noqa: E402
from clones.pipeline.engine import JOB_LABEL  # noqa: E402
from tests.support.gitservers import GitDaemon, GitHTTPServer  # noqa: E402
from tests.support.repos import make_repo  # noqa: E402

UUID = re.compile(r"[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}")
HEX = re.compile(r"[0-9a-f]{8}(?:-?[0-9a-f]{4}){3}-?[0-9a-f]{12,}")  # job and container ids
REAPED = re.compile(r"reaped leftovers: (\{.*\})")
SCHEDULER_EVERY = 10
SWEEP_EVERY = 30
LOGS = ROOT / "logs"
STARTED = time.monotonic()


def elapsed() -> str:
    return f"{time.monotonic() - STARTED:6.1f} s"


def short(job_id) -> str:
    return str(job_id)[:8]


class Chaos:
    """The worker clusters and the engine; kills one of them at random moments and brings it
    back: a new cluster at once, the engine 3-8 s later."""

    def __init__(self, engine, clusters: int, every: float):
        self.engine, self.every = engine, every
        self.started = 0
        self.workers = [self._new_worker() for _ in range(clusters)]
        self.engine_back_at: float | None = None
        self.next_kill = time.monotonic() + self._interval()
        self.kills: Counter = Counter()

    def _new_worker(self) -> harness.Process:
        self.started += 1
        return harness.start_worker(LOGS / f"worker-{self.started}.log")

    def _interval(self) -> float:
        return random.uniform(0.5, 1.5) * self.every

    def tick(self) -> None:
        now = time.monotonic()
        if self.engine_back_at is not None and now >= self.engine_back_at:
            self.restart_engine()
        if now >= self.next_kill:
            if self.engine_back_at is None and random.random() < 0.5:
                self.kill_engine()
            else:
                self.kill_worker()
            self.next_kill = now + self._interval()

    def kill_worker(self) -> None:
        number = random.randrange(len(self.workers))
        victim = self.workers[number]
        self._note("worker cluster", f"worker cluster {victim.log.stem} (group {victim.pid})")
        victim.kill()
        self.workers[number] = self._new_worker()
        print(f"{elapsed()}  started {self.workers[number].log.stem}")

    def kill_engine(self) -> None:
        self._note("dockerd", "dockerd")
        self.engine.kill()
        self.engine_back_at = time.monotonic() + random.uniform(3, 8)

    def restart_engine(self) -> None:
        self.engine.start()
        self.engine_back_at = None
        print(f"{elapsed()}  dockerd is up again")

    def _note(self, kind: str, victim: str) -> None:
        running = CloneJob.objects.filter(status=Status.RUNNING).values_list("pk", flat=True)
        running_ids = ", ".join(map(short, running)) or "none"
        print(f"{elapsed()}  SIGKILL {victim}; jobs running: {running_ids}")
        self.kills[kind] += 1

    def settle(self) -> None:
        """The engine up, one cluster: the others are stopped (SIGTERM, in order)."""
        if self.engine_back_at is not None:
            self.restart_engine()
        for worker in self.workers[1:]:
            worker.stop(grace=30)
        self.workers = self.workers[:1]
        print(f"{elapsed()}  drain: {self.workers[0].log.stem} alone, no more kills")

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()


def serve_repos() -> tuple[list[str], list]:
    """URLs of small repositories: over git://, and over slow smart HTTP; the servers."""
    served = ROOT / "served"
    served.mkdir()
    repos = [make_repo(served, f"soak-{number}") for number in range(4)]
    repos.append(make_repo(served, "soak-big", extra_bytes=8 * 2**20))
    daemon, slow_http = GitDaemon(served), GitHTTPServer(served, delay=1)
    # A clone killed in mid-transfer breaks the server's pipe: expected here, not worth a trace.
    slow_http.server.handle_error = lambda request, client_address: None
    urls = [daemon.url(repo.name) for repo in repos]
    urls += [slow_http.url(repo.name) for repo in repos[:2]]
    return urls, [daemon, slow_http]


def submit_and_kill(chaos: Chaos, urls: list[str], minutes: float) -> Counter:
    users = harness.create_users(["ann", "bob", "cy"])
    submissions: Counter = Counter()
    end = time.monotonic() + minutes * 60
    next_submission = next_scheduler = time.monotonic()
    while time.monotonic() < end:
        now = time.monotonic()
        if now >= next_submission:
            number = submissions.total()
            try:
                jobs.submit(users[number % len(users)], urls[number % len(urls)])
                submissions["submitted"] += 1
            except jobs.Refused as refused:
                submissions[f"refused: {refused}"] += 1
            next_submission = now + random.uniform(1, 2)
        if now >= next_scheduler:
            scheduler()
            next_scheduler = now + SCHEDULER_EVERY
        chaos.tick()
        time.sleep(0.2)
    return submissions


def sweep_now() -> str:
    """Make the recovery schedule due and let django-q2's scheduler queue it; its task's id."""
    schedule = Schedule.objects.filter(name=queue.RECOVERY_SCHEDULE)
    schedule.update(next_run=timezone.now() - timedelta(seconds=1))
    scheduler()
    return schedule.get().task


def drain(chaos: Chaos, timeout: float) -> bool:
    """Until no job is active and a sweep queued after the leftovers went stale has finished;
    False if that took longer than `timeout`."""
    chaos.settle()
    stale_at = time.monotonic() + STALE_AFTER_SECONDS + 5  # whatever the kills left by now
    deadline = time.monotonic() + timeout
    next_sweep = next_scheduler = time.monotonic()
    last_sweep = None  # the task of the newest sweep queued after stale_at
    while time.monotonic() < deadline:
        now = time.monotonic()
        if now >= next_sweep:
            task = sweep_now()
            last_sweep = task if now >= stale_at else None
            # The first sweep that may reap everything comes as soon as it can.
            next_sweep = now + SWEEP_EVERY if now >= stale_at else min(now + SWEEP_EVERY, stale_at)
            next_scheduler = now + SCHEDULER_EVERY
        elif now >= next_scheduler:
            scheduler()
            next_scheduler = now + SCHEDULER_EVERY
        swept = last_sweep is not None and Task.objects.filter(id=last_sweep).exists()
        if swept and not CloneJob.objects.active().exists():
            print(f"{elapsed()}  drained")
            return True
        time.sleep(1)
    print(f"{elapsed()}  drain gave up after {timeout:.0f} s")
    return False


def sha256(name: str) -> str:
    digest = hashlib.sha256()
    with default_storage.open(name, "rb") as archive:
        for chunk in iter(lambda: archive.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def container_jobs(engine) -> list[str]:
    """'<container> job <id> (<state>)' for every clone container on the engine."""
    ids = engine.containers(JOB_LABEL)
    if not ids:
        return []
    template = f'{{{{index .Config.Labels "{JOB_LABEL}"}}}} ({{{{.State.Status}}}})'
    result = subprocess.run(
        ["docker", "inspect", "--format", template, *ids],
        env=engine.client_env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    labels = zip(ids, result.stdout.splitlines(), strict=True)
    return [f"{container[:12]} job {job}" for container, job in labels]


def problems(engine) -> dict[str, list[str]]:
    """Jobs that never finished, and what should be gone and is not, counted as found: nothing
    is reaped first."""
    root = paths.jobs_root()
    stored = default_storage.listdir("")[1] if default_storage.exists("") else []
    referenced = set(CloneJob.objects.exclude(archive="").values_list("archive", flat=True))
    done = list(CloneJob.objects.filter(status=Status.DONE))
    present = [job for job in done if default_storage.exists(job.archive.name)]
    return {
        "stuck (still queued or running)": [
            f"{job.pk} {job.status} ({job.phase})" for job in CloneJob.objects.active()
        ],
        "leaked containers": container_jobs(engine),
        "leaked job directories": sorted(e.name for e in root.iterdir()) if root.exists() else [],
        "orphan archive files": sorted(name for name in stored if name not in referenced),
        "done jobs without their archive": [str(job.pk) for job in done if job not in present],
        "archives whose sha256 is not the job's": [
            str(job.pk) for job in present if sha256(job.archive.name) != job.archive_sha256
        ],
    }


def report(submissions: Counter, chaos: Chaos, found: dict[str, list[str]]) -> None:
    statuses = Counter(CloneJob.objects.values_list("status", flat=True))
    failed = Counter(CloneJob.objects.filter(status=Status.FAILED).values_list("error", flat=True))
    print("\nkilled:", ", ".join(f"{what} {count} x" for what, count in chaos.kills.items()))
    for what, count in submissions.items():
        print(f"{what}: {count}")
    for status in [Status.DONE, Status.FAILED, Status.CANCELLED, Status.EXPIRED]:
        print(f"{status.label.lower()}: {statuses[status]}")
    for error, count in failed.most_common():
        print(f"  {count} x {error}")
    print(f"run twice (a worker died under it): {CloneJob.objects.filter(attempts__gt=1).count()}")
    print(f"waited for the engine at least once: {CloneJob.objects.filter(waits__gt=0).count()}")
    for what, items in found.items():
        print(f"{what}: {len(items)}")
        for item in items:
            print(f"  {item}")


def worker_logs() -> list[str]:
    return [
        f"{log.stem}: {line}"
        for log in sorted(LOGS.glob("worker-*.log"))
        for line in log.read_text(errors="replace").splitlines()
    ]


def report_logs() -> None:
    """What the workers' own sweeps reaped, and their errors: leaks the sweeps hid are here."""
    reaped: Counter = Counter()
    errors: Counter = Counter()
    for line in worker_logs():
        if found := REAPED.search(line):
            reaped.update(ast.literal_eval(found.group(1)))
        elif " ERROR " in line:
            errors[HEX.sub("…", line.split(" ERROR ", 1)[1])] += 1
    print(f"reaped by the workers' sweeps: {dict(reaped) or 'nothing'}")
    print(f"errors in the worker logs: {errors.total()}")
    for message, count in errors.most_common():
        print(f"  {count} x {message}")


def explain(found: dict[str, list[str]]) -> None:
    """For each job a problem names: its row, and the worker log lines that mention it."""
    named = {job_id for items in found.values() for item in items for job_id in UUID.findall(item)}
    for job in CloneJob.objects.filter(pk__in=named):
        print(
            f"\njob {job.pk}: {job.status}, attempts {job.attempts}, waits {job.waits}, "
            f"started {job.started_at}, finished {job.finished_at}, error {job.error!r}"
        )
        for line in worker_logs():
            if str(job.pk) in line:
                print(f"  {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--kill-every", type=float, default=40, help="seconds, on average")
    parser.add_argument("--clusters", type=int, choices=[1, 2], default=2)
    parser.add_argument("--drain-timeout", type=float, default=180, help="seconds")
    parser.add_argument("--seed", type=int, help="for the random kills")
    parser.add_argument("--keep", action="store_true", help=f"keep {ROOT} even if all is well")
    options = parser.parse_args()
    random.seed(options.seed)

    with contextlib.ExitStack() as cleanup:
        harness.migrate()
        LOGS.mkdir()
        engine = cleanup.enter_context(harness.private_engine())
        cleanup.callback(shutil.copy, engine.root / "dockerd.log", LOGS)
        urls, servers = serve_repos()
        for server in servers:
            cleanup.callback(server.stop)
        chaos = Chaos(engine, options.clusters, options.kill_every)
        cleanup.callback(chaos.stop)
        print(f"{elapsed()}  soaking for {options.minutes:g} minutes; data in {ROOT}")
        submissions = submit_and_kill(chaos, urls, options.minutes)
        drain(chaos, options.drain_timeout)
        found = problems(engine)
        report(submissions, chaos, found)
        report_logs()
        explain(found)
    if any(found.values()) or options.keep:
        print(f"\nkept {ROOT} (database, worker logs, dockerd.log)")
    else:
        harness.remove(ROOT)
    return 1 if any(found.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
