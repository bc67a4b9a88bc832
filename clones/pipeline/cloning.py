"""What `git clone` means for a job: the git command lines, and what they leave behind. git's
output read back as a reason is clones.pipeline.gitwords' business; the container itself is
clones.pipeline.engine's."""

import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from django.conf import settings

from .. import units
from ..models import CloneJob, History
from ..safety import urlpolicy
from . import engine, gitwords, paths, refs

CHECKOUT_DIR = "repo"  # inside the job directory
BARE_DIR = "repo.git"  # files only and bundle: no working tree is needed
COMMIT_TIME = "commit-time"  # beside it: the checked-out commit's time, as git tells it
# In a fresh clone's .git, made by the clone itself: the reflogs (with the clone's time) and the
# fetched tips of a commit fetched by name.
CLONE_TIME_FILES = ["logs", "FETCH_HEAD"]
CREDENTIALS_FILE = "credentials"  # beside it, so never in the archive

# git reads no configuration but ours: not the image's /etc/gitconfig, not a global file.
GIT_ENVIRONMENT = {
    "HOME": "/tmp",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_TERMINAL_PROMPT": "0",  # a server asking for a password fails the clone at once
    "GIT_LFS_SKIP_SMUDGE": "1",
}


@dataclass(frozen=True)
class Built:
    """What a clone left in the job directory for the packer."""

    path: Path  # a checkout to pack, or (files only, bundle) the finished archive
    commit_time: int | None = None  # a checkout's: every entry of its archive gets it


def build(
    job: CloneJob,
    pinned: urlpolicy.PinnedURL,
    resolved: refs.Resolved,
    job_dir: Path,
    timeout: int,
    on_phase: Callable[[str], None],
    token: str = "",
    keep_going: Callable[[], None] = lambda: None,
) -> Built:
    """Clone the job's repository at `resolved.commit` as its options say, in one container,
    within `timeout` seconds, from the addresses `pinned` checked for the ref lookup. `keep_going`
    is called about once a second while git runs and may raise to stop it."""
    config = git_config(pinned, with_credentials=bool(token))
    plan = PLANS[job.history](job, resolved, pinned.url)
    commands = [[*config, *command] for command in plan.commands]
    try:
        with _credentials(job_dir, job.url, token):
            run(job, job_dir, commands, time.monotonic() + timeout, keep_going, on_phase)
    except engine.ContainerTimedOut:
        raise gitwords.CloneFailed(f"The clone timed out after {timeout} s.", shared=True) from None
    check_size(job_dir)  # a clone quicker than one look at it is checked here
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
    git_dir: str  # in the job directory, once they ran
    built: Callable[[Path], Built]  # from the job directory


def _container_path(name: str) -> str:
    return f"{engine.MOUNT_POINT}/{name}"


def _clone(resolved: refs.Resolved, *options: str) -> list[str]:
    """`git clone` of the ref that was resolved; of the default branch for a commit."""
    branch = ["--branch", _short_name(resolved.ref)] if resolved.ref else []
    return ["clone", "--progress", "--no-recurse-submodules", *options, *branch]


def _short_name(ref: str) -> str:
    # Resolved like `git clone --branch`: a branch before a tag of the same name.
    return ref.removeprefix("refs/heads/").removeprefix("refs/tags/")


def _checkout_plan(job: CloneJob, resolved: refs.Resolved, url: str) -> Plan:
    """Full and shallow clones: the working tree and .git, packed by the worker."""
    checkout = _container_path(CHECKOUT_DIR)
    commit = resolved.commit
    if job.history == History.FULL and resolved.ref:
        commands = [[*_clone(resolved), "--", url, checkout]]
    elif job.history == History.FULL:  # a commit: every branch, HEAD detached at it
        commands = [
            [*_clone(resolved, "--no-checkout"), "--", url, checkout],
            ["-C", checkout, "checkout", "--quiet", "--detach", commit],
        ]
    elif resolved.ref:
        commands = [[*_clone(resolved, "--depth", str(job.depth)), "--", url, checkout]]
    else:  # a shallow commit: fetched by name, as servers allow since git 2.5
        fetch = ["fetch", "--progress", "--no-tags", "--depth", str(job.depth), "origin", commit]
        commands = [
            ["init", "--quiet", checkout],
            ["-C", checkout, "remote", "add", "origin", url],
            ["-C", checkout, *fetch],
            ["-C", checkout, "checkout", "--quiet", "--detach", commit],
        ]
    commit_time = ["log", "-1", "--format=%ct", f"--output={_container_path(COMMIT_TIME)}"]
    commands += [
        # git wrote the URL it was given, pinned (for git://, to an address) and as this job
        # spelled it: the archive, shared, names the repository as its key does.
        ["-C", checkout, "remote", "set-url", "origin", urlpolicy.origin_url(job.url)],
        # The index git wrote holds this checkout's inode numbers and times; read afresh from
        # HEAD's tree it holds none, so that every archive of the commit is the same. git
        # compares the files' contents once, on the first `git status` after unpacking.
        ["-C", checkout, "read-tree", "HEAD"],
        ["-C", checkout, *commit_time, "HEAD"],
    ]
    return Plan(commands, f"{CHECKOUT_DIR}/.git", _checkout_built)


def _checkout_built(job_dir: Path) -> Built:
    checkout = job_dir / CHECKOUT_DIR
    for made_by_the_clone in CLONE_TIME_FILES:  # they say when it was cloned, not what
        paths.remove(checkout / ".git" / made_by_the_clone)
    commit_time = job_dir / COMMIT_TIME
    built = Built(checkout, int(commit_time.read_text()))
    commit_time.unlink()  # not in the archive
    return built


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


def _files_plan(job: CloneJob, resolved: refs.Resolved, url: str) -> Plan:
    """The tree at the commit, no .git: `git archive`, whose archives depend on the commit
    alone (every entry dated the commit's time, modes normalized)."""
    output = f"archive.{job.archive_format}"
    archive = [
        *("-C", _container_path(BARE_DIR), "archive", f"--format={job.archive_format}"),
        *(f"--prefix={job.top_level}/", f"--output={_container_path(output)}", "HEAD"),
    ]
    # Only the tip's tree is needed: one commit deep when a ref names it.
    clone = _bare_clone(resolved, url, "--depth", "1", "--no-tags") if resolved.ref else None
    return Plan([*(clone or _bare_clone(resolved, url)), archive], BARE_DIR, _made_by_git(output))


def _bundle_plan(job: CloneJob, resolved: refs.Resolved, url: str) -> Plan:
    """One `git bundle` of the commit's history, with HEAD and the ref asked for, which `git
    clone` takes as it would a server."""
    output = "archive.bundle"
    # One thread: the pack's deltas, and so its bytes, do not depend on which thread won.
    bundle = [
        *("-C", _container_path(BARE_DIR), "-c", "pack.threads=1", "bundle", "create"),
        *("--quiet", _container_path(output), "HEAD", *filter(None, [resolved.ref])),
    ]
    clone = _bare_clone(resolved, url, "--no-tags")
    return Plan([*clone, bundle], BARE_DIR, _made_by_git(output))


def _made_by_git(output: str) -> Callable[[Path], Built]:
    return lambda job_dir: Built(job_dir / output)


PLANS = {
    History.FULL: _checkout_plan,
    History.SHALLOW: _checkout_plan,
    History.FILES: _files_plan,
    History.BUNDLE: _bundle_plan,
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
    The default branch asked for by name or by "" gives the same bytes: both resolve to its
    full name."""
    if history == History.FILES:
        return ""
    if history == History.FULL and resolved.ref.startswith("refs/tags/"):
        return ANY_TAG
    return resolved.ref


def url_in_archive(history: str, url: str) -> str:
    """The spelling of the repository's URL that a `history` archive's bytes depend on, for
    the snapshots' key: a checkout's .git names its origin (_checkout_plan); the others name
    none, and every spelling of the repository shares them."""
    if history in (History.FULL, History.SHALLOW):
        return urlpolicy.origin_url(url)
    return urlpolicy.normalized_url(url)


def git_config(pinned: urlpolicy.PinnedURL, with_credentials: bool) -> list[str]:
    """`-c` options that keep git to fetching objects from the one checked address."""
    config = [
        "protocol.allow=never",
        *(f"protocol.{scheme}.allow=always" for scheme in settings.CLONES_ALLOWED_SCHEMES),
        "http.followRedirects=false",  # a 30x could point anywhere, and was never checked
        f"http.lowSpeedLimit={settings.CLONES_LOW_SPEED_BYTES}",
        f"http.lowSpeedTime={settings.CLONES_LOW_SPEED_SECONDS}",
        "transfer.bundleURI=false",  # a server-advertised bundle URL is another host
        *fsck_config(settings.CLONES_FSCK),
        "submodule.recurse=false",
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
    return [option for item in config for option in ("-c", item)]


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


@contextmanager
def _credentials(job_dir: Path, url: str, token: str) -> Iterator[None]:
    """The token in git's credential-store format, readable by the container's user only, for
    as long as the clone runs: a file, so it shows in no command line and no `docker inspect`."""
    if not token:
        yield
        return
    parts = urlsplit(url)
    path = job_dir / CREDENTIALS_FILE
    path.touch(mode=0o600)
    os.chown(path, *engine.container_user())
    user = f"{gitwords.TOKEN_USER}:{quote(token, safe='')}"
    path.write_text(f"{parts.scheme}://{user}@{parts.netloc}\n")
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def check_size(job_dir: Path) -> None:
    size, files = paths.usage(job_dir)
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
) -> None:
    def watch() -> None:
        check_size(job_dir)
        keep_going()

    result = engine.run_git(
        str(job.id),
        commands,
        paths.engine_path(job_dir),
        timeout=max(deadline - time.monotonic(), 0),
        environment=GIT_ENVIRONMENT,
        on_phase=on_phase,
        watch=watch,
    )
    if result.exit_code != 0:
        check_size(job_dir)
        if result.out_of_memory:
            memory = units.human_size(settings.CLONES_CONTAINER_MEMORY)
            message = f"git ran out of memory ({memory}) cloning this repository."
            raise gitwords.CloneFailed(message, shared=True)
        if _hit_file_size_limit(result):
            raise _too_large(result.output)
        raise gitwords.explained(result.output, job)


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
