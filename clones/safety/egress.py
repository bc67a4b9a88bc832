"""The way out of a clone container for what a repository names beyond itself (its submodules):
an HTTP proxy, one per container run, that checks each destination with the URL policy and
connects only to the addresses it checked.

git's connection to the repository asked for is pinned by the worker (urlpolicy.pin). The URLs a
repository carries are not known until git reads them, at any depth and relative to one
another, so git reaches for them through this proxy (`http.proxy`): each host is checked when
git asks for it, resolved once, and connected to at an address that passed, so a name that
resolves elsewhere the next time (DNS rebinding) gains nothing. A refusal is answered 403 and
kept (Proxy.refusals), so that the job fails saying what was refused and why, not with git's
"CONNECT tunnel failed, response 403".
"""

import base64
import hmac
import logging
import re
import secrets
import selectors
import socket
import socketserver
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from . import urlpolicy

logger = logging.getLogger(__name__)

USER = "cloneshelf"  # the proxy URL's user name; its password is the proxy's secret
PHRASES = {
    400: "Bad Request",
    403: "Forbidden",
    407: "Proxy Authentication Required",
    502: "Bad Gateway",
}
MAX_HEAD_BYTES = 16 * 1024  # a request line and its headers; git's are a few hundred bytes
HEAD_SECONDS = 10  # for a client to send its request's head
CONNECT_SECONDS = 10
IDLE_SECONDS = 300  # a tunnel with no byte either way for this long is closed
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Refusal:
    """A destination the proxy did not connect to, and why, in words for the person who asked."""

    destination: str  # host:port, as git asked for it
    reason: str


class Proxy:
    """An HTTP proxy on `bind` (a port the system picks) for as long as the `with` block runs:
    CONNECT tunnels for https, and plain http requests for http, each to a destination the
    `reach` of the URL policy allows, for the one client that holds its secret (its url()
    carries it): bound on a shared network, no one else may use a job's proxy, nor have their
    refusals count as the job's."""

    def __init__(self, bind: str, reach: urlpolicy.Reach = urlpolicy.GIT_SERVERS):
        self.reach = reach
        self.secret = secrets.token_urlsafe(24)
        credentials = base64.b64encode(f"{USER}:{self.secret}".encode()).decode()
        self.authorization = f"Basic {credentials}"
        self.refusals: list[Refusal] = []
        self.unreached: list[str] = []  # destinations allowed, where nothing answered
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._closed = False
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        server_class = type("Server", (_Server,), {"address_family": family})
        self._server = server_class((bind, 0), _Handler, bind_and_activate=True)
        self._server.proxy = self

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def url(self, host: str) -> str:
        """The proxy's URL, with its secret, for a client that reaches this machine at `host`
        (git and git-lfs send the URL's user and password as Proxy-Authorization)."""
        return f"http://{USER}:{self.secret}@{urlpolicy.bracketed(host)}:{self.port}"

    def __enter__(self) -> "Proxy":
        # Polled at 50 ms, so that a job waits no longer for its proxy to stop.
        serve = partial(self._server.serve_forever, poll_interval=0.05)
        threading.Thread(target=serve, daemon=True).start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:  # tunnels still open: their relays wake up and end
            self._closed = True
            for sock in self._open:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def refuse(self, destination: str, reason: str) -> None:
        with self._lock:
            self.refusals.append(Refusal(destination, reason))
        logger.info("Egress refused %s: %s", destination, reason)

    @contextmanager
    def tracked(self, sock: socket.socket) -> Iterator[socket.socket]:
        """`sock`, closed when the block ends, or at once when the proxy has ended (a handler
        that was still connecting): no relay outlives the proxy."""
        with self._lock:
            self._open.add(sock)
            if self._closed:
                sock.shutdown(socket.SHUT_RDWR)
        try:
            yield sock
        finally:
            with self._lock:
                self._open.discard(sock)
            sock.close()


def available() -> bool:
    """Whether this installation runs egress proxies (CLONES_EGRESS_BIND)."""
    return bool(settings.CLONES_EGRESS_BIND)


@contextmanager
def for_container() -> Iterator[tuple[Proxy, str]]:
    """A proxy for one container run, and its URL as the container reaches it
    (CLONES_EGRESS_HOST, resolved here: a container may not know the names this worker does)."""
    bind = settings.CLONES_EGRESS_BIND
    host = settings.CLONES_EGRESS_HOST or bind
    if host in ("0.0.0.0", "::"):
        raise OSError("CLONES_EGRESS_HOST must say how containers reach this worker.")
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET  # the proxy's own
    try:
        address = socket.getaddrinfo(host, None, family, socket.SOCK_STREAM)[0][4][0]
    except socket.gaierror as exc:
        raise OSError(f"CLONES_EGRESS_HOST {host!r} cannot be resolved: {exc}") from exc
    with Proxy(bind) as proxy:
        yield proxy, proxy.url(address)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    proxy: Proxy


class _Handler(socketserver.StreamRequestHandler):
    server: _Server
    # Unbuffered: the head is read a byte at a time, so that nothing after it (a request's
    # body) is read ahead and left behind when the connection is handed to the relay.
    rbufsize = 0

    def handle(self) -> None:
        proxy = self.server.proxy
        with proxy.tracked(self.connection):
            self.connection.settimeout(HEAD_SECONDS)
            with suppress(OSError):  # the client sent no head in time, or went away
                self._serve(proxy)

    def _serve(self, proxy: Proxy) -> None:
        head = self._read_head()
        if head is None:
            return self._answer(400, "The request's head is malformed or too long.")
        method, target, headers = head
        given = [value for name, value in headers if name.lower() == "proxy-authorization"]
        if not (given and hmac.compare_digest(given[0], proxy.authorization)):
            return self._answer(407, "This proxy serves one clone, which holds its secret.")
        try:
            request = _Request.parse(method, target)
        except ValueError as exc:
            return self._answer(400, str(exc))
        try:
            addresses = checked(request.scheme, request.host, request.port, proxy.reach)
        except ValidationError as exc:
            proxy.refuse(request.destination, exc.message)
            return self._answer(403, exc.message)
        upstream = _connect(addresses, request.port)
        if upstream is None:
            proxy.unreached.append(request.destination)
            return self._answer(502, f"Could not connect to {request.destination}.")
        with proxy.tracked(upstream):
            if request.tunnel:
                self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
                return _relay(self.connection, upstream)
            upstream.sendall(request.forwarded_head(method, headers))
            return _relay(self.connection, upstream, _ClosingResponse().feed)

    def _read_head(self) -> tuple[str, str, list[tuple[str, str]]] | None:
        lines, size = [], 0
        while True:
            line = self.rfile.readline(MAX_HEAD_BYTES + 1)
            size += len(line)
            if not line.endswith(b"\n") or size > MAX_HEAD_BYTES:
                return None
            if line in (b"\r\n", b"\n"):
                break
            lines.append(line.decode("latin-1").rstrip("\r\n"))
        if not lines or len(lines[0].split(" ")) != 3 or not all(":" in line for line in lines[1:]):
            return None
        method, target, _version = lines[0].split(" ")
        headers = [line.split(":", 1) for line in lines[1:]]
        return method, target, [(name.strip(), value.strip()) for name, value in headers]

    def _answer(self, status: int, reason: str) -> None:
        body = (reason + "\n").encode()
        phrase = PHRASES[status]
        challenge = 'Proxy-Authenticate: Basic realm="cloneshelf"\r\n' if status == 407 else ""
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"{challenge}Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with suppress(OSError):
            self.wfile.write(head.encode() + body)


@dataclass(frozen=True)
class _Request:
    """Where a proxy request goes: a CONNECT tunnel (https) or a plain http request."""

    scheme: str
    host: str  # as asked, an IPv6 address without brackets
    port: int
    path: str = ""  # a plain request's, from its absolute URL

    @property
    def tunnel(self) -> bool:
        return self.scheme == "https"

    @property
    def destination(self) -> str:
        return f"{urlpolicy.bracketed(self.host)}:{self.port}"

    @classmethod
    def parse(cls, method: str, target: str) -> "_Request":
        if method == "CONNECT":
            parts = urlsplit(f"//{target}")
            scheme = "https"
        else:
            parts = urlsplit(target)
            scheme = parts.scheme
            if scheme != "http":
                raise ValueError("Only CONNECT and absolute http:// requests go through here.")
        try:
            port = parts.port or urlpolicy.DEFAULT_PORTS[scheme]
        except ValueError:
            raise ValueError(f"{target[:100]!r} has no valid port.") from None
        if not parts.hostname:
            raise ValueError(f"{target[:100]!r} names no host.")
        path = urlunsplit(("", "", parts.path or "/", parts.query, ""))
        return cls(scheme, parts.hostname, port, path)

    def forwarded_head(self, method: str, headers: list[tuple[str, str]]) -> bytes:
        """The plain request as the server is sent it: its path alone, without what was for
        the proxy, on a connection that ends with the answer (a next request on it could name
        another host)."""
        kept = [
            (name, value)
            for name, value in headers
            if name.lower() not in ("connection", "keep-alive")
            and not name.lower().startswith("proxy-")
        ]
        lines = [f"{method} {self.path} HTTP/1.1", *(f"{n}: {v}" for n, v in kept)]
        lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def checked(
    scheme: str, host: str, port: int, reach: urlpolicy.Reach
) -> tuple[urlpolicy.IPAddress, ...]:
    """The addresses of host a connection may go to, each checked by the URL policy as a
    repository URL at that scheme, host and port would be; ValidationError says why not."""
    url = f"{scheme}://{urlpolicy.netloc(scheme, host, port)}/"
    return urlpolicy.pin(url, reach).addresses


def _connect(addresses, port: int) -> socket.socket | None:
    """A connection to the first of `addresses` that answers; None if none does."""
    for address in addresses:
        try:
            return socket.create_connection((str(address), port), timeout=CONNECT_SECONDS)
        except OSError:
            continue
    return None


# Where a head ends: a blank line, its line ends CRLF or, as clients accept too, LF alone.
HEAD_END = re.compile(rb"\r?\n\r?\n")


class _ClosingResponse:
    """A server's answer to a plain request, passed on with `Connection: close` in its head (in
    each head, if interim 1xx ones come first): the client then sends its next request on a new
    connection, which is checked afresh, not on this one to this server."""

    def __init__(self):
        self._head = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        """What to pass on of `data`; OSError (the relay ends) for a head past MAX_HEAD_BYTES."""
        if self._done:
            return data
        self._head += data
        passed = b""
        while not self._done and (end := HEAD_END.search(self._head)):
            head, self._head = self._head[: end.start()], self._head[end.end() :]
            passed += self._closing(head)
            self._done = not re.match(rb"HTTP/\d(\.\d)? 1\d\d ", head)
        if self._done:
            passed, self._head = passed + self._head, b""
        elif len(self._head) > MAX_HEAD_BYTES:
            raise OSError("The server's answer has no end to its head.")
        return passed

    @staticmethod
    def _closing(head: bytes) -> bytes:
        status, *fields = re.split(rb"\r?\n", head)
        kept = [
            field
            for field in fields
            if field.split(b":", 1)[0].strip().lower() not in (b"connection", b"keep-alive")
        ]
        return b"\r\n".join([status, *kept, b"Connection: close"]) + b"\r\n\r\n"


def _relay(
    client: socket.socket,
    upstream: socket.socket,
    answer: Callable[[bytes], bytes] = lambda data: data,
) -> None:
    """Bytes both ways (the server's through `answer`) until both sides have finished sending,
    or neither sent for IDLE_SECONDS; one side's end of sending is passed on to the other
    (half-close)."""
    peers = {client: upstream, upstream: client}
    open_readers = set(peers)
    with selectors.DefaultSelector() as selector:
        for sock in peers:
            sock.setblocking(True)
            sock.settimeout(IDLE_SECONDS)
            selector.register(sock, selectors.EVENT_READ)
        while open_readers:
            ready = selector.select(IDLE_SECONDS)
            if not ready:
                return
            for key, _events in ready:
                sock = key.fileobj
                try:
                    data = sock.recv(CHUNK)
                    if data:
                        peers[sock].sendall(answer(data) if sock is upstream else data)
                        continue
                    peers[sock].shutdown(socket.SHUT_WR)
                except OSError:
                    return
                selector.unregister(sock)
                open_readers.discard(sock)
