"""A job's Git LFS files (its `lfs` option): the command that fetches them into the checkout,
through the egress proxy (clones.safety.egress), and what its failures say.

Every other git command of a clone runs with LFS's filters cleared (cloning.git_config), so a
checkout holds the pointer files git keeps. `git lfs pull` then asks the LFS server the
repository names (its origin's, or `lfs.url` in its .lfsconfig) for their objects, follows the
download links it is given (often another host: object storage), checks each object's sha256,
and writes the files in place of their pointers. Every one of those connections goes through
the proxy; the size caps apply to what it writes as to the rest of the job's directory.
"""

import re
import shlex
from pathlib import Path

from ..safety import egress
from . import engine, gitwords

# git-lfs as `git lfs install` would set it up, for the one command that runs it; the
# repository's own files can set none of it (git reads no filter from them).
FILTERS = [
    "filter.lfs.clean=git-lfs clean -- %f",
    "filter.lfs.smudge=git-lfs smudge -- %f",
    "filter.lfs.process=git-lfs filter-process",
    "filter.lfs.required=true",
]


# git-lfs retries a failed download 8 times, waiting up to 10 s between tries: 36 s for a link
# the proxy refuses. Three tries, two seconds apart at most, still ride out a server's hiccup.
RETRIES = ["lfs.transfer.maxretries=3", "lfs.transfer.maxretrydelay=2"]


# Where .lfsconfig may name an LFS server, and what it may name: http(s) alone, which goes
# through the proxy. git-lfs would run ssh itself for an ssh:// one, and read any repository in
# the container for a file:// one.
ENDPOINTS = [
    "config", "-f", ".lfsconfig", "--get-regexp",
    r"^(lfs\.url|lfs\.pushurl|remote\..*\.lfsurl|remote\..*\.lfspushurl)$", "!^https?://",
]  # fmt: skip
NOT_HTTP = "cloneshelf: an LFS server that is not http(s):"


def commands(
    checkout: str, proxy_url: str, in_submodules: bool
) -> list[list[str] | engine.FailIfAny]:
    """git's arguments that fetch and check out the LFS files of `checkout`'s HEAD, and with
    `in_submodules`, of every submodule's (fetched before), each from its own LFS server. The
    `-c` options reach the git commands that foreach starts (git passes them on)."""
    # An LFS server named by an ssh:// URL (.lfsconfig may) would have git-lfs run ssh itself,
    # past the proxy: there is no ssh for it to run.
    options = [f"http.proxy={proxy_url}", "core.sshCommand=false", *FILTERS]
    config = engine.config_options([*options, *RETRIES])
    each = ["submodule", "foreach", "--quiet", "--recursive"]
    # `git lfs pull` refreshes the index with this checkout's inodes and times; read afresh
    # from HEAD's tree it holds none, so that every archive of the commit is the same.
    pull, read_tree = ["lfs", "pull"], ["read-tree", "HEAD"]
    checked_pull = engine.shell([engine.FailIfAny(ENDPOINTS, NOT_HTTP), pull])
    return [
        engine.FailIfAny(["-C", checkout, *ENDPOINTS], NOT_HTTP),
        [*config, "-C", checkout, *pull],
        ["-C", checkout, *read_tree],
        *(
            [[*config, "-C", checkout, *each, checked_pull],
             ["-C", checkout, *each, shlex.join(["git", *read_tree])]]
            if in_submodules
            else []
        ),
    ]  # fmt: skip


# git-lfs's line for each object its server does not have, and its last word when it fails.
MISSING = re.compile(r"\[(?P<oid>[0-9a-f]{64})\] Object does not exist")
FAILED = re.compile(r"Failed to fetch some objects from '(?P<endpoint>[^']+)'")
POINTER_MAX_BYTES = 1024  # the LFS spec's limit on a pointer file


def explained(
    failed: gitwords.CloneFailed, proxy: egress.Proxy, checkout: Path
) -> gitwords.CloneFailed:
    """A failure of the LFS fetch in words about it, naming what is missing by its path in
    `checkout` (as the worker sees it); `failed` itself if it is not one."""
    output = failed.output
    not_http = re.search(re.escape(NOT_HTTP) + r" \S+ (?P<url>[^\n]+)", output)
    if not_http:
        message = (
            f"The repository's .lfsconfig names an LFS server at {not_http['url'].strip()}: "
            "only http(s) ones are fetched (through the egress proxy)."
        )
        return gitwords.CloneFailed(message, output, shared=True)
    ended = FAILED.search(output)
    if not ended and "LFS" not in output:  # not git-lfs's failure
        return failed
    if proxy.refusals:
        refusal = proxy.refusals[0]
        message = f"Git LFS was refused a connection to {refusal.destination}: {refusal.reason}"
        return gitwords.CloneFailed(message, output, shared=True)
    if proxy.unreached:
        message = f"Git LFS could not connect to {proxy.unreached[0]}: nothing answered there."
        return gitwords.CloneFailed(message, output)
    missing = list(dict.fromkeys(found["oid"] for found in MISSING.finditer(output)))
    if missing:
        named = _pointer_paths(checkout, set(missing))
        shown = [f"{named.get(oid, '?')} (sha256:{oid[:12]}…)" for oid in missing[:5]]
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        message = f"The LFS server has no object for {', '.join(shown)}{more}."
        return gitwords.CloneFailed(message, output, shared=True)
    if ended:
        cause = next(
            (meaning for pattern, meaning in LFS_CAUSES if re.search(pattern, output)),
            gitwords.last_complaint(output[: ended.start()]),
        )
        message = f"Git LFS could not fetch files from {ended['endpoint']}: {cause}"
        return gitwords.CloneFailed(gitwords.shorten(message), output)
    return failed


LFS_CAUSES = [
    # git-lfs's words, and what they mean
    (r"Repository or object not found", "it has no LFS store for this repository (404)."),
    (r"could not read Username", "it asks for a user name and password."),
    (r"Authorization error", "it refused access (403)."),
    (r"\[5\d\d\]|: 5\d\d ", "it failed (an HTTP 5xx error); try again."),
]


def _pointer_paths(checkout: Path, oids: set[str]) -> dict[str, str]:
    """oid -> the path (in the repository) of a pointer file naming it, for those of `oids`
    that one in the checkout does."""
    found = {}
    for path in checkout.rglob("*"):
        if ".git" in path.relative_to(checkout).parts or not path.is_file():
            continue
        if path.is_symlink() or path.stat().st_size > POINTER_MAX_BYTES:
            continue
        match = re.search(rb"^oid sha256:([0-9a-f]{64})$", path.read_bytes(), re.MULTILINE)
        if match and match[1].decode() in oids:
            found[match[1].decode()] = str(path.relative_to(checkout))
    return found
