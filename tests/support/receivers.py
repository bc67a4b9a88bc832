"""A webhook receiver on 127.0.0.1 that answers as told and keeps what it was sent."""

import json
import ssl
from dataclasses import dataclass
from datetime import datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler

from django.utils import timezone

from .gitservers import _Threaded


@dataclass
class Received:
    headers: Message
    body: bytes
    at: datetime

    @property
    def json(self) -> dict:
        return json.loads(self.body)


class Receiver(_Threaded):
    """A webhook receiver: answers each POST with the next of `statuses` (the last one again
    once they run out) and keeps what it was sent. With `pem`, over TLS."""

    def __init__(self, *statuses: int, pem: str | None = None):
        self.received: list[Received] = []
        answers = list(statuses or [200])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(Received(self.headers, body, timezone.now()))
                status = answers.pop(0) if len(answers) > 1 else answers[0]
                self.send_response(status)
                self.send_header("Content-Length", "13")
                self.end_headers()
                self.wfile.write(b"thank you \xe2\x9c\x93")

            def log_message(self, format, *args) -> None:
                pass

        super().__init__(Handler)
        if pem:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(pem)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hook"
