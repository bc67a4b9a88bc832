"""The servers beside git that the tests need, each a real one on 127.0.0.1: Redis (Debian's
redis-server), an S3 emulator (moto's server, from PyPI), and PostgreSQL clusters of a test's own
(Debian's, as .ci/postgres.sh installs it). Fixtures here are imported by the test modules that
use them."""

import glob
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import boto3
import pytest
from django_q.conf import Conf

from .gitservers import free_port
from .helpers import wait_until


class RedisServer:
    """A redis-server of the test's own, keeping nothing on disk: a restart empties it."""

    def __init__(self, directory):
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self.answers, timeout=10, interval=0.05, what="redis to answer")

    def answers(self) -> bool:
        ping = subprocess.run(["redis-cli", "-p", str(self.port), "ping"], capture_output=True)
        return ping.stdout.strip() == b"PONG"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


@pytest.fixture
def redis(tmp_path, settings, monkeypatch):
    """A Redis broker for this test process as for the workers it starts (env below)."""
    server = RedisServer(tmp_path)
    settings.CLONES_REDIS_URL = server.url
    # django-q2 reads its configuration once, at import: switch its broker here too.
    monkeypatch.setattr(Conf, "ORM", None)
    monkeypatch.setattr(Conf, "REDIS", server.url)
    yield server
    server.stop()


def redis_env(server: RedisServer, **more: str) -> dict[str, str]:
    return {"CLONES_REDIS_URL": server.url, **more}


class PostgresServer:
    """A throwaway PostgreSQL cluster that a test may stop and restart at will (never the suite's
    shared one): trust authentication for the postgres user, nothing synced to disk."""

    def __init__(self, initialised: Path):
        """`initialised`: a cluster as initdb made it (initialised_cluster), copied here."""
        self.directory = _postgres_directory()
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        # -a: as root, the copy keeps the postgres user's ownership.
        subprocess.run(["cp", "-a", initialised, self.directory / "data"], check=True)
        self.start()

    def _pg_ctl(self, *args: str) -> None:
        _as_postgres("pg_ctl", "-D", "data", "-l", "log", "-w", *args, cwd=self.directory)

    def start(self) -> None:
        options = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._pg_ctl("-o", options, "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")  # as a restart does: every connection is cut

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.directory)


def _postgres_directory() -> Path:
    # Not under pytest's tmp_path: the postgres user, which initdb insists on, cannot enter it.
    directory = Path(tempfile.mkdtemp(prefix="cloneshelf-test-pg-"))
    shutil.chown(directory, "postgres", "postgres")
    return directory


def _as_postgres(program: str, *args: str, cwd: Path) -> None:
    newest = max(glob.glob("/usr/lib/postgresql/*/bin"), key=_version)
    command = ["runuser", "-u", "postgres", "--", f"{newest}/{program}", *args]
    subprocess.run(command, cwd=cwd, check=True, stdout=subprocess.DEVNULL)


def _version(bin_directory: str) -> int:
    return int(Path(bin_directory).parent.name)


@pytest.fixture(scope="session")
def initialised_cluster():
    """A cluster as initdb makes it, made once a session: initdb takes seconds, and each
    PostgresServer starts from a copy of it instead, as fresh."""
    directory = _postgres_directory()
    _as_postgres("initdb", "-D", "data", "-U", "postgres", "--auth=trust", cwd=directory)
    yield directory / "data"
    shutil.rmtree(directory)


@pytest.fixture
def postgres(initialised_cluster):
    server = PostgresServer(initialised_cluster)
    yield server
    server.remove()


BUCKET = "cloneshelf-archives"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_endpoint():
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            return urllib.request.urlopen(endpoint, timeout=1).status == 200
        except OSError:
            return False

    wait_until(answers, timeout=30, interval=0.1, what="the S3 emulator to answer")
    yield endpoint
    server.terminate()
    server.wait()


@pytest.fixture
def bucket(s3_endpoint, settings, monkeypatch):
    """A fresh bucket, and this test process and its workers storing archives in it."""
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=BUCKET)
    settings.CLONES_S3_BUCKET = BUCKET
    settings.CLONES_S3_ENDPOINT_URL = s3_endpoint
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "storages.backends.s3.S3Storage",
            "OPTIONS": {"bucket_name": BUCKET, "endpoint_url": s3_endpoint},
        },
    }
    yield client
    for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        client.delete_object(Bucket=BUCKET, Key=item["Key"])
    client.delete_bucket(Bucket=BUCKET)


def s3_worker_env(endpoint: str) -> dict[str, str]:
    return {"CLONES_S3_BUCKET": BUCKET, "CLONES_S3_ENDPOINT_URL": endpoint, **CREDENTIALS}
