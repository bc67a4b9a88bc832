"""The egress proxy on real sockets: what it tunnels and forwards, what it refuses (before any
connection), and what it keeps of each refusal."""

import socket
import threading
from urllib.parse import urlsplit

import pytest

from clones.safety import egress

from ..support.gitservers import CanaryServer


class Listener:
    """A TCP server that answers each connection (echoing what it gets) and counts the
    connections it accepted."""

    def __init__(self, host: str = "127.0.0.1"):
        self.accepted = 0
        self.sock = socket.create_server((host, 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.answer(conn)

    def answer(self, conn: socket.socket) -> None:
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


@pytest.fixture
def proxy():
    with egress.Proxy("127.0.0.1") as running:
        yield running


@pytest.fixture
def only_127_0_0_1(settings):
    settings.CLONES_ALLOW_PRIVATE_NETWORKS = False
    settings.CLONES_ALLOWED_PRIVATE_HOSTS = ["127.0.0.1"]


def ask(
    proxy: egress.Proxy, head: str, authorization: str | None = None
) -> tuple[socket.socket, bytes]:
    """Send a request head to the proxy, with its secret (or `authorization`); the connection
    and the proxy's answer's head."""
    client = socket.create_connection(("127.0.0.1", proxy.port), timeout=10)
    line, _, rest = head.partition("\r\n")
    given = proxy.authorization if authorization is None else authorization
    client.sendall(f"{line}\r\nProxy-Authorization: {given}\r\n{rest}".encode())
    answer = b""
    while b"\r\n\r\n" not in answer:
        chunk = client.recv(4096)
        if not chunk:
            break
        answer += chunk
    return client, answer


def test_a_tunnel_to_an_allowed_destination_carries_bytes_both_ways(proxy, listener):
    client, answer = ask(proxy, f"CONNECT 127.0.0.1:{listener.port} HTTP/1.1\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 200 ")
    client.sendall(b"through the tunnel")
    assert client.recv(1024) == b"through the tunnel"
    client.close()
    assert proxy.refusals == []


def test_a_plain_request_goes_to_the_server_by_its_path_and_the_answer_comes_back(proxy):
    canary = CanaryServer()
    try:
        _client, answer = ask(
            proxy,
            f"GET http://127.0.0.1:{canary.port}/team/repo.git/info/refs?service=x HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{canary.port}\r\nProxy-Authorization: Basic c2VjcmV0\r\n\r\n",
        )
    finally:
        canary.stop()

    assert answer.startswith(b"HTTP/1.0 404 ")
    assert canary.requests == ["/team/repo.git/info/refs?service=x"]


@pytest.mark.parametrize(
    "head, reason",
    [
        ("CONNECT 127.0.0.2:{port} HTTP/1.1", "127.0.0.2 is a private or reserved address"),
        # Cloud metadata, as an LFS batch answer or a redirect might name it.
        ("CONNECT 169.254.169.254:80 HTTP/1.1", "169.254.169.254 is a private or reserved"),
        ("GET http://[::ffff:127.0.0.2]:{port}/x HTTP/1.1", "::ffff:127.0.0.2 is a private"),
        ("CONNECT localhost:{port} HTTP/1.1", "localhost is a local host name"),
    ],
    ids=["private", "metadata", "mapped", "local name"],
)
def test_a_forbidden_destination_is_refused_before_any_connection_and_kept(
    head, reason, only_127_0_0_1, loopback_only, proxy
):
    canary = Listener("127.0.0.2")
    try:
        client, answer = ask(proxy, head.format(port=canary.port) + "\r\n\r\n")
        body = client.recv(4096).decode()
    finally:
        canary.close()

    assert answer.startswith(b"HTTP/1.1 403 Forbidden")
    assert reason in answer.decode() + body
    assert canary.accepted == 0
    assert len(proxy.refusals) == 1 and reason in proxy.refusals[0].reason


def test_a_port_the_policy_does_not_accept_is_refused(settings, proxy, listener):
    settings.CLONES_ALLOWED_PORTS = {"https": {443}}

    _client, answer = ask(proxy, f"CONNECT 127.0.0.1:{listener.port} HTTP/1.1\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 403 ")
    assert proxy.refusals[0].reason == (
        f"Port {listener.port} is not accepted for https:// URLs; use 443."
    )
    assert listener.accepted == 0


@pytest.mark.parametrize(
    "head",
    [
        "GET ftp://127.0.0.1/x HTTP/1.1",  # only http is forwarded, https is tunnelled
        "GET /relative HTTP/1.1",
        "NONSENSE",
        "CONNECT 127.0.0.1:notaport HTTP/1.1",
    ],
)
def test_a_request_it_cannot_read_is_answered_400(head, proxy):
    _client, answer = ask(proxy, head + "\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert proxy.refusals == []


def test_an_unreachable_destination_is_answered_502(proxy):
    closed = socket.socket()  # bound, so no one else takes the port, and not listening
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]

    _client, answer = ask(proxy, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n")
    closed.close()

    assert answer.startswith(b"HTTP/1.1 502 ")


def test_once_the_block_ends_the_proxy_is_gone_and_so_are_its_tunnels(listener):
    with egress.Proxy("127.0.0.1") as proxy:
        client, _answer = ask(proxy, f"CONNECT 127.0.0.1:{listener.port} HTTP/1.1\r\n\r\n")

    assert client.recv(1024) == b""  # the open tunnel was closed
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


class KeepAliveServer(Listener):
    """Answers each connection's request with `answer` and keeps the connection open."""

    def __init__(self, answer: bytes):
        self.response = answer  # before the listening thread starts
        super().__init__()

    def answer(self, conn: socket.socket) -> None:
        conn.recv(4096)
        conn.sendall(self.response)  # and stays open


def test_a_plain_answer_ends_the_clients_connection_so_a_next_request_is_checked_afresh(proxy):
    """Each head the server sends (an interim 100 Continue, then the answer) says
    `Connection: close`, whatever the server said: the client's next request, maybe for
    another host, comes on a new connection, not down this one to this server."""
    server = KeepAliveServer(
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=60\r\n"
        b"Content-Length: 2\r\n\r\nok"
    )
    try:
        client, answer = ask(
            proxy, f"POST http://127.0.0.1:{server.port}/x HTTP/1.1\r\nHost: h\r\n\r\n"
        )
        while not answer.endswith(b"ok"):
            answer += client.recv(4096)
    finally:
        server.close()

    interim, final, body = answer.split(b"\r\n\r\n")
    assert interim == b"HTTP/1.1 100 Continue\r\nConnection: close"
    assert final.splitlines() == [
        b"HTTP/1.1 200 OK",
        b"Content-Length: 2",
        b"Connection: close",
    ]
    assert body == b"ok"


def test_a_head_line_without_a_colon_is_answered_400(proxy, listener):
    _client, answer = ask(proxy, f"CONNECT 127.0.0.1:{listener.port} HTTP/1.1\r\nbroken\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert listener.accepted == 0


def test_a_client_that_sends_no_head_is_let_go(monkeypatch):
    monkeypatch.setattr(egress, "HEAD_SECONDS", 0.2)
    with egress.Proxy("127.0.0.1") as quick:
        client = socket.create_connection(("127.0.0.1", quick.port), timeout=5)

        assert client.recv(1024) == b""  # closed by the proxy, not by this test


def test_an_answer_whose_head_lines_end_in_lf_alone_is_passed_on(proxy):
    server = KeepAliveServer(b"HTTP/1.1 200 OK\nContent-Length: 5\n\nhello")
    try:
        client, answer = ask(proxy, f"GET http://127.0.0.1:{server.port}/x HTTP/1.1\r\n\r\n")
        while not answer.endswith(b"hello"):
            answer += client.recv(4096)
    finally:
        server.close()

    assert answer == b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"


def test_an_answer_with_no_end_to_its_head_is_cut_off_not_kept(proxy):
    server = KeepAliveServer(b"HTTP/1.1 200 OK\r\n" + b"X-Endless: " + b"a" * (1024 * 1024))
    try:
        _client, answer = ask(proxy, f"GET http://127.0.0.1:{server.port}/x HTTP/1.1\r\n\r\n")
    finally:
        server.close()

    assert answer == b""  # the connection closed, and nothing of the head passed on


@pytest.mark.parametrize("authorization", ["", "Basic Y2xvbmVzaGVsZjp3cm9uZw=="])
def test_only_the_clone_holding_the_secret_may_use_its_proxy(authorization, proxy, listener):
    _client, answer = ask(
        proxy, f"CONNECT 127.0.0.1:{listener.port} HTTP/1.1\r\n\r\n", authorization
    )

    assert answer.startswith(b"HTTP/1.1 407 ")
    assert b'Proxy-Authenticate: Basic realm="cloneshelf"' in answer
    assert listener.accepted == 0 and proxy.refusals == []


def test_the_proxys_url_carries_its_secret(proxy):
    url = urlsplit(proxy.url("127.0.0.1"))

    assert (url.username, url.password, url.port) == ("cloneshelf", proxy.secret, proxy.port)
    with egress.Proxy("127.0.0.1") as another:
        assert another.secret != proxy.secret
