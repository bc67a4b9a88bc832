"""Benchmark: clone jobs end to end against `docker run git clone` + GNU tar, cache hits, the
worker's memory and its throughput, all in one run. Prints figures; asserts nothing.

    .venv/bin/python scripts/bench_clone.py [--small-megabytes 20] [--big-megabytes 400]
        [--rounds 3] [--hits 20] [--throughput-jobs 20] [--profile]

Needs the test engine (`bash .ci/engine.sh`). One `manage.py worker` cluster (CLONES_WORKERS=2,
as harness.py starts it) on a throwaway database runs every job; clone containers run on the
test engine (their installation label keeps other users' workers away from them). Repositories
are served by `git daemon` on 127.0.0.1. Jobs use the defaults: full history, tar.

The repositories: generated with `git fast-import`, then `git repack -adf` (deltas) with a
bitmap. Many files (4-48 KiB, ~20 KiB on average, 50 a directory) of code-like text: lines
drawn from a pool of 60,000 made of 4,000 pseudo-words and hex digests, so zlib packs them about
1.8 : 1, and 8 commits, each after the first editing a tenth of the files (lines replaced,
inserted, deleted), so the pack holds delta chains to resolve. Files are added until the tip's
estimated packed size reaches MEGABYTES (history adds the rest): the pack is about MEGABYTES,
the checkout about 1.8x that. Not random bytes: checkout (many files), delta resolution and
packing matter as they do for real projects. Each size is built once and cached in
/tmp/cloneshelf-bench-cache/ (delete it to rebuild).

What is measured:

1. Ratio, per size: service = jobs.submit -> the job row says done (polled every 20 ms);
   baseline = `docker run --rm --network host` of the same git image on the same engine, as
   the same uid, `git -c <fsck_config(CLONES_FSCK)> clone URL` into a bind-mounted directory,
   then GNU `tar -cf` of the checkout ON THE HOST (where the service packs too). Rounds
   alternate which goes first. The service caches snapshots by URL + commit + options, so
   every round serves the repository under a new name (a `cp -al` hard-link copy of the bare
   repository): the service really clones each time; the baseline clones the same URL.
2. Cache hits: after a small job is done, its URL is submitted HITS times in turn; submit ->
   done, p50 and p95.
3. Peak RSS of the largest single process of the worker's process tree (psutil, every 20 ms),
   during each size's rounds (the clone's git runs in the container, outside that tree).
4. Throughput: THROUGHPUT_JOBS jobs of the small repository, each under its own name (each
   really clones), submitted at once by as many users as the per-user cap needs; jobs per
   minute from the first submission to the last job done.

--profile adds, for each size: the job rows' pick-up (created -> started), run (started ->
finished) and notice (finished -> seen here); the ref lookup (refs.resolve); once, a no-op
container through engine.run_git and with docker-py (create / start / wait / remove); and, on
one baseline checkout in a job directory, the service's extra git steps (read-tree HEAD, log),
its packing (archives.pack) against GNU tar, its directory walk (paths.usage) and the
checkout's removal.

Settings changed from the test settings, for every process: CLONES_WORKERS=2,
CLONES_CLONE_TIMEOUT=3600 (tests use 60 s), CLONES_MAX_SUBMISSIONS_PER_HOUR=100000 and
CLONES_MAX_REPO_BYTES=64g (caps only, no effect on speed).
"""

import argparse
import contextlib
import math
import os
import random
import shlex
import statistics
import string
import subprocess
import sys
import time
import uuid
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import harness
from harness import mib

SETTINGS = {
    "CLONES_WORKERS": "2",
    "CLONES_CLONE_TIMEOUT": "3600",
    "CLONES_MAX_SUBMISSIONS_PER_HOUR": "100000",
    "CLONES_MAX_REPO_BYTES": "64g",
}
ROOT = harness.setup_django("cloneshelf-bench-", SETTINGS)

from django.conf import settings  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402

from clones import jobs  # noqa: E402
from clones.models import CloneJob, Status  # noqa: E402
from clones.pipeline import archives, cloning, engine, gitwords, paths, refs  # noqa: E402
from tests.support.gitservers import GitDaemon  # noqa: E402
from tests.support.repos import GIT_ENV, git, make_tiny_repo  # noqa: E402

CACHE = Path("/tmp/cloneshelf-bench-cache")
GENERATOR = "text-v1"  # change when the generator changes: a new cache key
POLL = 0.02
TARGETS = {"small": 1.15, "big": 1.05}
HIT_P50_TARGET = 0.300
RSS_TARGET = 100 * 2**20


# Repositories.


def line_pool(rng: random.Random, size: int = 60_000) -> list[str]:
    """Code-like lines: assignments, comments, definitions and lock-file entries."""
    words = [
        "".join(rng.choices(string.ascii_lowercase, k=rng.randint(2, 10))) for _ in range(4000)
    ]

    def some(count: int) -> list[str]:
        return rng.choices(words, k=count)

    def line() -> str:
        kind, indent = rng.random(), " " * rng.choice([0, 4, 8, 12])
        if kind < 0.35:
            a, b, c = some(3)
            return f"{indent}{a}_{b} = {c}({', '.join(some(rng.randint(1, 3)))})"
        if kind < 0.6:
            return f"{indent}# {' '.join(some(rng.randint(4, 12)))}"
        if kind < 0.8:
            return f'    "{"-".join(some(2))}": "sha256-{rng.randbytes(24).hex()}",'
        return f"def {'_'.join(some(2))}({', '.join(some(rng.randint(0, 4)))}):"

    return [line() for _ in range(size)]


class TextRepo:
    """The generated repository's contents: file `i` at commit `c`, deterministically."""

    COMMITS = 8
    EDITED_PER_COMMIT = 10  # one file in ten

    def __init__(self):
        self.pool = line_pool(random.Random(0))

    def path(self, i: int) -> str:
        return f"pkg{i // 2000:03d}/mod{i // 50 % 40:02d}/file{i:06d}.py"

    def lines(self, i: int, commit: int) -> list[str]:
        rng = random.Random(i)
        lines = rng.choices(self.pool, k=rng.randint(80, 900))  # 4-48 KiB
        edited_at = i % self.EDITED_PER_COMMIT
        if 0 < edited_at <= commit:
            self._edit(lines, random.Random(-i))
        return lines

    def _edit(self, lines: list[str], rng: random.Random) -> None:
        for _ in range(len(lines) // 20):
            lines[rng.randrange(len(lines))] = rng.choice(self.pool)
            lines.insert(rng.randrange(len(lines)), rng.choice(self.pool))
        start = rng.randrange(len(lines))
        del lines[start : start + 3]

    def blob(self, i: int, commit: int) -> bytes:
        return ("\n".join(self.lines(i, commit)) + "\n").encode()

    def edited(self, commit: int, files: int) -> range:
        """The files commit `commit` (1..COMMITS-1) changes."""
        return range(commit % self.EDITED_PER_COMMIT, files, self.EDITED_PER_COMMIT)


def fast_import_stream(repo: TextRepo, target_bytes: int, out) -> int:
    """Write every commit to `out` (fast-import's stdin); the number of files."""
    files, raw, packed_estimate = 0, 0, 0.0
    _commit_header(out, 0)
    sampled_raw = sampled_packed = 1
    while packed_estimate < target_bytes * 0.9:
        data = repo.blob(files, 0)
        _modify(out, repo.path(files), data)
        if files % 16 == 0:  # estimate the packed size from a sample
            sampled_raw += len(data)
            sampled_packed += len(zlib.compress(data))
        files += 1
        raw += len(data)
        packed_estimate = raw * sampled_packed / sampled_raw
    for commit in range(1, repo.COMMITS):
        _commit_header(out, commit)
        for i in repo.edited(commit, files):
            _modify(out, repo.path(i), repo.blob(i, commit))
    return files


def _commit_header(out, commit: int) -> None:
    message = f"commit {commit}\n".encode()
    when = 1_700_000_000 + commit * 3600
    out.write(b"commit refs/heads/main\n")
    out.write(f"committer Bench <bench@example.invalid> {when} +0000\n".encode())
    out.write(f"data {len(message)}\n".encode() + message)


def _modify(out, path: str, data: bytes) -> None:
    out.write(f"M 100644 inline {path}\ndata {len(data)}\n".encode())
    out.write(data + b"\n")


REPACK_AFRESH = ["repack", "-a", "-d", "-f", "-b", "--window=10", "--depth=50", "-q"]


def cached_repo(
    megabytes: int, generator: str = GENERATOR, stream=None, repack: list[str] = REPACK_AFRESH
) -> Path:
    """The bare repository of about `megabytes` packed, built once into CACHE: `stream(target
    bytes, out)` writes fast-import's input (by default fast_import_stream's) and says what it
    made; then `git repack`."""
    bare = CACHE / f"{generator}-{megabytes}mib.git"
    if bare.exists():
        return bare
    stream = stream or (lambda target, out: f"{fast_import_stream(TextRepo(), target, out)} files")
    CACHE.mkdir(parents=True, exist_ok=True)
    building = CACHE / f"building-{os.getpid()}.git"
    started = time.perf_counter()
    git("init", "--quiet", "--bare", "--initial-branch=main", str(building), cwd=CACHE)
    importer = subprocess.Popen(
        ["git", "fast-import", "--quiet"], stdin=subprocess.PIPE, cwd=building, env=GIT_ENV
    )
    made = stream(megabytes * 2**20, importer.stdin)
    importer.stdin.close()
    if importer.wait() != 0:
        sys.exit("git fast-import failed")
    git(*repack, cwd=building)
    building.rename(bare)
    print(f"built {bare.name}: {made}, in {time.perf_counter() - started:.0f} s")
    return bare


def describe_repo(bare: Path) -> str:
    packed = sum(f.stat().st_size for f in (bare / "objects").rglob("*") if f.is_file())
    tree = git("ls-tree", "-r", "-l", "HEAD", cwd=bare).splitlines()
    checkout = sum(int(line.split()[3]) for line in tree)
    commits = git("rev-list", "--count", "HEAD", cwd=bare)
    return f"{mib(packed)} packed, checkout {mib(checkout)} in {len(tree)} files, {commits} commits"


class Served:
    """`git daemon` over ROOT/served; every name is a fresh `cp -al` copy of a bare repository,
    so the service has never seen its URL."""

    def __init__(self):
        self.base = ROOT / "served"
        self.base.mkdir(parents=True)
        self.daemon = GitDaemon(self.base)

    def fresh_url(self, bare: Path, name: str) -> str:
        subprocess.run(["cp", "-al", str(bare), str(self.base / f"{name}.git")], check=True)
        return self.daemon.url(f"{name}.git")

    def stop(self) -> None:
        self.daemon.stop()


# Service and baseline.


@dataclass
class ServiceRun:
    seconds: float
    job: CloneJob
    pick_up: float  # created_at -> started_at
    run: float  # started_at -> finished_at
    notice: float  # finished_at -> seen done here


def run_job(owner, url: str, **options) -> ServiceRun:
    return timed_job(lambda: jobs.submit(owner, url, **options))


def timed_job(submit) -> ServiceRun:
    """The job `submit()` queues, from its submission until it is seen done."""
    started = time.perf_counter()
    job = wait_done([submit()])[0]
    seen = time.time()
    elapsed = time.perf_counter() - started
    return ServiceRun(
        elapsed,
        job,
        pick_up=(job.started_at - job.created_at).total_seconds(),
        run=(job.finished_at - job.started_at).total_seconds(),
        notice=seen - job.finished_at.timestamp(),
    )


def wait_done(submitted: list[CloneJob]) -> list[CloneJob]:
    """The jobs, reloaded once none is active; exits if any did not end done."""
    ids = [job.pk for job in submitted]
    while CloneJob.objects.filter(pk__in=ids).active().exists():
        time.sleep(POLL)
    finished = list(CloneJob.objects.filter(pk__in=ids))
    failed = [job for job in finished if job.status != Status.DONE]
    if failed:
        log = (ROOT / "worker.log").read_text(errors="replace")[-3000:]
        sys.exit(f"{len(failed)} job(s) did not finish: {failed[0].error}\n{log}")
    return finished


@dataclass
class BaselineRun:
    clone: float  # docker run ... git clone
    tar: float  # GNU tar -cf on the host

    @property
    def seconds(self) -> float:
        return self.clone + self.tar


def baseline_command(url: str, workdir: Path) -> list[str]:
    uid, gid = engine.container_user()
    fsck = [option for item in cloning.fsck_config(settings.CLONES_FSCK) for option in ("-c", item)]
    return [
        *("docker", "run", "--rm", "--network", "host", "--user", f"{uid}:{gid}"),
        *("--mount", f"type=bind,source={workdir},target=/job", "--workdir", "/job"),
        *("--entrypoint", "git", "--env", "HOME=/tmp", "--env", "GIT_CONFIG_NOSYSTEM=1"),
        *("--env", "GIT_CONFIG_GLOBAL=/dev/null"),
        *(settings.CLONES_GIT_IMAGE, *fsck, "clone", "--quiet", url, "/job/repo"),
    ]


def run_baseline(url: str, workdir: Path, keep: bool = False) -> BaselineRun:
    """`docker run git clone` into `workdir`/repo, then `tar -cf` of it on the host."""
    workdir.mkdir(parents=True, exist_ok=True)
    os.chown(workdir, *engine.container_user())
    started = time.perf_counter()
    clone = subprocess.run(baseline_command(url, workdir), capture_output=True, text=True)
    if clone.returncode != 0:
        sys.exit(f"the baseline clone failed: {clone.stderr}")
    cloned = time.perf_counter()
    tar = ["tar", "-cf", str(workdir / "repo.tar"), "-C", str(workdir), "repo"]
    subprocess.run(tar, check=True)
    result = BaselineRun(cloned - started, time.perf_counter() - cloned)
    if not keep:
        harness.remove(workdir)
    return result


# The measurements.


@dataclass
class Comparison:
    label: str
    ratios: list[float] = field(default_factory=list)
    service: list[ServiceRun] = field(default_factory=list)
    baseline: list[BaselineRun] = field(default_factory=list)
    peak_single: int = 0
    peak_tree: int = 0
    last_url: str = ""


def compare(label: str, bare: Path, rounds: int, served: Served, owner, worker) -> Comparison:
    """Alternating rounds of service and baseline, each round on a fresh URL."""
    result = Comparison(label)
    print(f"\n== {label}: {bare.name}: {describe_repo(bare)}")
    memory = harness.PeakMemory(worker.pid)
    try:
        for number in range(1, rounds + 1):
            url = served.fresh_url(bare, f"{label}-{number}")
            one_round(result, number, url, owner)
    finally:
        memory.stop()
    result.peak_single, result.peak_tree = memory.peak_single, memory.peak_tree
    print(
        f"{label}: median ratio {statistics.median(result.ratios):.3f}; worker peak RSS "
        f"{mib(result.peak_single)} largest process, {mib(result.peak_tree)} whole tree"
    )
    return result


def one_round(result: Comparison, number: int, url: str, owner) -> None:
    workdir = ROOT / "baseline" / f"{result.label}-{number}"
    if number % 2:  # odd rounds: service first
        service, baseline = run_job(owner, url), run_baseline(url, workdir)
        order = "service first"
    else:
        baseline, service = run_baseline(url, workdir), run_job(owner, url)
        order = "baseline first"
    if result.label != "small":
        default_storage.delete(service.job.archive.name)  # GBs of disk; nobody reuses it
    ratio = service.seconds / baseline.seconds
    result.ratios.append(ratio)
    result.service.append(service)
    result.baseline.append(baseline)
    result.last_url = url
    print(
        f"{result.label} round {number} ({order}, {url.rsplit('/', 1)[-1]}): "
        f"service {service.seconds:.2f} s [pick-up {service.pick_up:.2f}, run "
        f"{service.run:.2f}, noticed +{service.notice:.2f}; archive "
        f"{mib(service.job.archive_size)}] | baseline {baseline.seconds:.2f} s [docker run "
        f"git clone {baseline.clone:.2f} + host tar {baseline.tar:.2f}] | ratio {ratio:.3f}"
    )


def cache_hits(owner, url: str, count: int) -> list[float]:
    """submit -> done for `url`, whose snapshot is ready, `count` times in turn."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        wait_done([jobs.submit(owner, url)])
        times.append(time.perf_counter() - started)
    print(
        f"\n== cache hits: {count} submissions of {url.rsplit('/', 1)[-1]} in turn: "
        f"p50 {statistics.median(times) * 1000:.0f} ms, p95 {percentile(times, 95) * 1000:.0f} "
        f"ms, max {max(times) * 1000:.0f} ms"
    )
    return times


def percentile(values: list[float], percent: float) -> float:
    """Nearest rank."""
    ordered = sorted(values)
    return ordered[max(math.ceil(percent / 100 * len(ordered)) - 1, 0)]


def throughput(bare: Path, served: Served, count: int, worker) -> float:
    """Jobs per minute: `count` distinct URLs submitted at once, until the last is done."""
    cap = settings.CLONES_MAX_ACTIVE_PER_USER
    users = harness.create_users([f"tput-{n}" for n in range(math.ceil(count / cap))])
    urls = [served.fresh_url(bare, f"tput-{n}") for n in range(count)]
    memory = harness.PeakMemory(worker.pid)
    started = time.perf_counter()
    submitted = [jobs.submit(users[n // cap], url) for n, url in enumerate(urls)]
    wait_done(submitted)
    elapsed = time.perf_counter() - started
    memory.stop()
    per_minute = count * 60 / elapsed
    print(
        f"\n== throughput: {count} jobs of the small repository (distinct URLs), "
        f"{len(users)} users x up to {cap}, CLONES_WORKERS={settings.Q_CLUSTER['workers']}: "
        f"{elapsed:.1f} s, {per_minute:.1f} jobs/min; worker peak RSS "
        f"{mib(memory.peak_single)} largest process, {mib(memory.peak_tree)} whole tree"
    )
    return per_minute


# --profile.


def profile(result: Comparison, bare: Path, served: Served) -> None:
    """Where a repository's service time goes, piece by piece."""
    print(f"\n== profile ({result.label} repository)")
    for name in ["seconds", "pick_up", "run", "notice"]:
        print(f"  job {name:8}: median {median(getattr(r, name) for r in result.service):.3f} s")
    base = result.baseline
    print(f"  baseline docker run git clone: median {median(b.clone for b in base):.3f} s")
    print(f"  baseline host tar:             median {median(b.tar for b in base):.3f} s")
    url = served.fresh_url(bare, f"profile-{result.label}")
    lookup = timed(lambda: refs.resolve(url, gitwords.pinned(url)))  # the pin included, as a job
    print(f"  refs.resolve (ls-remote, in this process): {lookup:.3f} s")
    if result.label == "small":  # the same for every size
        profile_container()
    profile_checkout(url)


def median(values) -> float:
    return statistics.median(list(values))


def timed(action, repeat: int = 5) -> float:
    """Median seconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def profile_container() -> None:
    with job_directory() as (job_id, job_dir):
        mount = paths.engine_path(job_dir)
        total = timed(lambda: engine.run_git(str(job_id), [["--version"]], mount, 60, {}))
        print(f"  engine.run_git(git --version), whole: {total:.3f} s")
        steps = [docker_steps(mount) for _ in range(5)]
        split = ", ".join(f"{name} {median(s[name] for s in steps):.3f}" for name in steps[0])
        print(f"  docker-py, hardened no-op container: {split} s")


@contextlib.contextmanager
def job_directory():
    """(id, directory) of a job directory, locked as a job's is: the worker's sweep of
    leftovers keeps away."""
    job_id = uuid.uuid4()
    with paths.job_dir_lock(job_id):
        try:
            yield job_id, paths.create_job_dir(job_id, owner=engine.container_user())
        finally:
            paths.remove_job_dir(job_id)


def docker_steps(mount) -> dict[str, float]:
    """Seconds of each step of a hardened `git --version` container, through docker-py."""
    from docker.types import Mount

    times = {}
    with engine.connected() as client:
        clock = time.perf_counter()
        container = client.containers.create(
            settings.CLONES_GIT_IMAGE,
            entrypoint=["git", "--version"],
            mounts=[Mount(target=engine.MOUNT_POINT, source=str(mount), type="bind")],
            **engine.hardening(),
        )
        for name, step in [
            ("create", lambda: None),  # done above
            ("start", container.start),
            ("wait", container.wait),
            ("remove", lambda: container.remove(force=True)),
        ]:
            step()
            times[name], clock = time.perf_counter() - clock, time.perf_counter()
    return times


def profile_checkout(url: str) -> None:
    """On one baseline checkout in a job directory: the steps the service adds to clone + tar."""
    with job_directory() as (job_id, job_dir):
        run_baseline(url, job_dir, keep=True)
        checkout = job_dir / "repo"
        size, entries = paths.usage(checkout)
        print(f"  one checkout: {mib(size)} in {entries} entries (working tree and .git)")
        extra = [["-C", "/job/repo", "read-tree", "HEAD"], ["-C", "/job/repo", "log", "-1"]]
        mount = paths.engine_path(job_dir)
        steps = timed(lambda: engine.run_git(str(job_id), extra, mount, 600, {}), repeat=3)
        print(
            f"  engine.run_git(read-tree HEAD && log -1), the service's extra steps: {steps:.3f} s"
        )
        staging = job_dir / "python.tar"
        python = timed(lambda: archives.pack(checkout, "repo", staging, "tar", 0), repeat=3)
        gnu = ["tar", "-cf", str(job_dir / "gnu.tar"), "-C", str(job_dir), "repo"]
        gnu_tar = timed(lambda: subprocess.run(gnu, check=True), repeat=3)
        print(f"  archives.pack (tar): {python:.3f} s   GNU tar -cf: {gnu_tar:.3f} s")
        walk = timed(lambda: paths.usage(checkout))
        print(f"  paths.usage walk (check_size, once a second while git runs): {walk:.3f} s")
        for archive in ["python.tar", "gnu.tar", "repo.tar"]:
            (job_dir / archive).unlink()
        started = time.perf_counter()
        paths.remove(checkout)
        removal = time.perf_counter() - started
        print(f"  removing the checkout (the job does it before it is done): {removal:.3f} s")


# Summary.


@dataclass
class Row:
    name: str
    measured: str
    wanted: str = ""
    met: bool | None = None  # None: no target


def summary(rows: list[Row]) -> None:
    print("\n== summary")
    print(f"{'target':44} {'measured':>12} {'wanted':>12}  verdict")
    for row in rows:
        verdict = "-" if row.met is None else ("met" if row.met else "MISSED")
        print(f"{row.name:44} {row.measured:>12} {row.wanted:>12}  {verdict}")


def summary_rows(comparisons: list[Comparison], hits: list[float], per_minute: float) -> list:
    rows = []
    for result in comparisons:
        ratio, target = statistics.median(result.ratios), TARGETS[result.label]
        name = f"{result.label}: service / baseline, median"
        rows.append(Row(name, f"{ratio:.3f}", f"<= {target}", ratio <= target))
    if hits:
        p50, p95 = statistics.median(hits), percentile(hits, 95)
        name = "cache hit, submit -> done, p50"
        rows.append(Row(name, f"{p50 * 1000:.0f} ms", "<= 300 ms", p50 <= HIT_P50_TARGET))
        rows.append(Row("cache hit, submit -> done, p95", f"{p95 * 1000:.0f} ms"))
    for result in comparisons:
        peak, name = result.peak_single, f"{result.label}: worker peak RSS, largest process"
        rows.append(Row(name, mib(peak), "<= 100 MiB", peak <= RSS_TARGET))
    rows.append(Row("jobs/min, 2 workers, small repository", f"{per_minute:.1f}"))
    return rows


# Main.


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-megabytes", type=int, default=20)
    parser.add_argument("--big-megabytes", type=int, default=400, help="0 skips the big one")
    parser.add_argument("--rounds", type=int, default=3, help="small rounds; big: min(this, 2)")
    parser.add_argument("--hits", type=int, default=20)
    parser.add_argument("--throughput-jobs", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    return parser.parse_args()


def main() -> None:
    options = parse_options()
    began = time.perf_counter()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(
        f"engine {os.environ['DOCKER_HOST']}, image {settings.CLONES_GIT_IMAGE}, "
        f"CLONES_FSCK={settings.CLONES_FSCK}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    small_bare = cached_repo(options.small_megabytes)
    big_bare = cached_repo(options.big_megabytes) if options.big_megabytes else None
    harness.migrate()
    (owner,) = harness.create_users(["bench"])
    served = Served()
    worker = harness.start_worker(ROOT / "worker.log")
    try:
        warm_up(owner, served)
        comparisons = [compare("small", small_bare, options.rounds, served, owner, worker)]
        hits = cache_hits(owner, comparisons[0].last_url, options.hits)
        per_minute = throughput(small_bare, served, options.throughput_jobs, worker)
        if big_bare:
            rounds = min(options.rounds, 2)
            comparisons.append(compare("big", big_bare, rounds, served, owner, worker))
        if options.profile:
            for result, bare in zip(comparisons, [small_bare, big_bare], strict=False):
                profile(result, bare, served)
        summary(summary_rows(comparisons, hits, per_minute))
    finally:
        worker.stop(grace=30)
        served.stop()
        harness.remove(ROOT)
    print(
        f"\nwhole run {time.perf_counter() - began:.0f} s, "
        f"load average now {os.getloadavg()[0]:.2f}"
    )


def warm_up(owner, served: Served) -> None:
    """The worker's first task pays its imports, the engine's first container its caches."""
    repo = make_tiny_repo(served.base, "warm-up")
    url = served.daemon.url(repo.name)
    run_job(owner, url)
    run_baseline(url, ROOT / "baseline" / "warm-up")


if __name__ == "__main__":
    main()
