"""The site's web server as production runs it (the image's command; `./run` runs the same):
slow clients downloading a big archive get every byte, and the site answers meanwhile.

gunicorn's worker timeout is lowered to TIMEOUT through GUNICORN_CMD_ARGS, as an operator would
set it, so that each download outlasts it several times within a CI run: sync workers, killed
after it, cut these downloads (and /healthz waits behind them), as the 30 s default cut real
ones.
"""

import hashlib
import http.client
import json
import os
import shlex
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.storage import default_storage
from django.test import Client
from django.urls import reverse

from .support import PROJECT_DIR
from .support.gitservers import free_port
from .support.helpers import make_done_job, wait_until, web_server_command

ARCHIVE_BYTES = 64 * 2**20
TIMEOUT = 3  # seconds; gunicorn's default is 30
# Each client reads at its own pace, from 100 to 400 KB/s, for this long (well past TIMEOUT),
# then the rest as fast as it can: seven minutes of 150 KB/s would not fit in CI.
SLOW_SECONDS = 8
SLOWEST, FASTEST = 100_000, 400_000  # bytes a second
ARRIVALS = 0.1  # seconds between one client's request and the next one's
HEALTHZ_INTERVAL = 0.25


def gunicorn_options(command: list[str]) -> list[str]:
    """What a gunicorn command says besides where to listen and where to log requests."""
    options, skip = [], False
    for arg in command:
        if not skip and arg not in {"--bind", "--access-logfile"}:
            options.append(arg)
        skip = arg in {"--bind", "--access-logfile"}
    return options


def test_run_starts_gunicorn_as_the_image_does():
    run = (PROJECT_DIR / "run").read_text()
    line = next(line for line in run.splitlines() if line.startswith(".venv/bin/gunicorn "))
    run_command = shlex.split(line.removesuffix("&"))[1:]
    image_command = web_server_command(8000)[3:]  # after `python -m gunicorn`
    assert gunicorn_options(run_command) == gunicorn_options(image_command)
    assert image_command[:2] == ["--config", "project/gunicorn.conf.py"]


@dataclass
class Site:
    port: int
    log: Path

    def errors(self) -> list[str]:
        """What gunicorn logged as errors (a worker killed for its timeout, say)."""
        lines = self.log.read_text(errors="replace").splitlines()
        return [line for line in lines if "[ERROR]" in line or "[CRITICAL]" in line]


@pytest.fixture
def site(transactional_db, tmp_path):
    """gunicorn started by the image's command on a free port, with the tests' settings."""
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "GUNICORN_CMD_ARGS": f"--timeout {TIMEOUT}",
    }
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as output:
        web = subprocess.Popen(
            web_server_command(port), cwd=PROJECT_DIR, env=env, stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers too are stopped below, however the test ends
        )  # fmt: skip
    try:
        wait_until(lambda: healthz(port) is not None, timeout=30, what="gunicorn to answer")
        yield Site(port, log)
    finally:
        web.terminate()
        try:
            web.wait(timeout=5)
        except subprocess.TimeoutExpired:  # still waiting for downloads a failure left open
            os.killpg(web.pid, signal.SIGKILL)
            web.wait()


@pytest.fixture
def big_archive(owner):
    job = make_done_job(owner, os.urandom(ARCHIVE_BYTES), "big-archive.tar")
    yield job
    default_storage.delete(job.archive.name)


def session_cookie(user) -> str:
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def healthz(port: int) -> dict | None:
    """/healthz's report (200 or 503: no worker runs here), or None without one."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/healthz")
        return json.loads(connection.getresponse().read())
    except (OSError, ValueError):  # no answer, or not the report
        return None
    finally:
        connection.close()


@dataclass
class Download:
    status: int
    content_length: int
    received: int
    sha256: str
    seconds: float


def download(port: int, path: str, cookie: str, rate: float, delay: float) -> Download:
    """GET `path` after `delay` seconds; read the response at `rate` bytes a second for
    SLOW_SECONDS, then the rest at once."""
    time.sleep(delay)
    asked = time.monotonic()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", path, headers={"Cookie": cookie})
    response = connection.getresponse()
    started = time.monotonic()
    digest, received, buffer = hashlib.sha256(), 0, memoryview(bytearray(2**20))
    while True:
        elapsed = time.monotonic() - started
        slow = elapsed < SLOW_SECONDS
        if slow and received > rate * elapsed:
            time.sleep(min(received / rate, SLOW_SECONDS) - elapsed)
            continue
        read = response.readinto(buffer[: 16 * 1024 if slow else None])
        if not read:  # the end, or the server closed the connection short of it
            break
        digest.update(buffer[:read])
        received += read
    connection.close()
    return Download(
        response.status,
        int(response.headers["Content-Length"]),
        received,
        digest.hexdigest(),
        time.monotonic() - asked,
    )


class HealthzWatch:
    """/healthz asked again and again from a thread of its own: how long each answer took."""

    def __init__(self, port: int):
        self.port = port
        self.seconds: list[float] = []
        self.unanswered = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._watch)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.stopped.set()
        self.thread.join()

    def _watch(self) -> None:
        while not self.stopped.wait(HEALTHZ_INTERVAL):
            asked = time.monotonic()
            report = healthz(self.port)
            self.seconds.append(time.monotonic() - asked)
            if report is None or not report["checks"]["database"]["ok"]:
                self.unanswered += 1


@pytest.mark.parametrize("clients", [2, 20])
def test_slow_downloads_are_whole_and_the_site_answers_meanwhile(site, big_archive, owner, clients):
    path = reverse("clones:download", args=[big_archive.id])
    cookie = session_cookie(owner)
    rates = [SLOWEST + (FASTEST - SLOWEST) * i / max(clients - 1, 1) for i in range(clients)]
    delays = [ARRIVALS * i for i in range(clients)]

    with HealthzWatch(site.port) as watch, ThreadPoolExecutor(clients) as pool:
        downloads = list(pool.map(partial(download, site.port, path, cookie), rates, delays))

    for done in downloads:
        assert (done.status, done.content_length) == (200, ARCHIVE_BYTES)
        assert done.received == ARCHIVE_BYTES, f"cut at byte {done.received}: {site.errors()}"
        assert done.sha256 == big_archive.archive_sha256
    assert min(done.seconds for done in downloads) > 2 * TIMEOUT  # each outlasted the timeout
    assert watch.unanswered == 0
    assert len(watch.seconds) >= SLOW_SECONDS / HEALTHZ_INTERVAL / 2
    assert max(watch.seconds) < 1, f"/healthz took {max(watch.seconds):.2f} s: {site.errors()}"
    assert site.errors() == []
    print(
        f"{clients} downloads of {ARCHIVE_BYTES} bytes in "
        f"{min(d.seconds for d in downloads):.1f}-{max(d.seconds for d in downloads):.1f} s; "
        f"/healthz {len(watch.seconds)} times, at most {max(watch.seconds) * 1000:.0f} ms"
    )
