"""Which commit a branch, a tag or the default branch names, asked of the server in the worker
before any clone container runs: one ref advertisement (what `git ls-remote` reads), through
dulwich's client.

This is as safe as running git in the container:

- Only the ref advertisement is read: pkt-lines of object names, ref names and capabilities,
  never an object or a pack. dulwich parses them in pure Python, so no memory-unsafe parser
  meets the server's bytes in the worker; a malformed line is an exception, and every exception
  becomes CloneFailed.
- It connects only where the clone does: urlpolicy.pin checks the URL and resolves its host
  once for the job (gitwords.pinned, in clones.tasks), and every connection of the lookup and
  of the clone goes to one of the addresses it checked, with no DNS lookup after it. For https
  the Host header, TLS SNI and the certificate check still name the URL's host; for ssh the
  host key is checked under the URL's host (clones.pipeline.sshaccess), by OpenSSH's client,
  which the worker runs for the lookup as git would.
- Redirects are not followed, no proxy is taken from the environment, and no credentials are
  sent but the job's own token: no git config, credential helper or .netrc is read.
- It is bounded: MAX_ADVERTISEMENT_BYTES read, and `timeout` seconds: every read of the
  advertisement gets only what is left of them, so a server sending a little at a time is cut
  off too. (An HTTP answer's status line and headers, read inside urllib3, are bounded by the
  socket timeout of each wait only.)
"""

import dataclasses
import hashlib
import re
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlsplit

import urllib3
from dulwich.client import (
    LsRemoteResult,
    SSHGitClient,
    SubprocessWrapper,
    TCPGitClient,
    Urllib3HttpGitClient,
    default_user_agent_string,
)
from dulwich.errors import NotGitRepository
from dulwich.protocol import Protocol

from ..safety import pinnedhttp, urlpolicy
from . import gitwords, sshaccess

# A server speaking git's first protocol does not say which branch an unborn HEAD names.
NO_DEFAULT_BRANCH = "The repository has no default branch; give one of its branches or tags."

# Protocol v2's ls-refs sends only the refs asked for (not 10,000 tags for one branch) and names
# the branch of an unborn HEAD. A server without it answers in protocol 0, which dulwich reads too.
PROTOCOL_VERSION = 2
# A ref line is some 60 bytes, so 64 MiB is about a million refs: more than real repositories
# advertise even in protocol 0, which sends every ref the server keeps (pull requests' included).
# dulwich keeps them in dicts: at the limit the worker grows by some 190 MiB for a moment.
MAX_ADVERTISEMENT_BYTES = 64 * 1024 * 1024
# What is kept of ssh's standard error: its own complaint, and the server's, in a line or two.
MAX_SSH_ERROR_BYTES = 64 * 1024

# How long a ref lookup may take, a job's (clones.tasks) or a watch's check (clones.watches).
LOOKUP_SECONDS = 20

HEAD = b"HEAD"
PEELED = b"^{}"  # "refs/tags/v1^{}": the commit an annotated tag (or a chain of them) points at
# How git words a repository that is not there, over git:// (git daemon) and elsewhere.
NOT_THERE = re.compile(
    r"not exported|not found|does not appear to be a git repository|no such repository", re.I
)


@dataclass(frozen=True)
class Resolved:
    commit: str  # full lower-case hex object name (40 for SHA-1, 64 for SHA-256)
    # The full ref it came from: "refs/heads/main", "refs/tags/v1.0"; "" when the person gave a
    # full SHA, or the server's HEAD is detached (a commit, on no branch).
    ref: str
    # Asked with every_ref: digest() of every ref the server advertised.
    every_ref_digest: str = ""


def resolve(
    url: str,
    pinned: urlpolicy.PinnedURL,
    ref: str = "",
    token: str = "",
    timeout: float = 20,
    every_ref: bool = False,
    ssh: sshaccess.Access | None = None,
) -> Resolved:
    """The commit `ref` names at `url`, chosen as `git clone --branch` would (a branch before a
    tag of the same name; the default branch for ""), or a full SHA as it is. Asked of the
    addresses `pinned` (gitwords.pinned(url)) checked; `url` as the person gave it, for the
    messages. With `every_ref` (and no `ref`), the digest of every ref too, for a mirror.
    `ssh`: the key and known hosts for an SSH URL (sshaccess.for_owner). Raises
    gitwords.CloneFailed with a message for the person who asked."""
    ref = ref.strip()
    sha = ref.lower() if gitwords.FULL_SHA.fullmatch(ref.lower()) else ""
    wanted = [HEAD] if sha else [HEAD, b"refs/"] if every_ref else _wanted(ref)
    try:
        # A full SHA needs no lookup, but the request is made all the same: a snapshot is shared
        # with whoever may read the repository, and only the server can say who may.
        advertised = _ls_remote(pinned, wanted, token, _Budget(timeout), ssh)
        if sha:
            return Resolved(sha, "")
        resolved = _pick(advertised, ref)
        if every_ref:
            every = digest(_listed(advertised.refs))
            return dataclasses.replace(resolved, every_ref_digest=every)
        return resolved
    except gitwords.CloneFailed:
        raise
    except Exception as error:  # whatever the server sent, the answer is that it could not be read
        message = _explain(error, url.strip(), token, timeout, ssh)
        raise gitwords.CloneFailed(message, _detail(error)) from None


def list_refs(
    url: str,
    pinned: urlpolicy.PinnedURL,
    token: str = "",
    prefixes: tuple[str, ...] = ("refs/",),
    timeout: float = LOOKUP_SECONDS,
    ssh: sshaccess.Access | None = None,
) -> dict[str, str]:
    """Every ref under `prefixes` at `url`, as `git ls-remote` lists them: full ref name -> the
    object it names, and for an annotated tag also "<name>^{}" -> the commit it peels to
    (commit_of reads either). One ref advertisement, asked and bounded as resolve's is; raises
    gitwords.CloneFailed with a message for the person who asked."""
    try:
        wanted = [prefix.encode() for prefix in prefixes]
        advertised = _ls_remote(pinned, wanted, token, _Budget(timeout), ssh)
        listed = _listed(advertised.refs)
    except Exception as error:  # whatever the server sent, the answer is that it could not be read
        message = _explain(error, url.strip(), token, timeout, ssh)
        raise gitwords.CloneFailed(message, _detail(error)) from None
    # v2's ref-prefix is a prefix: "refs/heads/main" also brings "refs/heads/main-old".
    return {name: value for name, value in listed.items() if name.startswith(prefixes)}


def commit_of(listed: dict[str, str], name: str) -> str | None:
    """The commit a listed ref names: an annotated tag peeled; None if it is not listed."""
    return listed.get(name + PEELED.decode()) or listed.get(name)


def digest(listed: dict[str, str]) -> str:
    """sha256 of every ref and the object it names (peeled entries left out), over the sorted
    lines "<name> <object>\n": what a watch following every ref compares between checks, and
    what a mirror snapshot records as CloneJob.refs_digest. Both must compute it here."""
    lines = sorted(
        f"{name} {value}\n" for name, value in listed.items() if not name.endswith("^{}")
    )
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def _wanted(ref: str) -> list[bytes]:
    """The refs that can answer, in git's order: ls-refs' ref-prefixes in protocol v2."""
    if ref:
        return [f"refs/heads/{ref}".encode(), f"refs/tags/{ref}".encode()]
    # Branches and tags too, to tell an empty repository from one whose HEAD names no branch.
    return [HEAD, b"refs/heads/", b"refs/tags/"]


def _ls_remote(
    pinned: urlpolicy.PinnedURL,
    wanted: list[bytes],
    token: str,
    budget: "_Budget",
    ssh: sshaccess.Access | None,
) -> LsRemoteResult:
    options = {"protocol_version": PROTOCOL_VERSION, "ref_prefix": wanted}
    if pinned.scheme == "ssh":
        if ssh is None:
            raise ValueError("an SSH URL needs sshaccess.for_owner's access")
        with (
            sshaccess.for_lookup(ssh) as command,
            closing(_SSHClient(pinned, command, budget)) as client,
        ):
            return client.get_refs(pinned.path, **options)
    if pinned.scheme == "git":
        with closing(_DaemonClient(pinned, budget)) as client:
            return client.get_refs(_git_path(pinned.url), **options)
    credentials = {"username": gitwords.TOKEN_USER, "password": token} if token else {}
    with _PinnedPoolManager(pinned, budget) as pool:
        client = Urllib3HttpGitClient(pinned.url, pool_manager=pool, **credentials)
        return client.get_refs("", **options)


def _pick(advertised: LsRemoteResult, ref: str) -> Resolved:
    refs = advertised.refs
    width = 64 if advertised.object_format == "sha256" else 40

    def commit(name: bytes) -> str:
        found = (refs.get(name + PEELED) or refs[name]).decode("ascii", "replace")
        if len(found) != width or not gitwords.FULL_SHA.fullmatch(found):
            raise ValueError(f"{found[:80]!r} is not an object name")
        return found

    if ref:
        for name in _wanted(ref):
            if refs.get(name):
                return Resolved(commit(name), name.decode())
        raise gitwords.CloneFailed(gitwords.NO_SUCH_REF.format(ref=ref))
    branch = advertised.symrefs.get(HEAD)
    if refs.get(HEAD):  # the branch HEAD names; a detached HEAD is a commit and no ref
        return Resolved(commit(HEAD), branch.decode("utf-8", "replace") if branch else "")
    # An unborn HEAD is listed with no object (v2), or not at all; "capabilities^{}" is no ref.
    if not any(value for name, value in refs.items() if not name.endswith(PEELED)):
        raise gitwords.CloneFailed(gitwords.EMPTY_REPOSITORY)
    if branch is None:
        raise gitwords.CloneFailed(NO_DEFAULT_BRANCH)
    name = branch.decode("utf-8", "replace").removeprefix("refs/heads/")
    raise gitwords.CloneFailed(gitwords.DEFAULT_BRANCH_MISSING.format(branch=name))


def _listed(advertised: dict[bytes, bytes | None]) -> dict[str, str]:
    """The advertised refs below refs/ (not HEAD, nor an unborn one), peeled entries too, as
    `git ls-remote` lists them: what `git fetch '+refs/*:refs/*'` keeps, and their peelings."""
    return {
        name.decode("utf-8", "replace"): sha.decode("ascii", "replace")
        for name, sha in advertised.items()
        if sha and name.startswith(b"refs/")
    }


class _Budget:
    """What one resolve may spend: `seconds` in all, and MAX_ADVERTISEMENT_BYTES read."""

    def __init__(self, seconds: float):
        self._deadline = time.monotonic() + seconds
        self._bytes_left = MAX_ADVERTISEMENT_BYTES

    def time_left(self) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the time for reading the refs ran out")
        return left

    def reader(
        self, read: Callable[[int], bytes], sock: socket.socket | None
    ) -> Callable[[int], bytes]:
        """`read` from `sock`, waiting no longer than the time left, failing past the byte
        limit."""

        def bounded(size: int = -1) -> bytes:
            left = self.time_left()
            if sock is not None:
                sock.settimeout(left)
            limit = self._bytes_left + 1
            data = read(limit if size < 0 else min(size, limit))
            self._bytes_left -= len(data)
            if self._bytes_left < 0:
                raise _TooLarge
            return data

        return bounded


class _TooLarge(Exception):
    """The server sent more than MAX_ADVERTISEMENT_BYTES."""


class _Unreachable(Exception):
    """No connection could be made to any checked address."""


class _Answer(Exception):
    """An HTTP answer that is not a smart git server's: a redirect, an error, a web page."""

    def __init__(self, status: int, content_type: str):
        super().__init__(f"HTTP {status} ({content_type or 'no content type'})")
        self.status = status
        self.content_type = content_type


class _PinnedPoolManager(pinnedhttp.PinnedPoolManager):
    """The pinned pool manager for dulwich: every wait gets what is left of the budget, any
    answer but a smart git server's is refused, and every read of one is bounded."""

    def __init__(self, pinned: urlpolicy.PinnedURL, budget: _Budget):
        super().__init__(
            pinned, budget.time_left, headers={"User-Agent": default_user_agent_string()}
        )
        self._budget = budget
        self._responses: list[urllib3.BaseHTTPResponse] = []

    def urlopen(
        self, method: str, url: str, redirect: bool = True, **kw: object
    ) -> urllib3.BaseHTTPResponse:
        response = super().urlopen(method, url, redirect, **kw)
        self._responses.append(response)  # dulwich leaves some open
        content_type = response.headers.get("Content-Type", "")
        if response.status != 200 or not content_type.startswith("application/x-git-"):
            raise _Answer(response.status, content_type)
        sock = response.connection.sock if response.connection else None
        response.read = self._budget.reader(response.read, sock)
        return response

    def clear(self) -> None:
        for response in self._responses:
            response.close()
        super().clear()


class _DaemonClient(TCPGitClient):
    """dulwich's git:// client, connecting to the one checked address (the pinned URL's host)
    with every wait and every byte read bounded by the budget."""

    def __init__(self, pinned: urlpolicy.PinnedURL, budget: _Budget):
        super().__init__(str(pinned.addresses[0]), pinned.port)
        self._budget = budget
        self._host_field = urlsplit(pinned.url).netloc.encode()  # as git sends it
        self._open: list[socket.socket | BinaryIO] = []

    def _connect(
        self, cmd: bytes, path: bytes, protocol_version: int | None = None
    ) -> tuple[Protocol, Callable[[], bool], None]:
        try:
            address = (self._host, self._port)
            sock = socket.create_connection(address, timeout=self._budget.time_left())
        except TimeoutError:
            raise
        except OSError as error:
            raise _Unreachable(error) from error
        rfile = sock.makefile("rb")
        self._open += [rfile, sock]  # the socket closes once its file is closed too
        proto = Protocol(self._budget.reader(rfile.read, sock), sock.sendall)
        self.protocol_version = protocol_version or 0
        version = b"\0\0version=2\0" if self.protocol_version == 2 else b""
        proto.send_cmd(b"git-" + cmd, path, b"host=" + self._host_field + version)
        return proto, lambda: False, None

    def close(self) -> None:
        for opened in self._open:
            opened.close()


class _SSHClient(SSHGitClient):
    """dulwich's SSH client, running the service's ssh command (sshaccess.command) to the one
    checked address, as the URL's user, with every byte and the whole run bounded by the
    budget: ssh is killed when the time is up."""

    def __init__(self, pinned: urlpolicy.PinnedURL, command: list[str], budget: _Budget):
        vendor = _SSHVendor(command, budget)
        super().__init__(str(pinned.addresses[0]), pinned.port, pinned.user, vendor)

    def close(self) -> None:
        self.ssh_vendor.close()


class _SSHVendor:
    """What dulwich's SSHGitClient runs a command on the server with."""

    def __init__(self, command: list[str], budget: _Budget):
        self._command = command
        self._budget = budget
        self._running: list[tuple[subprocess.Popen, threading.Timer]] = []

    def run_command(
        self,
        host: str,
        command: bytes,
        username: str | None = None,
        port: int | None = None,
        protocol_version: int | None = None,
        **_: object,
    ) -> SubprocessWrapper:
        version = [f"SetEnv=GIT_PROTOCOL=version={protocol_version}"] if protocol_version else []
        arguments = [*self._command, *sshaccess.options(version)]
        arguments += ["-p", str(port), "--", f"{username}@{host}", command.decode()]
        seconds = self._budget.time_left()  # none left: nothing is started
        process = subprocess.Popen(
            arguments,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        timer = threading.Timer(seconds, process.kill)
        timer.start()
        self._running.append((process, timer))
        return _SSHProcess(process, self._budget)

    def close(self) -> None:
        for process, timer in self._running:
            timer.cancel()
            process.kill()
            process.wait()
            for pipe in (process.stdin, process.stdout, process.stderr):
                pipe.close()


class _SSHProcess(SubprocessWrapper):
    """ssh's pipes, each read bounded by the budget; ssh's standard error (its words and the
    server's) read no further than MAX_SSH_ERROR_BYTES."""

    def __init__(self, process: subprocess.Popen, budget: _Budget):
        super().__init__(process)
        bounded = budget.reader(self.read, None)

        def read(size: int = -1) -> bytes:
            data = bounded(size)
            if not data:
                budget.time_left()  # killed when the time ran out: say so
            return data

        self.read = read

    @property
    def stderr(self) -> "_ErrorLines":
        return _ErrorLines(self.proc.stderr)


class _ErrorLines:
    """ssh's standard error as dulwich reads it once ssh has hung up: its lines, up to
    MAX_SSH_ERROR_BYTES of them."""

    def __init__(self, pipe: BinaryIO):
        self._pipe = pipe

    def readlines(self) -> list[bytes]:
        return self._pipe.read(MAX_SSH_ERROR_BYTES).splitlines(keepends=True)


def _git_path(url: str) -> bytes:
    """The path git sends a git daemon: the URL after its host, "/~user" as "~user"."""
    path = "/" + url.split("://", 1)[1].partition("/")[2]
    return path.removeprefix("/").encode() if path.startswith("/~") else path.encode()


def _explain(
    error: Exception, url: str, token: str, timeout: float, ssh: sshaccess.Access | None
) -> str:
    chain = list(_chain(error))
    host = ssh.host if ssh else gitwords.display_host(url)
    if ssh and (said := sshaccess.explained("\n".join(map(str, chain)), ssh)):
        return said

    def found(*kinds: type[BaseException]) -> BaseException | None:
        return next((link for link in chain if isinstance(link, kinds)), None)

    if answer := found(_Answer):
        return _explain_answer(answer, url, host, bool(token))
    if found(_TooLarge):
        limit = MAX_ADVERTISEMENT_BYTES // 1024 // 1024
        return f"{host} sent more than {limit} MiB of branches and tags, more than is read here."
    if found(ssl.SSLCertVerificationError):
        return gitwords.UNVERIFIED.format(host=host)
    if found(_Unreachable, urllib3.exceptions.NewConnectionError):
        return gitwords.UNREACHABLE.format(host=host)
    if found(TimeoutError, urllib3.exceptions.TimeoutError):
        return f"{host} did not answer within {timeout:g} s."
    if found(NotGitRepository) or any(NOT_THERE.search(str(link)) for link in chain):
        return gitwords.NO_REPOSITORY.format(url=url)
    reason = gitwords.shorten(str(error).strip().rstrip(".") or type(error).__name__, 200)
    return f"Could not read the repository's branches and tags from {host}: {reason}."


def _explain_answer(answer: _Answer, url: str, host: str, with_token: bool) -> str:
    if 300 <= answer.status < 400:
        return gitwords.REDIRECTED
    if answer.status in (401, 403):
        return gitwords.NEEDS_AUTHENTICATION.format(auth_hint=gitwords.AUTH_HINTS[with_token])
    if answer.status == 404:
        return gitwords.NO_REPOSITORY.format(url=url)
    if answer.status == 200:  # a web page, or a "dumb" server, which only git's fetch can read
        return f"There is no git repository at {url}: the server does not speak git's protocol."
    return f"Could not read the repository's branches and tags from {host}: HTTP {answer.status}."


def _chain(error: BaseException | None) -> Iterator[BaseException]:
    """The error and every error it was raised from or during."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _detail(error: Exception) -> str:
    """For staff: every error in the chain."""
    return " <- ".join(f"{type(link).__name__}: {link}" for link in _chain(error))
