"""Real git servers on 127.0.0.1 for the tests: git daemon, smart HTTP, and one that stalls."""

import base64
import contextlib
import gzip
import os
import select
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port}")


class GitDaemon:
    """`git daemon` serving every repository below `base` as git://127.0.0.1:PORT/NAME."""

    def __init__(self, base: Path, host: str = "127.0.0.1"):
        self.base = base
        self.host = host
        self.port = free_port(host)
        self.process = subprocess.Popen(
            [
                "git",
                "daemon",
                "--reuseaddr",
                f"--base-path={base}",
                "--export-all",
                f"--listen={host}",
                f"--port={self.port}",
                str(base),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, host)

    def url(self, name: str) -> str:
        return f"git://{self.host}:{self.port}/{name}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


STALL_SECONDS = 300  # the longest a stalling server holds a connection the client left open


class _GitHTTPHandler(BaseHTTPRequestHandler):
    """Runs `git http-backend` as a CGI for each request; with `auth`, only for requests with
    that Basic authorization (with `public_refs`, only for fetches of objects: anyone may list
    the refs), and after `delay` seconds; with `rate`, sends at most that many bytes a second,
    as a far-away server does; with `hold_fetches`, a fetch of objects waits until that event
    is set. With `pack_fault`, the answer that carries the pack goes wrong after its headers:
    "die" sends half of it and closes the connection, as a server killed mid-transfer; "stall"
    sends nothing more until the client gives up."""

    project_root: Path
    auth: str | None = None  # "user:password"
    public_refs: bool = False
    delay: float = 0
    rate: int = 0
    pack_fault: str = ""
    hold_fetches: threading.Event | None = None

    def do_GET(self) -> None:
        if self.public_refs or self._authorized():
            self._backend(b"")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        fetch = b"want " in body  # either protocol; a v2 ls-refs wants nothing
        if fetch and self.hold_fetches is not None:
            self.hold_fetches.wait(timeout=120)
        if (self.public_refs and not fetch) or self._authorized():
            self._backend(body)

    def _authorized(self) -> bool:
        time.sleep(self.delay)
        expected = "Basic " + base64.b64encode(self.auth.encode()).decode() if self.auth else None
        if expected is None or self.headers.get("Authorization") == expected:
            return True
        self.send_response(401)
        self.send_header("WWW-Authenticate", 'Basic realm="private"')
        self.send_header("Content-Length", "0")
        self.end_headers()
        return False

    def _backend(self, body: bytes) -> None:
        path, _, query = self.path.partition("?")
        env = {
            **os.environ,
            "GIT_PROJECT_ROOT": str(self.project_root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            # How a client asks for protocol v2 over HTTP; real servers pass it on.
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
        }
        result = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True, check=False
        )
        head, _, payload = result.stdout.partition(b"\r\n\r\n")
        status = 200
        headers = []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(": ")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.pack_fault and b"want " in body:  # git asks for objects: the pack follows
            self._fail_to_send(payload)
            return
        chunk = max(self.rate // 10, 1) if self.rate else len(payload) or 1
        for start in range(0, len(payload), chunk):
            self.wfile.write(payload[start : start + chunk])
            time.sleep(0.1 if self.rate else 0)

    def _fail_to_send(self, payload: bytes) -> None:
        if self.pack_fault == "die":
            self.wfile.write(payload[: len(payload) // 2])  # the connection closes after it
        else:  # wait until the client closes its end (its socket then reads as ready)
            select.select([self.connection], [], [], STALL_SECONDS)

    def log_message(self, format, *args) -> None:
        pass


class _Threaded:
    """A ThreadingHTTPServer on 127.0.0.1 in a background thread."""

    def __init__(
        self, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1", port: int = 0
    ):
        self.host = host
        self.server = ThreadingHTTPServer((host, port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GitHTTPServer(_Threaded):
    """Smart HTTP for every repository below `base`: http://127.0.0.1:PORT/NAME."""

    def __init__(
        self,
        base: Path,
        auth: str | None = None,
        delay: float = 0,
        host: str = "127.0.0.1",
        rate: int = 0,
        pack_fault: str = "",
        public_refs: bool = False,
        hold_fetches: threading.Event | None = None,
    ):
        attributes = {
            "project_root": base,
            "auth": auth,
            "delay": delay,
            "rate": rate,
            "pack_fault": pack_fault,
            "public_refs": public_refs,
            "hold_fetches": hold_fetches,
        }
        super().__init__(type("Handler", (_GitHTTPHandler,), attributes), host)

    def url(self, name: str) -> str:
        return f"http://{self.host}:{self.port}/{name}"


class CanaryServer(_Threaded):
    """Answers every request with 404 and remembers its path: proof of what was fetched."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.requests: list[str] = []
        canary = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                canary.requests.append(self.path)
                self.send_error(404)

            do_POST = do_GET

            def log_message(self, format, *args) -> None:
                pass

        super().__init__(Handler, host, port)

    def url(self, path: str = "canary") -> str:
        return f"http://{self.host}:{self.port}/{path}"


class RedirectServer(_Threaded):
    """Answers every request with a 302 to the same path on `target` (a base URL)."""

    def __init__(self, target: str):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(302)
                self.send_header("Location", target.rstrip("/") + self.path)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format, *args) -> None:
                pass

        super().__init__(Handler)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"


class _RawServer:
    """A TCP server on 127.0.0.1 that hands each connection to `_serve` in a thread of its
    own: for servers that misbehave below what http.server or git daemon would let them."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class StallingServer(_RawServer):
    """A git daemon that hangs: it lists one branch (so that the worker's ref lookup and git's
    own get that far) and then never sends a byte of the objects git asks for. With
    `advertise=False` it accepts connections and never answers at all."""

    COMMIT = b"1" * 40  # made up: git never gets to ask for its objects

    def __init__(self, advertise: bool = True):
        self.advertise = advertise
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        """Protocol v0's answer to "git-upload-pack /path": a server without v2 may give it to
        any client. What the client says next is never answered."""
        if not self.advertise:
            return
        with contextlib.suppress(OSError):
            conn.recv(4096)
            capabilities = b"symref=HEAD:refs/heads/main ofs-delta side-band-64k"
            conn.sendall(
                _pkt(self.COMMIT + b" HEAD\0" + capabilities + b"\n")
                + _pkt(self.COMMIT + b" refs/heads/main\n")
                + b"0000"
            )

    def url(self, name: str = "stall.git") -> str:
        return f"git://127.0.0.1:{self.port}/{name}"


def _pkt(data: bytes) -> bytes:
    return f"{len(data) + 4:04x}".encode() + data


class EndlessRefsServer(_RawServer):
    """Answers git:// and smart HTTP requests alike with a ref advertisement (git's first
    protocol) that never ends, in batches of `batch` refs `delay` seconds apart: a server that
    would fill a reader's memory, or keep it forever."""

    def __init__(self, delay: float = 0, batch: int = 1000):
        self.delay = delay
        self.batch = batch
        super().__init__()

    def _serve(self, conn: socket.socket) -> None:
        commit = b"1" * 40
        with conn:
            try:
                if conn.recv(4096).startswith(b"GET "):
                    conn.sendall(
                        b"HTTP/1.0 200 OK\r\n"
                        b"Content-Type: application/x-git-upload-pack-advertisement\r\n\r\n"
                        + _pkt(b"# service=git-upload-pack\n")
                        + b"0000"
                    )
                conn.sendall(_pkt(commit + b" HEAD\0symref=HEAD:refs/heads/main\n"))
                start = 0
                while True:
                    refs = range(start, start + self.batch)
                    conn.sendall(b"".join(_pkt(commit + b" refs/tags/t%d\n" % n) for n in refs))
                    start += self.batch
                    time.sleep(self.delay)
            except OSError:  # the reader gave up
                return

    def url(self, scheme: str = "git", name: str = "endless.git") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{name}"


class RecordingGitHTTPServer(GitHTTPServer):
    """GitHTTPServer that keeps each request's method, path and headers in `requests`."""

    def __init__(self, base: Path, **options):
        super().__init__(base, **options)
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        recorded = self.requests

        class Handler(self.server.RequestHandlerClass):
            def parse_request(self) -> bool:
                parsed = super().parse_request()
                if parsed:
                    recorded.append((self.command, self.path, dict(self.headers)))
                return parsed

        self.server.RequestHandlerClass = Handler


class GitHTTPSServer(RecordingGitHTTPServer):
    """RecordingGitHTTPServer over TLS, with the certificate and key in the PEM file `pem`:
    https://127.0.0.1:PORT/NAME."""

    def __init__(self, base: Path, pem: Path, **options):
        import ssl

        super().__init__(base, **options)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(pem)
        # Before any client connects; a failed handshake only drops that connection.
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    def url(self, name: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}/{name}"
