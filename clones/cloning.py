"""What `git clone` means for a job: the git command lines, and git's output read back as a
reason a person can act on. The container itself is clones.engine's business."""

import re
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from . import engine, paths
from .models import CloneJob

CHECKOUT_DIR = "repo"  # inside the job directory
FULL_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # SHA-1 or SHA-256 object names


class CloneFailed(Exception):
    """git ran and failed; str() is for the person who asked, `output` for staff."""

    def __init__(self, message: str, output: str = ""):
        super().__init__(message)
        self.output = output


def clone(job: CloneJob, job_dir: Path, timeout: int, on_phase: Callable[[str], None]) -> Path:
    """Clone the job's repository into job_dir/repo and check out its ref, all within `timeout`
    seconds; return the checkout's path."""
    deadline = time.monotonic() + timeout
    target = f"{engine.MOUNT_POINT}/{CHECKOUT_DIR}"
    wants_commit = bool(FULL_SHA.fullmatch(job.ref))
    args = ["clone", "--progress"]
    if job.ref and not wants_commit:
        args += ["--branch", job.ref]
    try:
        # "--" ends the options: nothing in the URL can be read as one.
        run(job, job_dir, [*args, "--", job.url, target], deadline, on_phase)
        if wants_commit:
            on_phase(f"checking out {job.ref[:12]}")
            run(job, job_dir, ["-C", target, "checkout", "--quiet", "--detach", job.ref], deadline)
    except engine.ContainerTimedOut:
        raise CloneFailed(f"The clone timed out after {timeout} s.") from None
    return job_dir / CHECKOUT_DIR


def run(
    job: CloneJob,
    job_dir: Path,
    git_args: list[str],
    deadline: float,
    on_phase: Callable[[str], None] = lambda phase: None,
) -> None:
    result = engine.run_git(
        str(job.id),
        git_args,
        paths.engine_path(job_dir),
        timeout=max(deadline - time.monotonic(), 0),
        on_phase=on_phase,
    )
    if result.exit_code != 0:
        raise CloneFailed(explain(result.output, job), result.output)


# git's words -> ours. First match wins; `{ref}`, `{url}` and `{host}` are filled in.
EXPLANATIONS = [
    (r"Remote branch .* not found in upstream", "The repository has no branch or tag '{ref}'."),
    (
        r"reference is not a tree|did not match any file|unable to read tree",
        "The repository has no commit {ref}.",
    ),
    (
        r"could not read Username|Authentication failed|terminal prompts disabled|"
        r"HTTP Basic: Access denied|requested URL returned error: 40[13]",
        "This repository needs authentication; only public repositories can be cloned.",
    ),
    (
        r"repository '.*' not found|does not appear to be a git repository|"
        r"repository not exported|requested URL returned error: 404|No such repository",
        "There is no git repository at {url}.",
    ),
    (
        r"Could not resolve host|unable to look up|Name or service not known",
        "The host {host} could not be found.",
    ),
    (
        r"Connection refused|Failed to connect|unable to connect|Connection timed out|"
        r"No route to host|Network is unreachable|Couldn't connect",
        "Could not connect to {host}.",
    ),
    (
        r"SSL certificate problem|server certificate verification failed",
        "{host}'s TLS certificate could not be verified.",
    ),
]


def explain(output: str, job: CloneJob) -> str:
    parts = urlsplit(job.url)
    host = parts.hostname or job.url
    if parts.port:
        host = f"{host}:{parts.port}"
    for pattern, message in EXPLANATIONS:
        if re.search(pattern, output, re.IGNORECASE):
            return message.format(ref=job.ref, url=job.url, host=host)
    return f"git failed: {last_complaint(output)}"


def last_complaint(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    complaints = [line for line in lines if line.startswith(("fatal:", "error:"))]
    return (complaints or lines or ["no output"])[-1]


def head_commit(checkout: Path) -> str:
    """The commit HEAD points at, read from git's files (the worker never runs git on a clone)."""
    git_dir = checkout / ".git"
    head = (git_dir / "HEAD").read_text().strip()
    if FULL_SHA.fullmatch(head):
        return head
    ref = head.removeprefix("ref: ")
    if not re.fullmatch(r"refs/[\w./-]+", ref) or ".." in ref:
        raise CloneFailed(f"The clone has an unexpected HEAD: {head[:100]!r}.")
    loose = git_dir / ref
    if loose.is_file():
        return loose.read_text().strip()
    packed = git_dir / "packed-refs"
    for line in packed.read_text().splitlines() if packed.is_file() else []:
        sha, _, name = line.partition(" ")
        if name == ref:
            return sha
    raise CloneFailed("The repository is empty: it has no commit to archive.")
