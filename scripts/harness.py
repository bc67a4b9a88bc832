"""What the scripts in this folder share: Django on a throwaway data directory, users, a Docker
engine of the run's own, processes (workers, a web server) in sessions of their own, and a
memory sampler.

    import harness

    ROOT = harness.setup_django("cloneshelf-bench-", {"CLONES_WORKERS": "2"})  # before app imports
    from clones import jobs  # noqa: E402
    ...
    harness.migrate()
    worker = harness.start_worker(ROOT / "worker.log")

Everything runs with tests.settings (through scripts/settings.py, which adds times to the log
lines), as the test suite does: the test engine's git image, git servers on 127.0.0.1 allowed,
one SQLite file under ROOT that every process started from here shares (they inherit
CLONESHELF_TEST_ROOT and the settings given to setup_django).
"""

import contextlib
import logging
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil
import requests

PROJECT_DIR = Path(__file__).resolve().parent.parent


def setup_django(prefix: str, env: dict[str, str] | None = None) -> Path:
    """Point tests.settings at a new temporary directory, apply `env` (settings for this process
    and every process started from it), set Django up; the directory."""
    sys.path.insert(0, str(PROJECT_DIR))
    os.environ["CLONESHELF_TEST_ROOT"] = tempfile.mkdtemp(prefix=prefix)
    os.environ["DJANGO_SETTINGS_MODULE"] = "scripts.settings"
    os.environ.update(env or {})
    import django

    django.setup()
    # django-q2 says "Enqueued …" for every task this process queues: noise among the figures.
    logging.getLogger("django-q").setLevel(logging.WARNING)
    return Path(os.environ["CLONESHELF_TEST_ROOT"])


def migrate() -> None:
    """Create the run's database first if it is a PostgreSQL one (CLONESHELF_TEST_DATABASE_URL:
    tests.settings names it after the run), then migrate it."""
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{connection.settings_dict["NAME"]}"')
    call_command("migrate", verbosity=0)


def drop_database() -> None:
    from django.db import connection

    if connection.vendor == "postgresql":
        connection.close()
        with connection._nodb_cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{connection.settings_dict["NAME"]}"')


@contextlib.contextmanager
def s3_bucket(bucket: str = "cloneshelf-bench"):
    """moto's S3 server (an emulator, from PyPI) on 127.0.0.1 with one bucket; while it lasts,
    archives go there, here (settings) and in every process started (environment)."""
    from django.conf import settings
    from django.test.signals import setting_changed

    from tests.support.gitservers import free_port, wait_for_port

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=30)
        endpoint = f"http://127.0.0.1:{port}"
        credentials = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}
        os.environ.update(
            credentials,
            AWS_DEFAULT_REGION="us-east-1",
            CLONES_S3_BUCKET=bucket,
            CLONES_S3_ENDPOINT_URL=endpoint,
        )
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
        settings.CLONES_S3_BUCKET = bucket
        settings.STORAGES = {
            **settings.STORAGES,
            "default": {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {"bucket_name": bucket, "endpoint_url": endpoint},
            },
        }
        # Django's own reset of default_storage, as override_settings would send it.
        setting_changed.send(None, setting="STORAGES", value=settings.STORAGES, enter=True)
        yield endpoint
    finally:
        server.terminate()
        server.wait()


def create_users(names: list[str], password: str | None = None) -> list:
    from django.contrib.auth import get_user_model

    return [get_user_model().objects.create_user(name, password=password) for name in names]


@contextlib.contextmanager
def private_engine():
    """A dockerd of this run's own (tests/support/engines.py) with the git image copied over from
    the test engine; while it lasts DOCKER_HOST points at it, here and in every process started.

    Not the shared test engine: a worker's recovery sweep removes every clone container that its
    own database does not know as running, so workers of two databases on one engine remove each
    other's containers.
    """
    from django.conf import settings

    from tests.support.engines import Engine

    engine = Engine(settings.CLONES_GIT_IMAGE)
    os.environ["DOCKER_HOST"] = engine.host
    try:
        yield engine
    finally:
        engine.remove()


class Process:
    """A command run from the project directory in a session (process group) of its own, its
    output appended to `log`."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None):
        self.log = log
        with log.open("ab") as output:
            self.popen = subprocess.Popen(
                command,
                cwd=PROJECT_DIR,
                env={**os.environ, **(env or {})},
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pid = self.popen.pid

    def stop(self, grace: float = 15) -> None:
        """SIGTERM to the main process (a worker stops its own workers in order, handing back
        what they run), then SIGKILL to whatever is left of the group."""
        self.popen.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=grace)
        self.kill()

    def kill(self) -> None:
        """SIGKILL the whole process group at once, as in a crash."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait()


def start_worker(log: Path, env: dict[str, str] | None = None) -> Process:
    """`manage.py worker`: one django-q2 cluster of CLONES_WORKERS processes."""
    return Process([sys.executable, "manage.py", "worker"], log, env)


def start_web(port: int, log: Path) -> Process:
    """The real web server (gunicorn, as the image runs it) on 127.0.0.1:`port`."""
    from tests.support.gitservers import wait_for_port
    from tests.support.helpers import web_server_command

    web = Process(web_server_command(port), log)
    wait_for_port(port, timeout=30)
    return web


CSRF_FIELD = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


class Visitor:
    """One user's browser: logged in over HTTP, holding the form's CSRF token."""

    def __init__(self, base: str, username: str, password: str, api_token: str = ""):
        self.base, self.username, self.api_token = base, username, api_token
        self.session = requests.Session()
        login = f"{base}/accounts/login/"
        token = csrf_token(self.session.get(login))
        credentials = {"username": username, "password": password, "csrfmiddlewaretoken": token}
        answer = self.session.post(login, data=credentials, allow_redirects=False)
        if answer.status_code != 302:
            sys.exit(f"could not log {username} in: HTTP {answer.status_code}")
        self.token = csrf_token(self.session.get(f"{base}/"))  # login rotates the token

    def another_tab(self) -> requests.Session:
        """A session with this user's cookies (and API token), for use in another thread."""
        tab = requests.Session()
        tab.cookies.update(self.session.cookies)
        if self.api_token:
            tab.headers["Authorization"] = f"Bearer {self.api_token}"
        return tab

    def submit(self, url: str) -> requests.Response:
        form = {"url": url, "ref": "", "csrfmiddlewaretoken": self.token}
        return self.session.post(f"{self.base}/", data=form, allow_redirects=False)


def csrf_token(page: requests.Response) -> str:
    found = CSRF_FIELD.search(page.text)
    if page.status_code != 200 or not found:
        sys.exit(f"no CSRF token on {page.url} (HTTP {page.status_code})")
    return found.group(1)


def milliseconds(samples: list[float]) -> str:
    """p50, p95, p99 and max of `samples` (seconds), in milliseconds."""
    if len(samples) < 2:
        return "too few samples"
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    figures = [cuts[49], cuts[94], cuts[98], max(samples)]
    return "  ".join(f"{seconds * 1000:7.1f}" for seconds in figures)


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


class PeakMemory:
    """Samples the resident memory of a process and its children until stopped."""

    def __init__(self, pid: int):
        self.root = psutil.Process(pid)
        self.peak_tree = self.peak_single = 0
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()

    def _sample(self) -> None:
        while self.running:
            try:
                processes = [self.root, *self.root.children(recursive=True)]
                sizes = [process.memory_info().rss for process in processes]
            except psutil.Error:
                continue
            self.peak_tree = max(self.peak_tree, sum(sizes))
            self.peak_single = max(self.peak_single, *sizes)
            time.sleep(0.02)

    def stop(self) -> None:
        self.running = False
        self.thread.join()


def mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"
