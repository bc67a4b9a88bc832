"""Benchmark: the incremental mirror cache (issue 17), end to end. Prints figures and ratios;
asserts nothing.

    .venv/bin/python scripts/bench_mirror.py [--big-megabytes 320] [--new-commits 3]
        [--big-rounds 1] [--small-megabytes 20] [--rounds 3]

Needs the test engine (`bash .ci/engine.sh`). It runs as scripts/bench_clone.py does, and with
its pieces: the same settings and one `manage.py worker` cluster on a throwaway database, the
same generated repositories (text files edited over 8 commits and repacked, so the pack holds
delta chains; cached in /tmp/cloneshelf-bench-cache/), served by `git daemon` on 127.0.0.1,
each round under a new name (a `cp -al` copy) that the service has never seen. Jobs use the
defaults: full history, tar.

1. Snapshot after new commits ÷ cold job, on the BIG repository: a cold job (the URL is new:
   its mirror is made, then the job built from it), then NEW_COMMITS commits pushed upstream
   (each editing a few files, as a day's work does), then a job of the new tip (a fetch of those
   commits into the mirror, then the build). Target ≤ 10 %.
2. Cold one-off job ÷ `docker run` git clone + host tar, on the SMALL repository, alternating
   which goes first (bench_clone.compare): the service's cold job now makes the mirror and
   builds from it. Target ≤ 1.15.
"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_clone  # sets Django up, as bench_clone.SETTINGS say
import harness
from bench_clone import Served, cached_repo, describe_repo, run_job

from clones.models import Mirror
from clones.pipeline import mirrors
from tests.support.repos import GIT_ENV

TARGETS = {"after new commits": 0.10, "cold vs docker run": 1.15}
FILES_PER_COMMIT = 5


def push_commits(bare: Path, count: int) -> str:
    """`count` commits on main in the served `bare`, each appending a line to a few files (with
    git's plumbing: no checkout of hundreds of MiB); the new tip. New objects and refs are new
    files: the cached repository that `bare` hard-links is not touched."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {**GIT_ENV, "GIT_INDEX_FILE": str(Path(scratch) / "index")}

        def git(*args: str, stdin: bytes = b"") -> str:
            done = subprocess.run(
                ["git", *args], cwd=bare, env=env, input=stdin, capture_output=True, check=True
            )
            return done.stdout.decode().strip()

        paths = git("ls-tree", "-r", "--name-only", "HEAD").splitlines()
        for number in range(count):
            git("read-tree", "HEAD")
            for path in paths[number * FILES_PER_COMMIT : (number + 1) * FILES_PER_COMMIT]:
                text = git("cat-file", "blob", f"HEAD:{path}").encode()
                blob = git(
                    "hash-object", "-w", "--stdin", stdin=text + f"\nedit {number}\n".encode()
                )
                git("update-index", "--cacheinfo", f"100644,{blob},{path}")
            tree = git("write-tree")
            commit = git("commit-tree", tree, "-p", "HEAD", "-m", f"upstream change {number}")
            git("update-ref", "refs/heads/main", commit)
        return git("rev-parse", "HEAD")


def after_new_commits(bare: Path, rounds: int, new_commits: int, served: Served, owner) -> float:
    """Median of (job after `new_commits` upstream) ÷ (cold job), each round on a new URL."""
    print(f"\n== after new commits: {bare.name}: {describe_repo(bare)}")
    ratios = []
    for number in range(1, rounds + 1):
        name = f"big-{number}"
        url = served.fresh_url(bare, name)
        cold = run_job(owner, url)
        head = push_commits(served.base / f"{name}.git", new_commits)
        warm = run_job(owner, url)
        if warm.job.commit != head:
            sys.exit(f"the snapshot is of {warm.job.commit}, not the new tip {head}")
        mirror = Mirror.objects.get(key=mirrors.key(url))
        ratios.append(warm.seconds / cold.seconds)
        for run in (cold, warm):
            bench_clone.default_storage.delete(run.job.archive.name)  # GBs; nobody reuses them
        print(
            f"round {number} ({name}): cold {cold.seconds:.2f} s [run {cold.run:.2f}; archive "
            f"{harness.mib(cold.job.archive_size)}] | after {new_commits} commits "
            f"{warm.seconds:.2f} s [run {warm.run:.2f}] | ratio {ratios[-1]:.3f} | mirror "
            f"{harness.mib(mirror.size_bytes)}, hits {mirror.hits}, misses {mirror.misses}"
        )
    return statistics.median(ratios)


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-megabytes", type=int, default=320)
    parser.add_argument("--new-commits", type=int, default=3)
    parser.add_argument("--big-rounds", type=int, default=1)
    parser.add_argument("--small-megabytes", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the small comparison")
    return parser.parse_args()


def main() -> None:
    options = parse_options()
    began = time.perf_counter()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    big_bare = cached_repo(options.big_megabytes)
    small_bare = cached_repo(options.small_megabytes)
    harness.migrate()
    (owner,) = harness.create_users(["bench"])
    served = Served()
    worker = harness.start_worker(bench_clone.ROOT / "worker.log")
    try:
        bench_clone.warm_up(owner, served)
        args = (options.big_rounds, options.new_commits, served, owner)
        ratios = {"after new commits": after_new_commits(big_bare, *args)}
        small = bench_clone.compare("small", small_bare, options.rounds, served, owner, worker)
        ratios["cold vs docker run"] = statistics.median(small.ratios)
    finally:
        worker.stop(grace=30)
        served.stop()
        harness.remove(bench_clone.ROOT)
    print("\n| measure | median ratio | target |\n| --- | --- | --- |")
    for label, ratio in ratios.items():
        verdict = "met" if ratio <= TARGETS[label] else "missed"
        print(f"| {label} | {ratio:.3f} | ≤ {TARGETS[label]:.2f} ({verdict}) |")
    print(f"\nwhole run {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
