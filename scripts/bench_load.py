"""Benchmark: the job page's latency and the workers' throughput during a burst of submissions.

    .venv/bin/python scripts/bench_load.py [--jobs 100] [--users 5] [--readers 4] [--repos 20]
        [--clusters 1,2]

On PostgreSQL and Redis: CLONESHELF_TEST_DATABASE_URL=postgres://… CLONES_REDIS_URL=redis://…
in the environment (`bash .ci/postgres.sh` starts a PostgreSQL; the database is the run's own).
`--clusters 1,2` runs the same burst against one worker cluster, then against two, each cluster
with a Docker engine and a data directory of its own, sharing the database, the queue and the
archive bucket (moto's S3 emulator): jobs per minute side by side.

Run as root with the test engine up (`bash .ci/engine.sh`): the clone containers run on a Docker
engine of the run's own (scripts/harness.py, private_engine), started with the test engine's git
image. Builds REPOS small repositories served by `git daemon` on 127.0.0.1, starts a real web
server (gunicorn by the image's command, project/gunicorn.conf.py) and one worker cluster
(`manage.py worker`, CLONES_WORKERS=2), and logs USERS users in through /accounts/login/ with
requests sessions. Then:

- each user, in a thread of its own, submits its share of JOBS through the real form (POST /
  with the CSRF token read from the form page) as fast as the server answers, round-robin over
  the repositories. The per-user caps apply to the form, so this run sets
  CLONES_MAX_ACTIVE_PER_USER and CLONES_MAX_SUBMISSIONS_PER_HOUR to 10000 (for the server and
  the worker alike);
- meanwhile READERS threads fetch pages back to back, each time one of PAGES at random (a
  random job's page and panel as its owner, the form, the history plain and filtered, the
  profile, the API's job and list with the owner's Bearer token, and the staff dashboard as a
  staff user), from the first submission until the last job has finished.

Prints each page's latency (p50/p95/p99/max over all requests) and the form's, jobs per
minute from the first submission to the last finished job, how many were done or failed (with
the errors), and how many done jobs do not have their own repository's HEAD commit, both as
job.commit and in their archive. A script, not a test: it asserts nothing.
"""

import argparse
import contextlib
import random
import re
import subprocess
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import harness

CAP = "10000"
ROOT = harness.setup_django(
    "cloneshelf-load-",
    {"CLONES_MAX_ACTIVE_PER_USER": CAP, "CLONES_MAX_SUBMISSIONS_PER_HOUR": CAP},
)

from django.conf import settings  # noqa: E402
from django.db import connection  # noqa: E402
from django.utils import timezone  # noqa: E402

from clones import jobs  # noqa: E402
from clones.models import CloneJob, Status  # noqa: E402
from clones.web import apitokens  # noqa: E402
from tests.support.engines import Engine  # noqa: E402
from tests.support.gitservers import GitDaemon, free_port  # noqa: E402
from tests.support.repos import ServedRepo, git, make_repo  # noqa: E402

PASSWORD = "load-bench-pw"
FORM_ERROR = re.compile(r'class="errorlist[^"]*"[^>]*>\s*<li>(.*?)</li>', re.DOTALL)


@dataclass
class Burst:
    """What the submitting and reading threads record."""

    submitted: list[tuple[str, str, ServedRepo]] = field(default_factory=list)  # user, job, repo
    refused: Counter = field(default_factory=Counter)  # HTTP status and form error -> count
    post_seconds: list[float] = field(default_factory=list)
    page_seconds: defaultdict = field(default_factory=lambda: defaultdict(list))  # page -> s
    page_errors: Counter = field(default_factory=Counter)  # page and HTTP status -> count
    over: threading.Event = field(default_factory=threading.Event)


def submit_all(visitor: harness.Visitor, repos: list[ServedRepo], daemon: GitDaemon, burst: Burst):
    for repo in repos:
        started = time.perf_counter()
        answer = visitor.submit(daemon.url(repo.name))
        burst.post_seconds.append(time.perf_counter() - started)
        if answer.status_code == 302:
            job_id = answer.headers["Location"].rstrip("/").rsplit("/", 1)[-1]
            burst.submitted.append((visitor.username, job_id, repo))
        else:
            error = FORM_ERROR.search(answer.text)
            burst.refused[f"HTTP {answer.status_code}: {error and error.group(1)}"] += 1


# What readers fetch, by name: the path for a job of the owner's ({job}), and who asks.
PAGES = {
    "job page": ("/clones/{job}/", "owner"),
    "job panel (job.js)": ("/clones/{job}/panel", "owner"),
    "new clone form": ("/", "owner"),
    "history": ("/clones/", "owner"),
    "history, filtered": ("/clones/?status=done&q=repo", "owner"),
    "profile": ("/profile/", "owner"),
    "API job": ("/api/clones/{job}", "owner"),
    "API list": ("/api/clones?limit=25", "owner"),
    "dashboard (staff)": ("/dashboard/", "staff"),
}


def read_pages(visitors: list[harness.Visitor], staff: harness.Visitor, burst: Burst) -> None:
    tabs = {visitor.username: visitor.another_tab() for visitor in visitors}
    staff_tab = staff.another_tab()
    while not burst.over.is_set():
        if not burst.submitted:
            time.sleep(0.01)
            continue
        username, job_id, _ = random.choice(burst.submitted)
        page = random.choice(list(PAGES))
        path, who = PAGES[page]
        tab = staff_tab if who == "staff" else tabs[username]
        started = time.perf_counter()
        answer = tab.get(staff.base + path.format(job=job_id))
        burst.page_seconds[page].append(time.perf_counter() - started)
        if answer.status_code != 200:
            burst.page_errors[f"{page}: HTTP {answer.status_code}"] += 1


def run_burst(visitors, staff, repos, daemon, options) -> tuple[Burst, float]:
    """Submit and read until every job is over (or the timeout); the first submission's time."""
    burst = Burst()
    shares = {visitor.username: [] for visitor in visitors}
    for number in range(options.jobs):
        shares[visitors[number % len(visitors)].username].append(repos[number % len(repos)])
    submitters = [
        threading.Thread(target=submit_all, args=(visitor, shares[visitor.username], daemon, burst))
        for visitor in visitors
    ]
    readers = [
        threading.Thread(target=read_pages, args=(visitors, staff, burst))
        for _ in range(options.readers)
    ]
    first_submission = timezone.now()
    for thread in [*submitters, *readers]:
        thread.start()
    for thread in submitters:
        thread.join()
    print(f"submitted in {(timezone.now() - first_submission).total_seconds():.1f} s")
    wait_until_over([job_id for _, job_id, _ in burst.submitted], options.timeout)
    burst.over.set()
    for thread in readers:
        thread.join()
    return burst, first_submission


def wait_until_over(job_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while CloneJob.objects.filter(pk__in=job_ids).active().exists():
        if time.monotonic() > deadline:
            print(f"gave up waiting after {timeout:.0f} s: some jobs are still queued or running")
            return
        time.sleep(0.5)


def archive_head(job: CloneJob) -> str:
    """The commit HEAD names in the job's archive, as git reads it there ("" if none)."""
    with tempfile.TemporaryDirectory() as scratch, job.archive.open("rb") as archive:
        subprocess.run(["tar", "-xf", "-", "-C", scratch], stdin=archive, check=True)
        (checkout,) = Path(scratch).iterdir()
        try:
            return git("rev-parse", "--verify", "HEAD^{commit}", cwd=checkout)
        except subprocess.CalledProcessError:
            return ""


def wrong_commits(burst: Burst, done: dict[str, CloneJob]) -> int:
    mismatches = 0
    for _, job_id, repo in burst.submitted:
        job = done.get(job_id)
        if job and not job.commit == archive_head(job) == repo.head:
            mismatches += 1
            print(f"  {job_id}: job.commit {job.commit}, {repo.name} HEAD {repo.head}")
    return mismatches


def report(burst: Burst, first_submission, options) -> None:
    finished = CloneJob.objects.filter(pk__in=[job_id for _, job_id, _ in burst.submitted])
    done = {str(job.pk): job for job in finished if job.status == Status.DONE}
    failed = Counter(job.error for job in finished if job.status == Status.FAILED)
    last = max((job.finished_at for job in finished if job.finished_at), default=first_submission)
    minutes = (last - first_submission).total_seconds() / 60
    print(f"\n{'latency in ms':<34}{'p50':>7}  {'p95':>7}  {'p99':>7}  {'max':>7}  requests")
    print(f"GET, by page ({options.readers} readers)")
    for page in PAGES:
        samples = burst.page_seconds[page]
        print(f"  {page:<32}{harness.milliseconds(samples)}  {len(samples)}")
    post = burst.post_seconds
    print(f"{f'POST / ({options.users} users)':<34}{harness.milliseconds(post)}  {len(post)}")
    print(f"page errors: {dict(burst.page_errors) or 'none'}")
    print(f"submissions refused: {dict(burst.refused) or 'none'}")
    print(
        f"jobs: {len(done)} done, {sum(failed.values())} failed, "
        f"{len(burst.submitted) - len(done) - sum(failed.values())} other, in {minutes * 60:.1f} s "
        f"from the first submission to the last finished: {len(done) / minutes:.1f} done/minute"
    )
    for error, count in failed.most_common():
        print(f"  failed {count}x: {error}")
    print(f"done jobs without their repository's HEAD commit: {wrong_commits(burst, done)}")


def warm_up(url: str, owner) -> None:
    """One job before the burst, so that it does not wait for the workers to start."""
    job = jobs.submit(owner, url)
    while job.is_active:
        time.sleep(0.1)
        job.refresh_from_db()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--readers", type=int, default=4)
    parser.add_argument("--repos", type=int, default=20)
    parser.add_argument(
        "--clusters", default="1", help="worker clusters per burst, e.g. 1,2: one burst each"
    )
    parser.add_argument("--timeout", type=float, default=240, help="for the jobs to finish")
    parser.add_argument("--keep", action="store_true", help=f"keep {ROOT} (logs, database)")
    options = parser.parse_args()

    with contextlib.ExitStack() as cleanup:
        if options.keep:
            cleanup.callback(print, f"kept {ROOT}")
        else:
            cleanup.callback(harness.remove, ROOT)
        harness.migrate()
        cleanup.callback(harness.drop_database)
        # Archives in one bucket that every cluster writes and the web hands out (an emulator).
        cleanup.enter_context(harness.s3_bucket())
        served = ROOT / "served"
        served.mkdir()
        daemon = GitDaemon(served)
        cleanup.callback(daemon.stop)
        port = free_port()
        cleanup.callback(harness.start_web(port, ROOT / "web.log").stop)
        print(
            f"database {connection.vendor}, queue {'redis' if settings.CLONES_REDIS_URL else 'orm'}"
        )
        for clusters in map(int, options.clusters.split(",")):
            print(f"\n== {clusters} worker cluster(s), each with its own engine and data directory")
            burst_with(clusters, served, daemon, port, options)


def burst_with(clusters: int, served: Path, daemon: GitDaemon, port: int, options) -> None:
    """One burst against `clusters` clusters; repositories and users of its own, so that no job
    is a snapshot hit of an earlier burst's."""
    run = f"run{clusters}"
    with contextlib.ExitStack() as cleanup:
        for number in range(clusters):
            engine = Engine(settings.CLONES_GIT_IMAGE)
            cleanup.callback(engine.remove)
            own = {"DOCKER_HOST": engine.host, "CLONES_DATA_DIR": str(ROOT / f"{run}-{number}")}
            worker = harness.start_worker(ROOT / f"{run}-worker-{number}.log", env=own)
            cleanup.callback(worker.stop)
        repos = [make_repo(served, f"{run}-repo-{number:02d}") for number in range(options.repos)]
        names = [f"{run}-user{number}" for number in range(options.users)]
        owners = harness.create_users(names, password=PASSWORD)
        warm_up(daemon.url(repos[0].name), owners[0])
        base = f"http://127.0.0.1:{port}"
        visitors = [
            harness.Visitor(base, owner.username, PASSWORD, apitokens.make(owner, "bench")[1])
            for owner in owners
        ]
        (staff,) = harness.create_users([f"{run}-staff"], password=PASSWORD)
        staff.is_staff = True
        staff.save()
        burst, first_submission = run_burst(
            visitors, harness.Visitor(base, staff.username, PASSWORD), repos[1:], daemon, options
        )
        report(burst, first_submission, options)


if __name__ == "__main__":
    main()
