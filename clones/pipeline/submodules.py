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
import shlex
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

from ..safety import egress, urlpolicy
from . import engine, gitwords, paths

# What the commands below say, for explained(): whose submodules a level's fetch is in (git
# names a submodule it cannot fetch relative to its own superproject), and a submodule at the
# last level that has submodules of its own.
WITHIN = "cloneshelf: submodules of"
TOO_DEEP = "cloneshelf: submodules nest deeper than"
# A gitlink (mode 160000) in a submodule's index: a submodule of its own. foreach's shell runs it.
_HAS_GITLINKS = (
    'case "$(git ls-files --stage)" in 160000*|*"\n160000"*) '
    f'echo "{TOO_DEEP} {{levels}} levels, in $toplevel/$sm_path" >&2; exit 1;; esac'
)


def commands(checkout: str, proxy_url: str, shallow: bool) -> list[list[str]]:
    """git's arguments that fetch and check out the submodules of `checkout`, level by level to
    CLONES_SUBMODULE_LEVELS, every connection through the proxy; failing if one at the last
    level has submodules of its own. `shallow`: each one commit deep (the commit recorded,
    fetched by its name), not its whole history. Each command starts with its `-c` options,
    which win over the job's before them and reach the git commands that foreach starts (git
    passes them on in its environment)."""
    levels = settings.CLONES_SUBMODULE_LEVELS
    depth = ["--depth", "1"] if shallow else []
    update = shlex.join(["git", "submodule", "update", "--init", *depth])
    fetched = [
        ["-C", checkout, "submodule", "update", "--init", *depth],
        *(
            [
                "-C",
                checkout,
                *_in_each(level, f'echo "{WITHIN} $toplevel/$sm_path" >&2 && {update}'),
            ]
            for level in range(1, levels)
        ),
        ["-C", checkout, *_in_each(levels, _HAS_GITLINKS.format(levels=levels))],
        # As for the superproject (cloning._checkout_plan): indexes without this checkout's
        # inodes and times, so that every archive of the commit is the same.
        ["-C", checkout, "submodule", "foreach", "--quiet", "--recursive", "git read-tree HEAD"],
    ]
    return [[*_config(proxy_url), *command] for command in fetched]


def _in_each(level: int, command: str) -> list[str]:
    """git's arguments that run the shell `command` in each submodule `level` levels down (1:
    the checkout's own), through as many nested `git submodule foreach`."""
    for _ in range(level - 1):
        command = shlex.join(["git", "submodule", "foreach", "--quiet", command])
    return ["submodule", "foreach", "--quiet", command]


def _config(proxy_url: str) -> list[str]:
    """Every http(s) connection through the proxy, and no transport that would not go through
    it: not git://, not ssh, not a local path (a mirror's file:// is the superproject's alone).
    For an SSH job, GIT_SSH_COMMAND (the job's own key) wins over core.sshCommand: there
    protocol.ssh.allow is what keeps its submodules off ssh."""
    options = [
        f"http.proxy={proxy_url}",
        "http.proxyAuthMethod=basic",  # the proxy's secret at once, not after a 407
        "protocol.git.allow=never",
        "protocol.file.allow=never",
        "protocol.ssh.allow=never",
        "core.sshCommand=false",
    ]
    return engine.config_options(options)


CLONE_FAILED = re.compile(r"clone of '(?P<url>[^']+)' into submodule path '(?P<path>[^']+)'")
NO_URL = re.compile(r"No url found for submodule path '(?P<path>[^']+)' in .gitmodules")
LACKING = re.compile(
    r"Fetched in submodule path '(?P<path>[^']+)', but it did not contain (?P<commit>[0-9a-f]+)"
)


def explained(
    failed: gitwords.CloneFailed, proxy: egress.Proxy, checkout: str
) -> gitwords.CloneFailed:
    """A failure among the submodules in words about them; `failed` itself if it is not."""
    output = failed.output
    clones = list(CLONE_FAILED.finditer(output))
    for refusal in proxy.refusals:
        for named in clones:
            if _destination(named["url"]) == refusal.destination:
                reason = f"{refusal.destination} was refused: {refusal.reason}"
                return _failed(named, checkout, f"cannot be fetched: {reason}", output, True)
    deeper = re.search(
        re.escape(TOO_DEEP) + r" (?P<levels>\d+) levels, in (?P<path>[^\n]+)", output
    )
    if deeper:
        levels = int(deeper["levels"])
        message = (
            f"Submodules nest more than {levels} level{'s' if levels != 1 else ''} deep, the "
            f"most this service fetches (below '{_relative(deeper['path'].strip(), checkout)}')."
        )
        return gitwords.CloneFailed(message, output, shared=True)
    unlisted = NO_URL.search(output)
    if unlisted:
        path = _within(output, unlisted.start(), checkout) + unlisted["path"]
        message = f"The repository has a submodule at '{path}' that .gitmodules gives no URL for."
        return gitwords.CloneFailed(message, output, shared=True)
    lacking = LACKING.search(output)
    if lacking:
        path = _within(output, lacking.start(), checkout) + lacking["path"]
        commit = lacking["commit"][:12]
        if "does not allow request for unadvertised object" in output:
            # Asked for by name (one commit deep), a commit the server (protocol v0, without
            # allowReachableSHA1InWant) will not send that way; "not our ref" is any server's
            # word for a commit it does not have.
            message = (
                f"The server of the submodule at '{path}' would not send its commit {commit} "
                "by name, as a files or shallow archive fetches it; a full archive may work."
            )
        else:
            message = (
                f"The submodule at '{path}' has no commit {commit}, which the repository "
                "records for it."
            )
        return gitwords.CloneFailed(message, output, shared=True)
    if clones and not proxy.refusals:
        return _clone_failed(clones[0], proxy, checkout, output)
    return failed


CLONE_CAUSES = [
    # (git's words before "clone of … failed", what they mean, whether every job meets it)
    (r"repository '[^']*' not found", "there is no repository at that URL", True),
    (r"could not read Username", "its server asks for a user name and password", False),
    (r"returned error: 5\d\d", "its server failed (an HTTP 5xx error); try again", False),
    (
        r"transport '(?P<transport>\w+)' not allowed",
        "submodules are fetched over https:// and http:// only, not {transport}",
        True,
    ),
]


def _clone_failed(
    named: re.Match, proxy: egress.Proxy, checkout: str, output: str
) -> gitwords.CloneFailed:
    """The failure of a submodule's clone, its cause read from the lines before git's."""
    before = output[: output.rfind("\n", 0, named.start()) + 1]
    if _destination(named["url"]) in proxy.unreached:
        return _failed(named, checkout, "could not be fetched: nothing answered there", output)
    for pattern, meaning, shared in CLONE_CAUSES:
        if found := re.search(pattern, before):
            said = meaning.format(**found.groupdict())
            return _failed(named, checkout, f"could not be cloned: {said}", output, shared)
    cause = gitwords.shorten(gitwords.last_complaint(before))
    return _failed(named, checkout, f"could not be cloned: {cause}", output)


def _failed(
    named: re.Match, checkout: str, what: str, output: str, shared: bool = False
) -> gitwords.CloneFailed:
    """`shared`: every job for the snapshot meets it (gitwords.CloneFailed); not so for a
    cause that may pass (a server down) or is this job's own (its credentials)."""
    where = f"'{_relative(named['path'], checkout)}' ({named['url']})"
    message = f"The submodule at {where} {what}"
    return gitwords.CloneFailed(message if message.endswith(".") else f"{message}.", output, shared)


def _destination(url: str) -> str:
    """host:port, as the proxy names what a URL connects to."""
    parts = urlsplit(url)
    port = parts.port or urlpolicy.DEFAULT_PORTS.get(parts.scheme, 0)
    return f"{urlpolicy.bracketed(parts.hostname or '')}:{port}"


def _within(output: str, position: int, checkout: str) -> str:
    """The superproject (a path and "/", or "" for the checkout) whose submodules a level's
    fetch was at, at `position` in git's output."""
    said = output.rfind(WITHIN, 0, position)
    if said < 0:
        return ""
    line = output[said + len(WITHIN) :].split("\n", 1)[0].strip()
    return _relative(line, checkout) + "/"


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
