"""Benchmark: what each option of a complete archive costs (issue 18), as the time of a job with
it ÷ the same job without it. Prints figures and ratios; asserts nothing.

    .venv/bin/python scripts/bench_options.py [--rounds 3] [--lfs-megabytes 40]
        [--submodule-megabytes 10]

Needs the test engine (`bash .ci/engine.sh`). Jobs run in this process (the worker's task, as
the pipeline tests run them), on a throwaway database, from git servers on 127.0.0.1 (smart
HTTP) and an LFS server there too, each round under new repository names (nothing cached: no
mirror, no snapshot). Each pair alternates which goes first. Files history and tar throughout,
but for the submodules, also measured full.

- lfs: a repository whose `assets/` are LFS_FILES files of random bytes in Git LFS (pointers in
  git), with `lfs` ÷ without (the pointers only), and ÷ a repository holding the same bytes in
  git itself (what the archive is, had the repository not used LFS).
- submodules: a superproject with SUBMODULES submodules (one of them with one of its own), each
  of random bytes, with `submodules` ÷ without, and ÷ the sum of a job of each repository on
  its own (what the option adds beyond the fetches themselves); their git traffic goes through
  the egress proxy (plain http here: the proxy relays, it does not decrypt).
- paths: the lfs-less repository's files job of one folder ÷ of all of it.
- ssh: the lfs-less repository over ssh:// (Debian's sshd on 127.0.0.1, git-shell, the owner's
  key made by the service, the host key known) ÷ over smart HTTP, files and full.
"""

import argparse
import hashlib
import ipaddress
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import harness

# More jobs than a person may ask for in an hour; SSH allowed, on the sshd's port.
SETTINGS = {
    "CLONES_MAX_SUBMISSIONS_PER_HOUR": "100000",
    "CLONES_ALLOWED_SCHEMES": "https,http,git,ssh",
    "CLONES_ALLOWED_PORTS": "https:*,http:*,git:*,ssh:*",
}
ROOT = harness.setup_django("cloneshelf-options-", SETTINGS)

from clones import jobs, tasks  # noqa: E402
from clones.models import CloneJob, History, KnownHost, Status  # noqa: E402
from clones.pipeline import sshaccess  # noqa: E402
from clones.safety import sshkeys, urlpolicy  # noqa: E402
from tests.support.gitservers import GitHTTPServer  # noqa: E402
from tests.support.lfsserver import LFSServer  # noqa: E402
from tests.support.repos import add_submodule, git  # noqa: E402
from tests.support.sshserver import SSHServer  # noqa: E402

LFS_FILES = 20
SUBMODULES = 3
LFS_HOST = "lfs.example"  # git-lfs sends no loopback address through a proxy: named instead


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lfs-megabytes", type=int, default=40)
    parser.add_argument("--submodule-megabytes", type=int, default=10)
    return parser.parse_args()


def new_repo(served: Path, name: str, files: dict[str, bytes], lfs: LFSServer | None = None):
    """A served repository `name` with `files` (path -> bytes); with `lfs`, `assets/` in LFS."""
    work = ROOT / "work" / name
    work.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    if lfs:
        (work / ".gitattributes").write_text("assets/** filter=lfs diff=lfs merge=lfs -text\n")
        (work / ".lfsconfig").write_text(f"[lfs]\n\turl = {lfs.url(name)}\n")
    for path, content in files.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        stored = lfs.add(content).encode() if lfs and path.startswith("assets/") else content
        (work / path).write_bytes(stored)
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "content", cwd=work)
    return work


def serve(work: Path, served: Path) -> None:
    git("clone", "--quiet", "--bare", str(work), str(served / f"{work.name}.git"), cwd=work)


def random_files(prefix: str, megabytes: int, count: int, seed: str) -> dict[str, bytes]:
    size = megabytes * 1024 * 1024 // count
    return {
        f"{prefix}/file-{number:02}.bin": hashlib.shake_256(f"{seed}{number}".encode()).digest(size)
        for number in range(count)
    }


def timed(owner, url: str, **options) -> float:
    began = time.perf_counter()
    job = jobs.submit(owner, url, **options)
    tasks.run_clone_job(str(job.id))
    job = CloneJob.objects.get(pk=job.pk)
    if job.status != Status.DONE:
        raise SystemExit(f"{url} {options}: {job.status} {job.error}")
    return time.perf_counter() - began


def pair(number: int, with_it, without_it) -> tuple[float, float]:
    """(with, without), alternating which runs first by the round's parity."""
    if number % 2:
        without = without_it()
        return with_it(), without
    with_ = with_it()
    return with_, without_it()


def main() -> None:
    options = parse_options()
    began = time.perf_counter()
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    harness.migrate()
    (owner,) = harness.create_users(["bench"])
    served = ROOT / "served"
    served.mkdir()
    http, lfs = GitHTTPServer(served), LFSServer(host_name=LFS_HOST)
    sshd = ssh_server(owner)
    real_resolve = urlpolicy.resolve
    urlpolicy.resolve = lambda host, port: (
        [ipaddress.ip_address("127.0.0.1")] if host == LFS_HOST else real_resolve(host, port)
    )
    rows: dict[str, list[float]] = {}
    try:
        for number in range(options.rounds):
            one_round(number, options, owner, served, (http, sshd), lfs, rows)
    finally:
        sshd.stop()
        http.stop()
        lfs.stop()
        harness.remove(ROOT)
    print("\n| job with the option ÷ the same job without it | median | rounds |")
    print("| --- | --- | --- |")
    for label, ratios in rows.items():
        shown = ", ".join(f"{ratio:.2f}" for ratio in ratios)
        print(f"| {label} | {statistics.median(ratios):.2f} | {shown} |")
    print(f"\nwhole run {time.perf_counter() - began:.0f} s")


def ssh_server(owner) -> SSHServer:
    """sshd on 127.0.0.1 accepting `owner`'s key (made by the service), its host key known."""
    sshd = SSHServer(ROOT / "sshd")
    sshd.authorize(sshaccess.make_key(owner).public_line)
    seen = sshkeys.parse_known_host(sshd.known_hosts_line())
    KnownHost.objects.create(
        **sshaccess.known_host_fields(seen),
    )
    return sshd


def one_round(number, options, owner, served, servers, lfs, rows) -> None:
    http, sshd = servers
    assets = random_files("assets", options.lfs_megabytes, LFS_FILES, f"lfs{number}")
    code = {"src/main.py": b"print('hello')\n" * 1000, "docs/guide.md": b"# guide\n" * 200}
    in_lfs = new_repo(served, f"in-lfs-{number}", {**code, **assets}, lfs)
    in_git = new_repo(served, f"in-git-{number}", {**code, **assets})
    for work in (in_lfs, in_git):
        serve(work, served)

    def fresh(work: Path) -> str:
        return http.url(f"{fresh_copy(work, served)}.git")

    files = {"history": History.FILES}
    with_lfs, pointers = pair(
        number,
        lambda: timed(owner, fresh(in_lfs), lfs=True, **files),
        lambda: timed(owner, fresh(in_lfs), **files),
    )
    with_lfs_again, plain = pair(
        number,
        lambda: timed(owner, fresh(in_lfs), lfs=True, **files),
        lambda: timed(owner, fresh(in_git), **files),
    )
    rows.setdefault("lfs: on ÷ off (pointers only)", []).append(with_lfs / pointers)
    rows.setdefault("lfs: on ÷ the same bytes in git", []).append(with_lfs_again / plain)
    one_path, whole = pair(
        number,
        lambda: timed(owner, fresh(in_git), paths=["docs"], **files),
        lambda: timed(owner, fresh(in_git), **files),
    )
    rows.setdefault("paths: one small folder ÷ the whole files job", []).append(one_path / whole)
    for history in (History.FILES, History.FULL):
        over_ssh, over_http = pair(
            number,
            lambda h=history: timed(
                owner, sshd.url(served / f"{fresh_copy(in_git, served)}.git"), history=h
            ),
            lambda h=history: timed(owner, fresh(in_git), history=h),
        )
        rows.setdefault(f"ssh ({history}): ssh:// ÷ http://", []).append(over_ssh / over_http)
    superproject, repositories = with_submodules(number, options, served, http)
    for history in (History.FILES, History.FULL):
        on, off = pair(
            number,
            lambda h=history: timed(owner, fresh(superproject), submodules=True, history=h),
            lambda h=history: timed(owner, fresh(superproject), history=h),
        )
        rows.setdefault(f"submodules ({history}): on ÷ off", []).append(on / off)
        # What the option costs beyond fetching the submodules at all: one job for all of them
        # (level by level, through the proxy) ÷ a job of each repository on its own.
        each = off + sum(timed(owner, fresh(work), history=history) for work in repositories)
        rows.setdefault(f"submodules ({history}): on ÷ a job of each", []).append(on / each)


_copies = iter(range(10**6))


def fresh_copy(work: Path, served: Path) -> str:
    """The served repository of `work` under a name never served before (nothing cached)."""
    name = f"{work.name}-copy{next(_copies)}"
    subprocess.run(["cp", "-r", str(served / f"{work.name}.git"), str(served / f"{name}.git")],
                   check=True)  # fmt: skip
    return name


def with_submodules(number, options, served, http) -> tuple[Path, list[Path]]:
    """super-N with SUBMODULES submodules, the first with one of its own (served), and those
    submodules' repositories."""
    megabytes = max(1, options.submodule_megabytes // (SUBMODULES + 1))
    subs = []
    for index in range(SUBMODULES + 1):
        files = random_files("data", megabytes, 4, f"sub{number}-{index}")
        work = new_repo(served, f"sub-{number}-{index}", {"README.md": b"sub\n", **files})
        subs.append(work)
    nested, *top_level = subs
    first = top_level[0]
    with_submodule(first, http.url(f"{nested.name}.git"), "nested", nested)
    serve(nested, served)
    for work in top_level:
        serve(work, served)
    top = new_repo(served, f"super-{number}", {"README.md": b"super\n"})
    for index, work in enumerate(top_level):
        with_submodule(top, http.url(f"{work.name}.git"), f"libs/{index}", work)
    serve(top, served)
    return top, subs


def with_submodule(work: Path, url: str, path: str, source: Path) -> None:
    add_submodule(work, url, path, source)
    git("commit", "--quiet", "-m", f"add {path}", cwd=work)


if __name__ == "__main__":
    main()
