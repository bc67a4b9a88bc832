"""Benchmark: one clone job end to end against plain `git clone` + `tar` of the same repository.

    .venv/bin/python scripts/bench_clone.py [--megabytes 24] [--rounds 3]

Needs the test engine (`bash .ci/engine.sh`). Builds a repository with MEGABYTES of
incompressible history, serves it with `git daemon` on 127.0.0.1, starts a real `qcluster`, and
times, in alternating rounds: submit -> archive stored (the service) and `git clone` + `tar -cf`
(the baseline). Prints each round, the median ratio, and the worker's peak memory (resident set
of the qcluster process tree, sampled every 20 ms). A script, not a test: it asserts nothing.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness
from harness import mib

ROOT = harness.setup_django("cloneshelf-bench-")

from clones import jobs  # noqa: E402
from clones.models import CloneJob, Status  # noqa: E402
from tests.gitservers import GitDaemon  # noqa: E402
from tests.repos import make_repo  # noqa: E402


def time_service(owner, url: str) -> tuple[float, CloneJob]:
    started = time.perf_counter()
    job = jobs.submit(owner, url)
    while job.is_active:
        time.sleep(0.02)
        job.refresh_from_db()
    elapsed = time.perf_counter() - started
    if job.status != Status.DONE:
        sys.exit(f"the job failed: {job.error}")
    return elapsed, job


def time_baseline(url: str, workdir: Path) -> float:
    checkout, archive = workdir / "checkout", workdir / "checkout.tar"
    started = time.perf_counter()
    subprocess.run(["git", "clone", "--quiet", url, str(checkout)], check=True)
    subprocess.run(["tar", "-cf", str(archive), "-C", str(workdir), "checkout"], check=True)
    elapsed = time.perf_counter() - started
    subprocess.run(["rm", "-rf", str(checkout), str(archive)], check=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()

    served = ROOT / "served"
    served.mkdir(parents=True)
    harness.migrate()
    (owner,) = harness.create_users(["bench"])
    repo = make_repo(served, "big", extra_bytes=options.megabytes * 2**20)
    daemon = GitDaemon(served)
    url = daemon.url(repo.name)
    worker = harness.start_worker(ROOT / "worker.log")
    memory = harness.PeakMemory(worker.pid)
    try:
        time_service(owner, url)  # warm-up: the worker's first task pays its imports
        history = sum(f.stat().st_size for f in (repo.bare / "objects").rglob("*") if f.is_file())
        print(f"repository: {repo.name}, {mib(history)} of git objects")
        ratios = []
        for number in range(1, options.rounds + 1):
            service, job = time_service(owner, url)
            baseline = time_baseline(url, ROOT)
            ratios.append(service / baseline)
            print(
                f"round {number}: service {service:.2f} s (archive {mib(job.archive_size)}), "
                f"git clone + tar {baseline:.2f} s, ratio {service / baseline:.2f}"
            )
        print(f"median ratio service / (git clone + tar): {statistics.median(ratios):.2f}")
        print(
            f"worker peak memory: {mib(memory.peak_tree)} for the whole qcluster tree, "
            f"{mib(memory.peak_single)} for its largest process"
        )
    finally:
        memory.stop()
        worker.stop(grace=30)
        daemon.stop()
        harness.remove(ROOT)


if __name__ == "__main__":
    main()
