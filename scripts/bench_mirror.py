"""Benchmark: the incremental mirror cache (issue 17), end to end. Prints figures and ratios;
asserts nothing.

    .venv/bin/python scripts/bench_mirror.py [--history-megabytes 320] [--big-megabytes 320]
        [--new-commits 3] [--big-rounds 1] [--small-megabytes 20] [--rounds 3]

Needs the test engine (`bash .ci/engine.sh`). It runs as scripts/bench_clone.py does, and with
its pieces: the same settings and one `manage.py worker` cluster on a throwaway database,
repositories generated with `git fast-import` (cached in /tmp/cloneshelf-bench-cache/), served
by `git daemon` on 127.0.0.1, each round under a new name (a `cp -al` copy) that the service has
never seen. Two shapes of repository of 300+ MiB:

- history-heavy (history_stream): as real big repositories are, a long history and a checkout
  a fraction of its pack (git/git: ~70k commits, ~250 MiB pack, ~50 MiB checkout): files of
  code-like text adding up to ~12 % of the pack, then ~11k commits each editing 5 of them (4
  hunks of 50 lines replaced), stored as delta chains (fast-import's, each file's newest
  version whole, as `git gc` stores them; kept by `git repack -adb`).
  A cold job is mostly the server's packing, the transfer, and resolving and checking the deltas.
- checkout-heavy (bench_clone's repository): 8 commits, a checkout larger than its pack, so
  that any job is mostly checking out and packing the working tree.

1. Snapshot after new commits ÷ cold job, per shape: a cold job (the URL is new: its mirror is
   made, then the job built from it), then NEW_COMMITS commits pushed upstream (each editing a
   few files, as a day's work does), then a job of the new tip (a fetch of those commits into
   the mirror, then the build). Target ≤ 10 %. Measured with the defaults (full history, tar)
   on both shapes, one-off jobs (which a full history builds from the mirror, as a watch's
   snapshot); and with files history on the history-heavy shape, as a watch's snapshots (of a
   paused watch, queued as its check does): a one-off files job makes no mirror.
2. Cold one-off job ÷ `docker run` git clone + host tar, on the SMALL repository, alternating
   which goes first (bench_clone.compare): the service's cold job now makes the mirror and
   builds from it. Target ≤ 1.15.
"""

import argparse
import os
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import bench_clone  # sets Django up, as bench_clone.SETTINGS say
import harness
from bench_clone import Served, TextRepo, cached_repo, describe_repo, run_job, timed_job
from django.db import transaction

from clones import jobs, watches
from clones.models import CloneJob, History, Mirror
from clones.pipeline import cloning, mirrors
from tests.support.repos import GIT_ENV

TARGETS = {"after new commits": 0.10, "cold vs docker run": 1.15}
FILES_PER_COMMIT = 5


# The history-heavy shape: a long history of edits, a checkout a fraction of its pack.
HISTORY_GENERATOR = "history-v3"  # change when the generator changes: a new cache key
CHECKOUT_SHARE = 0.12  # the checkout's bytes, of the pack's
EDITS_PER_COMMIT = 5  # files a commit edits
HUNKS_PER_EDIT, HUNK_LINES = 4, 50  # each replaced by as many new lines: ~9 KiB of new text


def history_stream(target_bytes: int, out) -> str:
    """fast-import's input for a repository whose pack is about `target_bytes`: files of
    code-like text (bench_clone.TextRepo's) adding up to CHECKOUT_SHARE of it, then as many
    commits, each editing EDITS_PER_COMMIT of them (hunks replaced), as the history's new text,
    compressed, needs to make up the rest. fast-import stores a blob as a delta against the
    blob before it in the stream, so every file's versions are written one after another
    first (marked, newest first), and then the commits that name them. What it made, in
    words."""
    repo, rng = TextRepo(), random.Random(1)
    count = raw = 0
    while raw < target_bytes * CHECKOUT_SHARE:
        raw += len(_text(repo.lines(count, 0)))
        count += 1
    edit = statistics.mean(len(zlib.compress(_text(_new_lines(rng, repo.pool)))) for _ in range(64))
    tip = raw / 1.8  # as zlib packs this text (bench_clone's docstring)
    # A delta packs a little tighter than its new text alone (measured: 0.8 of it).
    commits = max(int((target_bytes * 1.15 - tip) / (edit * EDITS_PER_COMMIT)), 1)
    edited = [rng.sample(range(count), EDITS_PER_COMMIT) for _ in range(commits)]
    edits_of: list[list[int]] = [[] for _ in range(count)]
    for commit, chosen in enumerate(edited, start=1):
        for i in chosen:
            edits_of[i].append(commit)
    marks: dict[tuple[int, int], int] = {}  # (commit, file) -> its blob's mark
    for i in range(count):
        lines, versions = repo.lines(i, 0), []
        for commit in [0, *edits_of[i]]:
            if commit:
                _edit(lines, rng, repo.pool)
            versions.append((commit, _text(lines)))
        # Newest first: each older version a delta against the newer, as `git gc` and forges
        # store them, so that checking out the tip resolves no chain.
        # fast-import takes any delta smaller than the blob: a tiny blob (too small to be one,
        # unique so that it is stored; unreachable, dropped by the repack) comes first, lest the
        # newest version be a delta of the file before's oldest.
        _blob(out, f"file {i}\n".encode())
        for commit, data in reversed(versions):
            marks[commit, i] = len(marks) + 1
            _blob(out, data, mark=len(marks))
    for commit, chosen in enumerate([range(count), *edited]):
        bench_clone._commit_header(out, commit)
        for i in chosen:
            out.write(f"M 100644 :{marks[commit, i]} {repo.path(i)}\n".encode())
    return f"{count} files, {commits + 1} commits"


def _blob(out, data: bytes, mark: int = 0) -> None:
    marked = f"mark :{mark}\n" if mark else ""
    out.write(f"blob\n{marked}data {len(data)}\n".encode() + data + b"\n")


def _new_lines(rng: random.Random, pool: list[str]) -> list[str]:
    return rng.choices(pool, k=HUNKS_PER_EDIT * HUNK_LINES)


def _edit(lines: list[str], rng: random.Random, pool: list[str]) -> None:
    """Replace HUNKS_PER_EDIT runs of HUNK_LINES lines with new ones."""
    new = _new_lines(rng, pool)
    for hunk in range(HUNKS_PER_EDIT):
        start = rng.randrange(max(len(lines) - HUNK_LINES, 1))
        lines[start : start + HUNK_LINES] = new[hunk * HUNK_LINES : (hunk + 1) * HUNK_LINES]


def _text(lines: list[str]) -> bytes:
    return ("\n".join(lines) + "\n").encode()


def history_repo(megabytes: int) -> Path:
    # Deltas as fast-import made them (no -f): finding them afresh in ~10^5 objects takes long.
    repack = ["repack", "-a", "-d", "-b", "-q"]
    return cached_repo(megabytes, HISTORY_GENERATOR, history_stream, repack)


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


@dataclass
class Measure:
    label: str  # shape and history
    bare: Path
    history: str = History.FULL
    ratios: list[float] = field(default_factory=list)
    cold: list[float] = field(default_factory=list)
    warm: list[float] = field(default_factory=list)
    floor: list[float] = field(default_factory=list)  # the least a full snapshot can take


def full_snapshot_floor(bare: Path) -> float:
    """Seconds that the bare minimum of a full-history tar snapshot takes on this machine, with
    no service around it: a copy of the repository as the mirror holds it (`git clone
    --no-hardlinks`, checked out on as many workers as a job's), then GNU tar of the checkout
    piped to sha256sum. No fetch, no container, no checks: what any service must at least do to
    hand out that archive."""
    with tempfile.TemporaryDirectory(dir=bench_clone.ROOT) as scratch:
        workers = f"checkout.workers={cloning.checkout_workers()}"
        started = time.perf_counter()
        copy = ["git", "-c", workers, "clone", "--quiet", "--no-hardlinks", str(bare), "repo"]
        subprocess.run(copy, cwd=scratch, check=True)
        archive = "tar -cf - repo | sha256sum > /dev/null"
        subprocess.run(archive, shell=True, cwd=scratch, check=True)
        return time.perf_counter() - started


def one_off_jobs(owner, url: str, history: str):
    """Jobs as a person submits them."""
    return lambda: run_job(owner, url, history=history)


def snapshot_jobs(owner, url: str, history: str):
    """A (paused: its checks are this script's) watch's snapshot jobs of the default branch,
    as its check queues them: a one-off files job makes no mirror, a watch's does."""
    watch = watches.create(owner, url, history=history, active=False)

    def submit() -> CloneJob:
        with transaction.atomic():
            job = watches._snapshot_job(watch, "")
            job.save()
            jobs.enqueue(job.id)
        return job

    return lambda: timed_job(submit)


def after_new_commits(measure: Measure, rounds: int, new_commits: int, served: Served, owner):
    """(job after `new_commits` upstream) ÷ (cold job), each round on a new URL."""
    print(
        f"\n== after new commits: {measure.label}: {measure.bare.name}: "
        f"{describe_repo(measure.bare)}"
    )
    jobs_of = one_off_jobs if measure.history == History.FULL else snapshot_jobs
    for number in range(1, rounds + 1):
        name = f"{measure.bare.name.removesuffix('.git')}-{measure.history}-{number}"
        url = served.fresh_url(measure.bare, name)
        run = jobs_of(owner, url, measure.history)
        cold = run()
        head = push_commits(served.base / f"{name}.git", new_commits)
        warm = run()
        if warm.job.commit != head:
            sys.exit(f"the snapshot is of {warm.job.commit}, not the new tip {head}")
        mirror = Mirror.objects.get(key=mirrors.key(url))
        measure.ratios.append(warm.seconds / cold.seconds)
        measure.cold.append(cold.seconds)
        measure.warm.append(warm.seconds)
        floor = ""
        if measure.history == History.FULL:
            measure.floor.append(full_snapshot_floor(served.base / f"{name}.git"))
            floor = f" | floor {measure.floor[-1]:.2f} s ({measure.floor[-1] / cold.seconds:.3f})"
        for job_run in (cold, warm):
            bench_clone.default_storage.delete(job_run.job.archive.name)  # GBs; nobody reuses them
        print(
            f"round {number} ({name}): cold {cold.seconds:.2f} s [run {cold.run:.2f}; archive "
            f"{harness.mib(cold.job.archive_size)}] | after {new_commits} commits "
            f"{warm.seconds:.2f} s [run {warm.run:.2f}] | ratio {measure.ratios[-1]:.3f} | "
            f"mirror {harness.mib(mirror.size_bytes)}, hits {mirror.hits}, misses {mirror.misses}"
            f"{floor}"
        )


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--big-megabytes", type=int, default=320)
    parser.add_argument("--history-megabytes", type=int, default=320)
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
    history_bare = history_repo(options.history_megabytes)
    measures = [
        Measure("history-heavy, full", history_bare),
        Measure("checkout-heavy, full", cached_repo(options.big_megabytes)),
        Measure("history-heavy, files (a watch's)", history_bare, History.FILES),
    ]
    small_bare = cached_repo(options.small_megabytes)
    harness.migrate()
    (owner,) = harness.create_users(["bench"])
    served = Served()
    worker = harness.start_worker(bench_clone.ROOT / "worker.log")
    try:
        bench_clone.warm_up(owner, served)
        for measure in measures:
            after_new_commits(measure, options.big_rounds, options.new_commits, served, owner)
        small = bench_clone.compare("small", small_bare, options.rounds, served, owner, worker)
    finally:
        worker.stop(grace=30)
        served.stop()
        harness.remove(bench_clone.ROOT)
    target = TARGETS["after new commits"]
    print(
        f"\n| after {options.new_commits} new commits ÷ cold job | median ratio | cold s | "
        "after s | floor ÷ cold | target |\n| --- | --- | --- | --- | --- | --- |"
    )
    for measure in measures:
        ratio = statistics.median(measure.ratios)
        cold = statistics.median(measure.cold)
        floor = f"{statistics.median(measure.floor) / cold:.3f}" if measure.floor else ""
        print(
            f"| {measure.label} | {ratio:.3f} | {cold:.1f} | "
            f"{statistics.median(measure.warm):.1f} | {floor} | "
            f"≤ {target:.2f} ({verdict(ratio, target)}) |"
        )
    ratio, target = statistics.median(small.ratios), TARGETS["cold vs docker run"]
    print(
        f"| cold vs docker run (small) | {ratio:.3f} | | | | ≤ {target:.2f} "
        f"({verdict(ratio, target)}) |"
    )
    print(f"\nwhole run {time.perf_counter() - began:.0f} s")


def verdict(ratio: float, target: float) -> str:
    return "met" if ratio <= target else "missed"


if __name__ == "__main__":
    main()
