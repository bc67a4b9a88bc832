"""A job's submodules (its `submodules` option): the git commands that fetch them, level by
level to CLONES_SUBMODULE_LEVELS, through the egress proxy (clones.safety.egress), and what a
failure among them says.

git resolves each submodule's URL as it always does (relative ones against the superproject's
origin, which the plan has set to the job's URL by then) and checks out the commit the
superproject records. Everything git connects to for them goes through the proxy, which checks
each destination with the URL policy; the repository's own connection stays pinned, as before.
"""

import os
import re
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from ..safety import egress
from . import gitwords, paths

# Said by the last command below when a submodule nests past the cap: one left uninitialized
# ("-" in `git submodule status`) under the deepest level fetched. foreach runs it in a shell.
TOO_DEEP = "cloneshelf: submodules nest deeper than"
_NONE_LEFT = (
    'status=$(git submodule status) && case "$status" in -*|*"\n-"*) '
    f'echo "{TOO_DEEP} {{levels}} levels, in $displaypath" >&2; exit 1;; esac'
)


def commands(checkout: str, proxy_url: str) -> list[list[str]]:
    """git's arguments that fetch and check out the submodules of `checkout`, recursively, at
    most CLONES_SUBMODULE_LEVELS deep, every connection through the proxy; failing if any nests
    deeper. Each starts with its `-c` options, which win over the job's before them and reach
    the git commands that foreach starts (git passes them on in its environment)."""
    levels = settings.CLONES_SUBMODULE_LEVELS
    update = "git submodule update --init"
    each = ["-C", checkout, "submodule", "foreach", "--quiet", "--recursive"]
    fetched = [
        ["-C", checkout, "submodule", "update", "--init"],
        *([*each, update] for _ in range(levels - 1)),
        [*each, _NONE_LEFT.format(levels=levels)],
        # As for the superproject (cloning._checkout_plan): indexes without this checkout's
        # inodes and times, so that every archive of the commit is the same.
        [*each, "git read-tree HEAD"],
    ]
    return [[*_config(proxy_url), *command] for command in fetched]


def _config(proxy_url: str) -> list[str]:
    """Every http(s) connection through the proxy, and no transport that would not go through
    it: not git://, not ssh, not a local path (a mirror's file:// is the superproject's alone)."""
    options = [
        f"http.proxy={proxy_url}",
        "protocol.git.allow=never",
        "protocol.file.allow=never",
        "protocol.ssh.allow=never",
    ]
    return [option for item in options for option in ("-c", item)]


def explained(
    failed: gitwords.CloneFailed, refusals: list[egress.Refusal], checkout: str
) -> gitwords.CloneFailed:
    """A failure among the submodules in words about them; `failed` itself if it is not."""
    output = failed.output
    named = re.search(r"clone of '(?P<url>[^']+)' into submodule path '(?P<path>[^']+)'", output)
    where = f"'{_relative(named['path'], checkout)}' ({named['url']})" if named else ""
    if refusals and named:
        refusal = refusals[0]
        reason = f"{refusal.destination} was refused: {refusal.reason}"
        message = f"The submodule at {where} cannot be fetched: {reason}"
        return gitwords.CloneFailed(message, output, shared=True)
    deeper = re.search(
        re.escape(TOO_DEEP) + r" (?P<levels>\d+) levels, in (?P<path>[^\n]+)", output
    )
    if deeper:
        levels = int(deeper["levels"])
        message = (
            f"Submodules nest more than {levels} level{'s' if levels != 1 else ''} deep, the "
            f"most this service fetches (below '{deeper['path'].strip()}')."
        )
        return gitwords.CloneFailed(message, output, shared=True)
    missing = re.search(
        r"Fetched in submodule path '(?P<path>[^']+)', but it did not contain "
        r"(?P<commit>[0-9a-f]+)",
        output,
    )
    if missing:
        message = (
            f"The submodule at '{missing['path']}' has no commit {missing['commit'][:12]}, "
            "which the repository records for it."
        )
        return gitwords.CloneFailed(message, output, shared=True)
    if named:
        before = output[: output.rfind("\n", 0, named.start()) + 1]  # the lines before git's
        cause = gitwords.last_complaint(before)
        message = f"The submodule at {where} could not be cloned: {gitwords.shorten(cause)}"
        return gitwords.CloneFailed(message, output, shared=True)
    return failed


def _relative(path: str, checkout: str) -> str:
    """A submodule's path as the repository has it; git names it absolute, in the container."""
    return path.removeprefix(f"{checkout}/")


def git_dirs(git_dir: Path) -> Iterator[Path]:
    """The repositories of a checkout's submodules, kept in its .git (git's `modules`), at
    every level. A submodule's name may have slashes, so a folder there is a repository only
    if it has one's files."""
    pending = [git_dir / "modules"]
    while pending:
        folder = pending.pop()
        if not folder.is_dir() or folder.is_symlink():
            continue
        if (folder / "HEAD").is_file() and (folder / "objects").is_dir():
            yield folder
            pending.append(folder / "modules")
        else:
            pending.extend(Path(entry.path) for entry in os.scandir(folder) if entry.is_dir())


def remove_git(checkout: Path) -> None:
    """Leave only a checkout's files: its .git, and each submodule's .git file, removed (git
    checks out no file of that name, so each is git's own)."""
    for folder, directories, files in os.walk(checkout):
        if ".git" in directories:
            directories.remove(".git")
            paths.remove(Path(folder) / ".git")
        if ".git" in files:
            paths.remove(Path(folder) / ".git")
