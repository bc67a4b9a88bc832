"""What `git clone` means for a job: the git command lines, and what they leave behind. git's
output read back as a reason is clones.pipeline.gitwords' business; the container itself is
clones.pipeline.engine's."""

import dataclasses
import math
import os
import re
import shlex
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import quote, urlsplit

from django.conf import settings

from .. import units
from ..models import ArchiveFormat, CloneJob, History
from ..safety import egress, urlpolicy
from . import engine, gitwords, lfs, mirrors, paths, refs, sshaccess, submodules

CHECKOUT_DIR = "repo"  # inside the job directory
BARE_DIR = "repo.git"  # files only and bundle: no working tree is needed
COMMIT_TIME = "commit-time"  # beside it: the checked-out commit's time, as git tells it
# In a fresh clone's .git, made by the clone itself: the reflogs (with the clone's time) and the
# fetched tips of a commit fetched by name.
CLONE_TIME_FILES = ["logs", "FETCH_HEAD"]
# git-lfs's scratch in a .git: downloads under way, and its logs of errors (with their times).
LFS_SCRATCH = ["lfs/tmp", "lfs/incomplete", "lfs/logs"]
CREDENTIALS_FILE = "credentials"  # beside it, so never in the archive

# git reads no configuration but ours: not the image's /etc/gitconfig, not a global file.
GIT_ENVIRONMENT = {
    "HOME": "/tmp",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",  # a server asking for a password fails the clone at once
    "GIT_LFS_SKIP_SMUDGE": "1",
    "GIT_LITERAL_PATHSPECS": "1",  # a job's paths are names, never patterns or pathspec magic
}


@dataclass(frozen=True)
class Built:
    """What a clone left in the job directory for the packer."""

    path: Path  # a checkout to pack, or (files only, bundle) the finished archive
    commit_time: int | None = None  # a checkout's: every entry of its archive gets it
    # A watch's snapshot: [sha, subject] of the commits since its previous one, and how many
    # there were (None: they could not be told).
    changes: list[list[str]] = dataclasses.field(default_factory=list)
    changes_total: int | None = None
    # What its provenance records (clones.pipeline.provenance): the commit's tree, and the git
    # and the image that made it.
    tree: str = ""
    git_version: str = ""
    image: str = ""
    # Every ref of the repository (mirrors.branches), for a full or mirror archive's SWHID.
    branches: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)


def build(
    job: CloneJob,
    pinned: urlpolicy.PinnedURL,
    resolved: refs.Resolved,
    job_dir: Path,
    timeout: int,
    on_phase: Callable[[str], None],
    token: str = "",
    keep_going: Callable[[], None] = lambda: None,
    since: str = "",
) -> Built:
    """Clone the job's repository at `resolved.commit` as its options say, in one container,
    within `timeout` seconds, from the addresses `pinned` checked for the ref lookup: through
    its mirror (mirrors.serves), fetched first in the same container, or straight from the
    server. `keep_going` is called about once a second while git runs and may raise to stop it.
    `since`, for a watch's snapshot: the commit of its previous one, to list the commits after
    it (Built.changes)."""
    config = git_config(pinned, with_credentials=bool(token))
    deadline = time.monotonic() + timeout
    image = ""
    proxy: egress.Proxy | None = None
    ssh = sshaccess.for_owner(job.owner_id, pinned)

    def explained(output: str) -> gitwords.CloneFailed:
        if ssh and (said := sshaccess.explained(output, ssh)):
            return gitwords.CloneFailed(said, output)
        failed = gitwords.explained(output, job)
        return _fetched_beyond(job, failed, proxy, job_dir) if proxy else failed

    def execute(commands: list, mirror: mirrors.Lease | None = None) -> None:
        nonlocal image
        image = run(job, job_dir, commands, deadline, keep_going, on_phase, mirror, explained, ssh)

    try:
        with (
            _credentials(job_dir, job.url, token),
            sshaccess.written(job_dir, ssh, engine.container_user(), passwd=True)
            if ssh
            else nullcontext(),
            _egress(job) as (proxy, proxy_url),
        ):
            if mirrors.serves(job):
                built = _build_from_mirror(
                    job, pinned.url, resolved, job_dir, config, execute, since, proxy_url
                )
            else:
                plan = _plan(job, resolved, Source(pinned.url), proxy_url)
                execute(_configured(config, [*plan.commands, *_described(plan, resolved)]))
                built = _finish(plan, job_dir, resolved)
    except engine.ContainerTimedOut:
        raise gitwords.CloneFailed(f"The clone timed out after {timeout} s.", shared=True) from None
    return dataclasses.replace(built, image=image, **_read_description(job_dir))


@contextmanager
def _egress(job: CloneJob) -> Iterator[tuple[egress.Proxy | None, str]]:
    """For a job that fetches from beyond its repository's history (submodules, LFS files),
    the egress proxy that goes through, and its URL as the container reaches it; (None, "")
    for any other."""
    if not (job.submodules or job.lfs):
        yield None, ""
        return
    if not egress.available():
        raise gitwords.CloneFailed("This service cannot fetch submodules or LFS files now.")
    with ExitStack() as stack:
        try:
            proxy, url = stack.enter_context(egress.for_container())
        except OSError as exc:  # CLONES_EGRESS_BIND or _HOST wrong: the admin's to mend
            raise gitwords.CloneFailed(f"The egress proxy could not start: {exc}") from None
        yield proxy, url


def _plan(job: CloneJob, resolved: refs.Resolved, source: "Source", proxy_url: str) -> "Plan":
    """The job's plan; with submodules or LFS files, followed by their fetch (through the egress
    proxy at `proxy_url`) in the checkout it made."""
    if not proxy_url:
        return PLANS[job.history](job, resolved, source)
    if job.history == History.FILES:  # `git archive` leaves both out
        plan = _files_from_checkout_plan(job, resolved, source)
    else:
        plan = _checkout_plan(job, resolved, source)
    checkout = plan.repository
    shallow = job.history != History.FULL
    fetch = [
        *(submodules.commands(checkout, proxy_url, shallow) if job.submodules else []),
        *(lfs.commands(checkout, proxy_url, job.submodules) if job.lfs else []),
    ]
    return dataclasses.replace(plan, commands=[*plan.commands, *fetch])


def _fetched_beyond(
    job: CloneJob, failed: gitwords.CloneFailed, proxy: egress.Proxy, job_dir: Path
) -> gitwords.CloneFailed:
    """A failure of a job with submodules or LFS files, in words about them if it is theirs."""
    explained = failed
    if job.submodules:
        explained = submodules.explained(failed, proxy, _container_path(CHECKOUT_DIR))
    if job.lfs and explained is failed:
        explained = lfs.explained(failed, proxy, job_dir / CHECKOUT_DIR)
    if explained is failed and proxy.refusals:
        refused = proxy.refusals[0]
        message = f"A connection to {refused.destination} was refused: {refused.reason}"
        explained = gitwords.CloneFailed(message, failed.output, shared=True)
    return explained


TREE = "tree"  # in the job directory: the commit's tree, as git names it
GIT_VERSION = "git-version"


def _described(plan: "Plan", resolved: refs.Resolved) -> list[engine.Step]:
    """After the plan: the commit's tree and git's version, into TREE and GIT_VERSION."""
    tree = ["-C", plan.repository, "rev-parse", "--verify", f"{resolved.commit}^{{tree}}"]
    return [
        engine.Step(tree, stdout=_container_path(TREE)),
        engine.Step(["--version"], stdout=_container_path(GIT_VERSION)),
    ]


def _read_description(job_dir: Path) -> dict[str, str]:
    """What _described() wrote, taken out of the job directory."""
    found = {}
    for field, name in (("tree", TREE), ("git_version", GIT_VERSION)):
        path = job_dir / name
        found[field] = path.read_text().strip().removeprefix("git version ")
        path.unlink()
    return found


def _build_from_mirror(
    job: CloneJob,
    url: str,
    resolved: refs.Resolved,
    job_dir: Path,
    config: list[str],
    execute: Callable[..., None],
    since: str,
    proxy_url: str,
) -> Built:
    # The lookup of the default branch (no ref asked) names it: the mirror's HEAD follows it.
    head = "" if job.ref else resolved.ref
    with mirrors.lease(job.url) as mirror:
        source = Source(MIRROR_URL, mirrors.MOUNT_POINT, mirror.path)
        plan = _plan(job, resolved, source, proxy_url)
        # Listed before the mirror forgets a commit force-pushed away: `since` may be one.
        changes = mirrors.changes_commands(since, resolved.commit) if since else []
        fetch = mirrors.fetch_commands(mirror, url, head, then=changes)
        # Only what comes from the mirror may use the file transport.
        from_mirror = [*config, "-c", "protocol.file.allow=always"]
        described = [*plan.commands, *_described(plan, resolved)]
        commands = [*_configured(config, fetch), *_configured(from_mirror, described)]
        try:
            execute(commands, mirror)
        finally:
            mirror.fetched = (job_dir / mirrors.FETCHED).is_file()
        built = _finish(plan, job_dir, resolved)
    if job.history in (History.FULL, History.MIRROR):
        built = dataclasses.replace(built, branches=mirrors.branches(job_dir))
    if not since:
        return built
    changes, total = mirrors.read_changes(job_dir)
    return dataclasses.replace(built, changes=changes, changes_total=total)


def changes_since(
    job: CloneJob, since: str, job_dir: Path, timeout: int
) -> tuple[list[list[str]], int | None]:
    """For a watch's snapshot that another job built: the commits after `since` up to the job's
    commit and their number, listed in the repository's mirror as it is (the build fetched what
    it needed); ([], None) if there is no mirror or either commit is not in it."""
    with mirrors.reading(job.url) as mirror:
        if mirror is None:
            return [], None
        commands = mirrors.changes_commands(since, job.commit)
        run(job, job_dir, commands, time.monotonic() + timeout, lambda: None, mirror=mirror)
    return mirrors.read_changes(job_dir)


def _configured(config: list[str], commands: list[engine.Command]) -> list[engine.Command]:
    """`commands` with git's `-c` options before each one's arguments; an UnlessQuiet's work
    is local to the mirror and left as it is."""
    return [_with_config(config, command) for command in commands]


def _with_config(config: list[str], command: engine.Command) -> engine.Command:
    if isinstance(command, engine.Step):
        return dataclasses.replace(command, args=[*config, *command.args])
    if isinstance(command, engine.UnlessQuiet | engine.FailIfAny):
        return command
    return [*config, *command]


def _finish(plan: "Plan", job_dir: Path, resolved: refs.Resolved) -> Built:
    check_size(job_dir)  # a clone quicker than one look at it is checked here
    if plan.git_dir:
        _check_commit(job_dir / plan.git_dir, resolved)
    return plan.built(job_dir)


def _check_commit(git_dir: Path, resolved: refs.Resolved) -> None:
    """The clone is of the commit the ref named when it was looked up, or a branch moved in
    between: its snapshot would then be filed under the wrong commit."""
    cloned = head_commit(git_dir)
    if cloned != resolved.commit:
        raise gitwords.CloneFailed(
            f"'{resolved.ref}' moved from {resolved.commit[:12]} to {cloned[:12]} while it was "
            "being cloned; try again."
        )


@dataclass(frozen=True)
class Plan:
    commands: list[list[str]]  # git's arguments, before the -c options
    git_dir: str  # whose HEAD must be the commit, in the job directory (or absolute); "": none
    built: Callable[[Path], Built]  # from the job directory
    repository: str  # a repository holding the commit, in the container


# The mirror, from inside the container: cloned through upload-pack (as from a server, so that
# --depth and --single-branch hold and only the objects asked for come), or copied (every
# object, without the cost of packing and indexing them again: a full clone of a 300 MiB
# history in a second, not ten). A copy holds only what the mirror's refs reach, as each fetch
# drops what a deleted or rewound ref left behind (mirrors.fetch_commands). git copies rather
# than hardlinks between two bind mounts anyway (link() fails with EXDEV across mounts, and git
# falls back to copying unless --local is given); --no-hardlinks says so and skips the try.
MIRROR_URL = f"file://{mirrors.MOUNT_POINT}"
COPY = "--no-hardlinks"


@dataclass(frozen=True)
class Source:
    """Where a plan's git takes the repository from."""

    url: str  # the server's (pinned) URL, or MIRROR_URL
    path: str = ""  # the mirror in the container, to copy from; "": no mirror
    app_path: Path | None = None  # the mirror, as the worker sees it

    def whole(self) -> tuple[list[str], str]:
        """(clone options, source) for a clone that takes every object."""
        return ([COPY], self.path) if self.path else ([], self.url)


def _container_path(name: str) -> str:
    return f"{engine.MOUNT_POINT}/{name}"


def _clone(resolved: refs.Resolved, *options: str) -> list[str]:
    """`git clone` of the ref that was resolved; of the default branch for a commit."""
    branch = ["--branch", _short_name(resolved.ref)] if resolved.ref else []
    return ["clone", "--progress", "--no-recurse-submodules", *options, *branch]


def _short_name(ref: str) -> str:
    # Resolved like `git clone --branch`: a branch before a tag of the same name.
    return ref.removeprefix("refs/heads/").removeprefix("refs/tags/")


def _checkout_plan(
    job: CloneJob, resolved: refs.Resolved, source: Source, depth: int | None = None
) -> Plan:
    """Full and shallow clones: the working tree and .git, packed by the worker; with paths, a
    sparse checkout of them (the history whole). `depth`: shallow, that deep, whatever the
    job's history."""
    checkout = _container_path(CHECKOUT_DIR)
    commit = resolved.commit
    url = source.url
    copy, whole = source.whole()
    depth = depth or job.depth
    full = job.history == History.FULL and depth is None
    # With paths, the clone checks nothing out: the sparse checkout is set up first, then HEAD
    # (the ref's commit) is checked out within it.
    later = ["--no-checkout"] if job.paths else []
    head_within = [["-C", checkout, "read-tree", "-m", "-u", "HEAD"]] if job.paths else []
    detach = ["-C", checkout, "checkout", "--quiet", "--detach", commit]
    if full and resolved.ref:
        fetch = [[*_clone(resolved, *copy, *later), "--", whole, checkout]]
        check_out = head_within
    elif full:  # a commit: every branch, HEAD detached at it
        fetch = [[*_clone(resolved, *copy, "--no-checkout"), "--", whole, checkout]]
        check_out = [detach]
    elif resolved.ref:
        shallow = _clone(resolved, "--depth", str(depth), *later)
        fetch = [[*shallow, "--", url, checkout]]
        check_out = head_within
    else:  # a shallow commit: fetched by name, as servers allow since git 2.5
        by_name = ["fetch", "--progress", "--no-tags", "--depth", str(depth), "origin", commit]
        fetch = [
            ["init", "--quiet", checkout],
            ["-C", checkout, "remote", "add", "origin", url],
            ["-C", checkout, *by_name],
        ]
        check_out = [detach]
    commands = [
        *fetch,
        *_sparse_checkout(checkout, commit, job.paths),
        *check_out,
        # git wrote the URL it was given, pinned (for git://, to an address) and as this job
        # spelled it: the archive, shared, names the repository as its key does.
        ["-C", checkout, "remote", "set-url", "origin", urlpolicy.origin_url(job.url)],
        # The index git wrote holds this checkout's inode numbers and times; read afresh from
        # HEAD's tree it holds none, so that every archive of the commit is the same. git
        # compares the files' contents once, on the first `git status` after unpacking.
        ["-C", checkout, "read-tree", "HEAD"],
        # ...and marks no file as left out of a sparse checkout: `reapply` marks them again
        # (skip-worktree), writing no file's times either.
        *([["-C", checkout, "sparse-checkout", "reapply"]] if job.paths else []),
        ["-C", checkout, *COMMIT_TIME_COMMAND, "HEAD"],
    ]
    return Plan(
        commands,
        f"{CHECKOUT_DIR}/.git",
        _to_pack(CHECKOUT_DIR, f"{CHECKOUT_DIR}/.git"),
        repository=checkout,
    )


def _paths_exist(git_dir: str, commit: str, paths: list[str]) -> list[list[str]]:
    """Fail, naming the first of `paths` that the commit does not have (gitwords)."""
    return [["-C", git_dir, "cat-file", "-e", f"{commit}:{path}"] for path in paths]


def _sparse_checkout(checkout: str, commit: str, paths: list[str]) -> list[list[str]]:
    """Before the checkout: limit it to `paths`, each a file or a folder, named as they are
    (gitignore-style patterns, anchored, with their special characters escaped)."""
    if not paths:
        return []
    patterns = ["/" + SPARSE_SPECIAL.sub(r"\\\g<0>", path) for path in paths]
    return [
        *_paths_exist(checkout, commit, paths),
        ["-C", checkout, "sparse-checkout", "set", "--no-cone", *patterns],
    ]


# What a sparse-checkout pattern (gitignore's syntax) reads as more than the character itself:
# wildcards, a range and the escape. (A leading "!" or "#" is behind the anchoring "/", and a
# path has no trailing spaces to be trimmed: repopaths strips them.)
SPARSE_SPECIAL = re.compile(r"[*?\[\\]")


COMMIT_TIME_COMMAND = ["log", "-1", "--format=%ct", f"--output={_container_path(COMMIT_TIME)}"]


def _to_pack(directory: str, git_dir: str) -> Callable[[Path], Built]:
    """A checkout or a bare repository, in the job directory, for the worker to pack."""

    def built(job_dir: Path) -> Built:
        repositories = [job_dir / git_dir, *submodules.git_dirs(job_dir / git_dir)]
        for repository in repositories:
            # They say when and how it was cloned, not what.
            for made_by_the_clone in [*CLONE_TIME_FILES, *LFS_SCRATCH]:
                paths.remove(repository / made_by_the_clone)
        commit_time = job_dir / COMMIT_TIME
        packable = Built(job_dir / directory, int(commit_time.read_text()))
        commit_time.unlink()  # not in the archive
        return packable

    return built


def _files_from_checkout_plan(job: CloneJob, resolved: refs.Resolved, source: Source) -> Plan:
    """Files only, from a checkout one commit deep, for what `git archive` leaves out (the
    submodules and LFS files fetched into it): packed by the worker without any .git. Unlike
    `git archive`, this applies no export-ignore or export-subst attribute."""
    plan = _checkout_plan(job, resolved, source, depth=1)

    def files(job_dir: Path) -> Built:
        built = plan.built(job_dir)
        submodules.remove_git(built.path)
        return built

    return dataclasses.replace(plan, built=files)


def _bare_clone(resolved: refs.Resolved, url: str, *options: str) -> list[list[str]]:
    """A clone with no working tree: of the ref alone, or of everything with HEAD detached at
    the commit asked for."""
    bare = _container_path(BARE_DIR)
    if resolved.ref:
        return [[*_clone(resolved, "--bare", "--single-branch", *options), "--", url, bare]]
    return [
        [*_clone(resolved, "--bare"), "--", url, bare],
        ["-C", bare, "update-ref", "--no-deref", "HEAD", resolved.commit],
    ]


def _files_plan(job: CloneJob, resolved: refs.Resolved, source: Source) -> Plan:
    """The tree at the commit, no .git: `git archive`, whose archives depend on the commit
    alone (every entry dated the commit's time, modes normalized)."""
    output = f"archive.{job.archive_format}"

    def archive(git_dir: str, tree: str) -> list[list[str]]:
        return [
            *_paths_exist(git_dir, tree, job.paths),
            [
                *("-C", git_dir, "archive", f"--format={job.archive_format}"),
                *(f"--prefix={job.top_level}/", f"--output={_container_path(output)}", tree),
                *(["--", *job.paths] if job.paths else []),
            ],
        ]

    if source.path:  # the commit is in the mirror, by name: nothing to clone
        plan = archive(source.path, resolved.commit)
        return Plan(plan, "", _made_by_git(output), repository=source.path)
    url = source.url
    # Only the tip's tree is needed: one commit deep when a ref names it.
    clone = _bare_clone(resolved, url, "--depth", "1", "--no-tags") if resolved.ref else None
    bare = _container_path(BARE_DIR)
    commands = [*(clone or _bare_clone(resolved, url)), *archive(bare, "HEAD")]
    return Plan(commands, BARE_DIR, _made_by_git(output), repository=bare)


def _bundle_plan(job: CloneJob, resolved: refs.Resolved, source: Source) -> Plan:
    """One `git bundle` of the commit's history, with HEAD and the ref asked for, which `git
    clone` takes as it would a server."""
    output = "archive.bundle"
    # One thread: the pack's deltas, and so its bytes, do not depend on which thread won.
    bundle = [
        *("-C", _container_path(BARE_DIR), "-c", "pack.threads=1", "bundle", "create"),
        *("--quiet", _container_path(output), "HEAD", *filter(None, [resolved.ref])),
    ]
    clone = _bare_clone(resolved, source.url, "--no-tags")
    bare = _container_path(BARE_DIR)
    return Plan([*clone, bundle], BARE_DIR, _made_by_git(output), repository=bare)


def _mirror_plan(job: CloneJob, resolved: refs.Resolved, source: Source) -> Plan:
    """Every ref, as `git clone --mirror` keeps them: one bundle of them all, made in the
    mirror, or a copy of the mirror (a bare repository whose origin is the job's URL) packed by
    the worker as a checkout is. Either holds the refs the lookup saw, or the job fails."""
    if job.archive_format == ArchiveFormat.BUNDLE:
        output = "archive.bundle"
        bundle = [
            *("-C", source.path, "-c", "pack.threads=1", "bundle", "create", "--quiet"),
            *(_container_path(output), "--all"),
        ]
        built = _with_refs_of(resolved, _made_by_git(output))
        return Plan([bundle], str(source.app_path), built, repository=source.path)
    bare = _container_path(BARE_DIR)
    commands = [
        ["clone", "--mirror", COPY, "--", source.path, bare],
        ["-C", bare, "remote", "set-url", "origin", urlpolicy.origin_url(job.url)],
        ["-C", bare, *COMMIT_TIME_COMMAND, "HEAD"],
    ]
    built = _with_refs_of(resolved, _to_pack(BARE_DIR, BARE_DIR))
    return Plan(commands, BARE_DIR, built, repository=bare)


def _with_refs_of(
    resolved: refs.Resolved, built: Callable[[Path], Built]
) -> Callable[[Path], Built]:
    """`built`, once the mirror's refs are seen to be those the lookup saw (and the snapshot's
    key names): not so if a ref moved in between."""

    def checked(job_dir: Path) -> Built:
        if refs.digest(mirrors.mirror_refs(job_dir)) != resolved.every_ref_digest:
            raise gitwords.CloneFailed(REFS_MOVED)
        return built(job_dir)

    return checked


REFS_MOVED = "The repository's branches or tags changed while it was being cloned; try again."


def _made_by_git(output: str) -> Callable[[Path], Built]:
    return lambda job_dir: Built(job_dir / output)


PLANS = {
    History.FULL: _checkout_plan,
    History.SHALLOW: _checkout_plan,
    History.FILES: _files_plan,
    History.BUNDLE: _bundle_plan,
    History.MIRROR: _mirror_plan,
}

# A full clone of a tag: HEAD detached at the commit, and the tag named nowhere of its own (the
# clone has every tag), so every tag of one commit gives the same bytes.
ANY_TAG = "refs/tags/*"


def ref_in_archive(history: str, resolved: refs.Resolved) -> str:
    """The part of the ref that the bytes of a `history` archive depend on, beyond the commit,
    for the snapshots' key: "" if none. As the plans above use it (and as tried, git 2.39):
    - files: none; `git archive` of the commit.
    - full: HEAD names the branch and the clone has it as its one local branch; a tag is
      ANY_TAG; a commit ("") has the default branch as its local branch, HEAD detached.
    - shallow: the branch or tag, as HEAD, local branch or tag, and fetch refspec.
    - bundle: the branch or tag, which the bundle names beside HEAD.
    - mirror: every ref, by the digest of them all (refs.refs_digest).
    The default branch asked for by name or by "" gives the same bytes: both resolve to its
    full name."""
    if history == History.FILES:
        return ""
    if history == History.MIRROR:
        return f"all refs sha256:{resolved.every_ref_digest}"
    if history == History.FULL and resolved.ref.startswith("refs/tags/"):
        return ANY_TAG
    return resolved.ref


def url_in_archive(history: str, url: str, submodules: bool = False) -> str:
    """The spelling of the repository's URL that a `history` archive's bytes depend on, for
    the snapshots' key: a checkout's .git and a mirror's config name their origin
    (_checkout_plan, _mirror_plan), and relative submodule URLs are resolved against it
    (`../lib` beside `widget.git` or beside `widget`); the others name none, and every spelling
    of the repository shares them."""
    if submodules or history in (History.FULL, History.SHALLOW, History.MIRROR):
        return urlpolicy.origin_url(url)
    return urlpolicy.normalized_url(url)


def git_config(pinned: urlpolicy.PinnedURL, with_credentials: bool) -> list[str]:
    """`-c` options that keep git to fetching objects from the one checked address."""
    config = [
        "protocol.allow=never",
        # ssh only for an SSH URL's own clone, which has a key and known hosts (sshaccess).
        *(
            f"protocol.{scheme}.allow=always"
            for scheme in settings.CLONES_ALLOWED_SCHEMES
            if scheme != "ssh" or pinned.scheme == "ssh"
        ),
        "http.followRedirects=false",  # a 30x could point anywhere, and was never checked
        f"http.lowSpeedLimit={settings.CLONES_LOW_SPEED_BYTES}",
        f"http.lowSpeedTime={settings.CLONES_LOW_SPEED_SECONDS}",
        "transfer.bundleURI=false",  # a server-advertised bundle URL is another host
        *fsck_config(settings.CLONES_FSCK),
        "submodule.recurse=false",
        f"checkout.workers={checkout_workers()}",
        "core.hooksPath=/dev/null",
        # .gitattributes and .lfsconfig come from the repository: no filter may run.
        "filter.lfs.smudge=",
        "filter.lfs.process=",
        "filter.lfs.required=false",
        "credential.helper=",  # an empty value clears every helper configured before
    ]
    if with_credentials:
        config.append(f"credential.helper=store --file={engine.MOUNT_POINT}/{CREDENTIALS_FILE}")
    if pinned.curl_resolve:
        config.append(f"http.curloptResolve={pinned.curl_resolve}")
    return engine.config_options(config)


MAX_CHECKOUT_WORKERS = 8


def checkout_workers() -> int:
    """Processes git checks a working tree out with: one per core the container may use, up to
    MAX_CHECKOUT_WORKERS. Creating a file costs more than writing it on many disks (0.6 ms
    here, on ext4), and workers overlap those waits: a checkout of 1,556 files took half the
    time on two. git's own "0" would count the host's cores, not the container's quota."""
    cores = settings.CLONES_CONTAINER_CPUS or os.cpu_count() or 1
    return max(1, min(math.ceil(cores), MAX_CHECKOUT_WORKERS))


# fsck messages that old, real histories carry and that cannot hurt whoever unpacks the archive:
# with CLONES_FSCK=standard they are warnings, so such a repository clones as plain `git clone`
# does. Every message not named here keeps git's strict verdict; above all the path and
# .gitmodules checks (hasDot, hasDotdot, hasDotgit, fullPathname, emptyName, gitmodules*,
# gitattributes*) that stop a tree from writing outside its checkout or smuggling a hook in, and
# the structural ones (badTree, duplicateEntries, treeNotSorted, nullSha1, missing*/bad*Sha1)
# without which git cannot read the history at all. Each id exists in git 2.39 and later (an
# unknown one would only be warned about).
LEGACY_FSCK_MESSAGES = [
    # Author and committer lines written by early git, importers (CVS, SVN, hg) and hand-rolled
    # tools: odd spacing, dates and zones. They are metadata; nothing is written from them.
    "badDate",  # a date git cannot parse
    "badDateOverflow",  # a date past what git's time type holds
    "badTimezone",  # "-07000" or "+05": psf/requests has one
    "zeroPaddedDate",  # "0001234567"
    "missingSpaceBeforeDate",  # "<a@b>1234567890 +0000"
    "missingEmail",  # no "<...>" at all
    "missingNameBeforeEmail",
    "missingSpaceBeforeEmail",
    "badEmail",
    "badName",
    "multipleAuthors",
    "nulInCommit",  # a NUL byte in a commit message: odd, not dangerous
    # "040000" for a subtree, written by git before 2005 and by some libraries since (pallets/
    # flask has one). The mode still means "directory"; git checks such trees out as usual.
    "zeroPaddedFilemode",
    # Modes such as 100664 are git's own "info" level already; named so no strict setting
    # elevates them (git/git carries them).
    "badFilemode",
]


def fsck_config(level: str) -> list[str]:
    """git config that checks every object as it arrives, as strictly as CLONES_FSCK says."""
    if level == "off":
        return ["transfer.fsckObjects=false"]
    config = ["transfer.fsckObjects=true"]
    if level == "standard":
        config += [f"fetch.fsck.{message}=warn" for message in LEGACY_FSCK_MESSAGES]
    return config


def _credentials(job_dir: Path, url: str, token: str) -> AbstractContextManager[None]:
    """The token in git's credential-store format, readable by the container's user only, for
    as long as the clone runs."""
    if not token:
        return nullcontext()
    parts = urlsplit(url)
    user = f"{gitwords.TOKEN_USER}:{quote(token, safe='')}"
    line = f"{parts.scheme}://{user}@{parts.netloc}\n"
    return paths.private_files(job_dir, {CREDENTIALS_FILE: line}, engine.container_user())


def check_size(directory: Path) -> None:
    """The job's directory, or its mirror, is within the caps of every clone."""
    size, files = paths.usage(directory)
    if size > settings.CLONES_MAX_REPO_BYTES:
        raise _too_large()
    if files > settings.CLONES_MAX_REPO_FILES:
        raise gitwords.CloneFailed(
            f"The repository has more than {settings.CLONES_MAX_REPO_FILES:,} files, "
            "the most this service clones.",
            shared=True,
        )


def run(
    job: CloneJob,
    job_dir: Path,
    commands: list[list[str]],
    deadline: float,
    keep_going: Callable[[], None],
    on_phase: Callable[[str], None] = lambda phase: None,
    mirror: mirrors.Lease | None = None,
    explained: Callable[[str], gitwords.CloneFailed] | None = None,
    ssh: sshaccess.Access | None = None,
) -> str:
    """Run `commands` in the job's container; the image it ran (its id, sha256:…). `explained`
    reads git's output when it failed for no cause the worker saw itself (gitwords'). `ssh`:
    the access whose files (sshaccess.written) are in the job directory, for an SSH URL."""
    directories = [job_dir, *([mirror.path] if mirror else [])]

    def watch() -> None:
        for directory in directories:
            check_size(directory)
        keep_going()

    mounts = {mirrors.MOUNT_POINT: paths.engine_path(mirror.path)} if mirror else {}
    result = engine.run_git(
        str(job.id),
        commands,
        paths.engine_path(job_dir),
        timeout=max(deadline - time.monotonic(), 0),
        environment=_environment(ssh),
        on_phase=on_phase,
        watch=watch,
        more_mounts=mounts,
        files=_passwd(job_dir) if ssh else None,
        labels={engine.MIRROR_LABEL: mirror.key} if mirror else {},
    )
    if result.exit_code != 0:
        for directory in directories:
            check_size(directory)
        if result.out_of_memory:
            memory = units.human_size(settings.CLONES_CONTAINER_MEMORY)
            message = f"git ran out of memory ({memory}) cloning this repository."
            raise gitwords.CloneFailed(message, shared=True)
        if _hit_file_size_limit(result):
            raise _too_large(result.output)
        raise (explained or partial(gitwords.explained, job=job))(result.output)
    return result.image


def _environment(ssh: sshaccess.Access | None) -> dict[str, str]:
    if ssh is None:
        return GIT_ENVIRONMENT
    # Options only: git adds the port, the checked address and the command (sshaccess.command).
    command = sshaccess.command(ssh, engine.MOUNT_POINT)
    return {**GIT_ENVIRONMENT, "GIT_SSH_COMMAND": shlex.join(command)}


def _passwd(job_dir: Path) -> dict[str, PurePosixPath]:
    """ssh will not run as a uid that /etc/passwd does not name, and the image names only its
    own users: the container's user gets an entry of its own (sshaccess.written)."""
    return {"/etc/passwd": paths.engine_path(job_dir / sshaccess.PASSWD_FILE)}


def _hit_file_size_limit(result: engine.ContainerResult) -> bool:
    # One file reached the fsize ulimit (CLONES_MAX_REPO_BYTES): git says so when a write fails
    # with EFBIG (engine.IGNORE_SIGXFSZ), or git itself died of SIGXFSZ.
    return result.exit_code == 128 + signal.SIGXFSZ or "File too large" in result.output


def _too_large(git_output: str = "") -> gitwords.CloneFailed:
    limit = units.human_size(settings.CLONES_MAX_REPO_BYTES)
    message = f"The repository is larger than {limit}, the most this service clones."
    return gitwords.CloneFailed(message, git_output, shared=True)


def head_commit(git_dir: Path) -> str:
    """The commit HEAD points at, read from git's files (the worker never runs git on a clone).
    Its failures but the empty repository's are not shared: the HEAD read is the one this job's
    clone wrote, naming the branch it asked for, if any."""
    head = (git_dir / "HEAD").read_text().strip()
    if gitwords.FULL_SHA.fullmatch(head):
        return head
    ref = head.removeprefix("ref: ")
    if not re.fullmatch(r"refs/[\w./-]+", ref) or ".." in ref:
        raise gitwords.CloneFailed(f"The clone has an unexpected HEAD: {head[:100]!r}.")
    loose = git_dir / ref
    if loose.is_file():
        return loose.read_text().strip()
    packed = _packed_refs(git_dir)
    if ref in packed:
        return packed[ref]
    if packed or any(path.is_file() for path in (git_dir / "refs").rglob("*")):
        # git clones such a repository with a warning and checks nothing out.
        branch = ref.removeprefix("refs/heads/")
        raise gitwords.CloneFailed(gitwords.DEFAULT_BRANCH_MISSING.format(branch=branch))
    raise gitwords.CloneFailed(gitwords.EMPTY_REPOSITORY, shared=True)


def _packed_refs(git_dir: Path) -> dict[str, str]:
    """Ref name -> object name, from packed-refs (its comments and peeled lines skipped)."""
    packed = git_dir / "packed-refs"
    lines = packed.read_text().splitlines() if packed.is_file() else []
    pairs = (line.split(" ", 1) for line in lines if gitwords.FULL_SHA.match(line))
    return {name: sha for sha, name in pairs}
