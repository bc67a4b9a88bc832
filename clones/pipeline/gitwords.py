"""git's words and what they mean: the failure a person is told (CloneFailed), git's output read
back as a reason they can act on, and the sentences that both the ref lookup
(clones.pipeline.refs) and the clone (clones.pipeline.cloning) say."""

import re
from typing import NamedTuple
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from ..models import CloneJob
from ..safety import urlpolicy

FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names
TOKEN_USER = "x-access-token"  # GitHub's name for it; GitLab and Gitea take any user name

# Said by the ref lookup and by the clone, whichever meets it first.
NO_SUCH_REF = "The repository has no branch or tag '{ref}'."
NO_REPOSITORY = "There is no git repository at {url}."
EMPTY_REPOSITORY = "The repository is empty: it has no commit to archive."
DEFAULT_BRANCH_MISSING = (
    "The repository's default branch, '{branch}', does not exist; give one of its branches or tags."
)
NEEDS_AUTHENTICATION = "This repository needs authentication; {auth_hint}"
REDIRECTED = (
    "The server redirected the clone to another address. Redirects are not followed: give the "
    "repository's final URL."
)
UNREACHABLE = "Could not connect to {host}."
UNVERIFIED = "{host}'s TLS certificate could not be verified."


class CloneFailed(Exception):
    """git ran and failed; str() is for the person who asked, `output` for staff.

    `shared`: the failure is the snapshot's, not the job's: what the repository holds at that
    commit, or a limit this service sets on every clone, worded with nothing of the job's own
    (its ref as typed, its URL as spelled, its token). Jobs waiting for the same snapshot then
    fail with it (clones.jobs.settle_followers). Any other failure (the job's token refused, the
    server's answer to its URL, its ref moving, a cause not recognized) sends them back to the
    queue, to find out for themselves, in their own words."""

    def __init__(self, message: str, output: str = "", shared: bool = False):
        super().__init__(message)
        self.output = output
        self.shared = shared


def pinned(url: str) -> urlpolicy.PinnedURL:
    """Check the URL again, now, and fix the addresses git and the ref lookup may connect to."""
    try:
        return urlpolicy.pin(url)
    except ValidationError as refused:
        raise CloneFailed(refused.messages[0]) from None


def display_host(url: str) -> str:
    """The host as the person wrote it, with the port if they gave one."""
    parts = urlsplit(url)
    host = urlpolicy.bracketed(parts.hostname or url)
    return f"{host}:{parts.port}" if parts.port else host


class Explanation(NamedTuple):
    pattern: str  # in git's output
    message: str  # ours
    shared: bool = False  # CloneFailed.shared: what the repository holds at the commit


# git's words -> ours. First match wins; the pattern's named groups and `{ref}`, `{commit}`,
# `{url}`, `{host}` and `{auth_hint}` are filled in. Only a shared one goes to the jobs waiting
# for the same snapshot, so it names nothing of the job's own: the commit, not the ref as typed.
# The server's own words ("remote: " lines) come first: when it fails, git's last line only says
# what that did to the clone ("early EOF").
CANNOT_SEND = "The server could not send the repository"
EXPLANATIONS = [
    Explanation(
        # upload-pack names the object it cannot read ("unable to read <sha>", "bad tree object
        # <sha>") and aborts. The server's copy is damaged: whoever waits for it would meet it too.
        r"(?m)^remote: fatal: .*?\b(?P<object>[0-9a-f]{40}|[0-9a-f]{64})\b"
        r"(?s:.*)possible repository corruption on the remote side",
        CANNOT_SEND + ": it reports a damaged copy on its side (object {object:.12}).",
        shared=True,
    ),
    Explanation(
        # Any other death of the server's pack-objects ("Out of memory, malloc failed"), which
        # upload-pack, too, follows with "possible repository corruption".
        r"(?m)^remote: fatal: (?P<detail>[^\n]+)",
        CANNOT_SEND + ": {detail}.",
    ),
    Explanation(
        # upload-pack's words whenever pack-objects fails, said without a reason (killed).
        r"possible repository corruption on the remote side",
        CANNOT_SEND + ": it stopped, saying its copy may be damaged.",
    ),
    Explanation(
        # index-pack (transfer.fsckObjects) names the object, the check and why; it then dies,
        # and fetch-pack adds "invalid index-pack output". At a line's start: the server's own
        # words come prefixed "remote: ", and must not pass for git's.
        r"(?m)^error: object [0-9a-f]+: (?P<check>\w+): (?P<detail>[^\n]+)",
        "The repository has an object git refuses: {check}: {detail}.",
        shared=True,
    ),
    Explanation(
        # A write of git's failed with ENOSPC: index-pack's "write error", or a checkout's.
        r"(?m)^(?!remote: ).*No space left on device",
        "The clone ran out of disk space on this server. Try again later.",
    ),
    Explanation(
        # Fetched, but a file could not be written: the first error says which, and why.
        r"(?m)^error: (?P<detail>[^\n]+)\n(?s:.*)Clone succeeded, but checkout failed",
        "The repository's files could not be checked out: {detail}",
        shared=True,
    ),
    Explanation(
        # A commit fetched by name (a shallow clone of it) from a server that speaks only git's
        # first protocol, or forbids it.
        r"Server does not allow request for unadvertised object",
        "The server does not let a commit be fetched by its SHA alone; choose the full history "
        "for {commit}, or give a branch or tag.",
        shared=True,
    ),
    Explanation(
        # A path the job is limited to, looked up in the commit before anything is archived.
        r"fatal: path '(?P<path>[^\n]*)' does not exist in '",
        "The repository has no file or folder '{path}' at commit {commit}.",
        shared=True,
    ),
    # The ref was there when it was looked up: it went away since.
    Explanation(r"Remote branch .* not found in upstream", NO_SUCH_REF),
    Explanation(
        r"reference is not a tree|did not match any file|unable to read tree",
        "The repository has no commit {commit}.",
        shared=True,
    ),
    Explanation(
        r"could not read Username|Authentication failed|terminal prompts disabled|"
        r"HTTP Basic: Access denied|requested URL returned error: 40[13]",
        NEEDS_AUTHENTICATION,
    ),
    Explanation(r"requested URL returned error: 30[12378]", REDIRECTED),
    Explanation(
        r"repository '.*' not found|does not appear to be a git repository|"
        r"repository not exported|requested URL returned error: 404|No such repository",
        NO_REPOSITORY,
    ),
    Explanation(
        r"Could not resolve host|unable to look up|Name or service not known",
        "The host {host} could not be found.",
    ),
    Explanation(
        r"Connection refused|Failed to connect|unable to connect|Connection timed out|"
        r"No route to host|Network is unreachable|Couldn't connect",
        UNREACHABLE,
    ),
    Explanation(r"SSL certificate problem|server certificate verification failed", UNVERIFIED),
    Explanation(
        # curl's words, under http.lowSpeedLimit and http.lowSpeedTime; git then reads what
        # little came ("expected 'packfile'", "the remote end hung up unexpectedly").
        r"Operation too slow\. Less than (?P<rate>\d+) bytes/sec transferred the last "
        r"(?P<seconds>\d+) seconds",
        "The server stopped sending data (less than {rate} bytes/s for {seconds} s).",
    ),
    Explanation(
        # The pack stopped short: over git:// or HTTP, and curl's own words for a cut body.
        r"unexpected disconnect while reading sideband packet|early EOF|"
        r"transfer closed with \d+ bytes remaining",
        "The server closed the connection in the middle of sending the repository.",
    ),
]


AUTH_HINTS = {
    False: "give an access token that can read it.",
    True: "the access token given was not accepted.",
}


def explained(output: str, job: CloneJob) -> CloneFailed:
    """git's failing output read back as a reason the person can act on."""
    host = display_host(job.url)
    for explanation in EXPLANATIONS:
        found = re.search(explanation.pattern, output, re.IGNORECASE)
        if found:
            # The server's lines are padded with spaces, to blank a progress meter out.
            quoted = {
                name: shorten(text.strip().rstrip(".")) for name, text in found.groupdict().items()
            }
            auth_hint = AUTH_HINTS[job.used_token]
            message = explanation.message.format(
                ref=job.ref,
                commit=job.commit,
                url=job.url,
                host=host,
                auth_hint=auth_hint,
                **quoted,
            )
            return CloneFailed(message, output, explanation.shared)
    # Not recognized, so not known to be the repository's: git's words may hold the URL too.
    return CloneFailed(f"git failed: {shorten(last_complaint(output))}", output)


def shorten(text: str, limit: int = 300) -> str:
    """git's words cut to `limit` characters in the middle, where a long path is, so that the
    end (the reason) stays."""
    if len(text) <= limit:
        return text
    half = (limit - 1) // 2
    return f"{text[:half]}…{text[-half:]}"


def last_complaint(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    complaints = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (complaints or lines or ["no output"])[-1]


# git's progress meter: "Receiving objects:  45% (123/456), 1.20 MiB | 2.00 MiB/s", and the
# server's own, prefixed "remote: " ("Counting objects", "Compressing objects").
PROGRESS = re.compile(r"(?:remote: )?(?P<stage>[A-Z][a-z]+(?: [a-z]+)*): +(?P<percent>\d{1,3})%")


def read_progress(line: str) -> tuple[str, int | None]:
    """(what git is doing, the percent of it done) from a line of its output; a line that is
    not a progress meter is what it is doing, with no percent."""
    found = PROGRESS.match(line)
    if not found:
        return line, None
    return found["stage"], min(int(found["percent"]), 100)
