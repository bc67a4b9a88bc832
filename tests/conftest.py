import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from clones.models import Snapshot, SnapshotState
from clones.safety import egress, urlpolicy

from .support import PROJECT_DIR
from .support.gitservers import GitDaemon, GitHTTPServer
from .support.repos import make_repo
from .support.services import (  # noqa: F401 - fixtures for every module
    bucket,
    initialised_cluster,
    redis,
    s3_endpoint,
)
from .support.sshserver import SSH_HOST, SSHServer


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(settings.TEST_ROOT, ignore_errors=True)


@pytest.fixture(scope="session")
def django_db_modify_db_settings_xdist_suffix():
    """Unlike pytest-django's, no suffix on the database's name for each pytest-xdist worker:
    each has a database of its own already (tests.settings), and the worker processes that
    tests start, which read tests.settings without pytest-django, must find it by that name."""


@pytest.fixture(scope="session")
def served_root() -> Path:
    root = settings.TEST_ROOT / "served"
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture(scope="session")
def git_daemon(served_root):
    daemon = GitDaemon(served_root)
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def git_http(served_root):
    server = GitHTTPServer(served_root)
    yield server
    server.stop()


@pytest.fixture
def ssh_allowed(settings, dns):
    """SSH URLs accepted, on any port, and SSH_HOST (what they name) resolving to 127.0.0.1."""
    settings.CLONES_ALLOWED_SCHEMES = [*settings.CLONES_ALLOWED_SCHEMES, "ssh"]
    settings.CLONES_ALLOWED_PORTS = {**settings.CLONES_ALLOWED_PORTS, "ssh": None}
    dns[SSH_HOST] = ["127.0.0.1"]
    return settings


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """Debian's sshd with git-shell on 127.0.0.1, for SSH remotes (tests/support/sshserver.py)."""
    server = SSHServer(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


_repo_numbers = itertools.count()


@pytest.fixture
def new_repo(served_root):
    """Build a fresh served repository: new_repo("flask") -> ServedRepo."""

    def build(name: str = "project", **options):
        return make_repo(served_root, f"{name}-{next(_repo_numbers)}", **options)

    return build


@pytest.fixture
def loopback_only(monkeypatch):
    """Fail the test if an egress proxy ever dials outside 127.0.0.0/8: a refusal must come
    first."""
    dial = egress._connect

    def guarded(addresses, port):
        assert all(address.is_loopback for address in addresses), addresses
        return dial(addresses, port)

    monkeypatch.setattr(egress, "_connect", guarded)


@pytest.fixture
def owner(django_user_model):
    return django_user_model.objects.create_user("owner", password="pw-owner-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("other", password="pw-other-123")


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_superuser("staff", password="pw-staff-123")


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def start_worker(transactional_db, tmp_path):
    """Start a real `manage.py worker` process: start_worker(env={...}, prefix=[...]).

    Workers share the test database file and data directory through tests.settings; `env`
    overrides settings for this worker only, `prefix` wraps the command (e.g. in `unshare`).
    """
    processes = []

    def start(env: dict | None = None, prefix: list[str] | None = None) -> subprocess.Popen:
        log = open(tmp_path / f"worker-{len(processes)}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [*(prefix or []), sys.executable, "manage.py", "worker"],
            cwd=PROJECT_DIR,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **(env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so all its workers stop with it
        )
        processes.append((process, log))
        return process

    yield start
    for process, log in processes:
        stop_process_group(process)
        log.close()
        # pytest shows this only when the test failed.
        print(f"--- {log.name} ---\n{Path(log.name).read_text(errors='replace')[-5000:]}")


def stop_process_group(process: subprocess.Popen, grace: float = 15) -> None:
    # SIGTERM to the cluster's main process only: it stops its own workers in order.
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # whatever is left of the group
    process.wait()


@pytest.fixture
def dns(monkeypatch):
    """The stubbed resolver's answers, name -> addresses; change them between steps."""
    answers: dict[str, list[str]] = {}

    def resolve(host: str, port: int):
        return [ipaddress.ip_address(address) for address in answers.get(host, [])]

    monkeypatch.setattr(urlpolicy, "resolve", resolve)
    return answers


@pytest.fixture
def production_policy(settings):
    """The URL policy as deployed: no private networks, no private hosts allowed."""
    settings.CLONES_ALLOW_PRIVATE_NETWORKS = False
    settings.CLONES_ALLOWED_PRIVATE_HOSTS = []
    return settings


@pytest.fixture
def snapshot(db):
    """A ready snapshot of widget's commit cc…c, its file (never read) of 10 KiB."""
    return Snapshot.objects.create(
        key="k" * 64,
        url="https://example.com/team/widget",
        commit="c" * 40,
        history="full",
        archive_format="tar",
        state=SnapshotState.READY,
        archive="widget.tar",
        archive_size=10240,
        archive_sha256="f" * 64,
        expires_at=timezone.now() + timedelta(days=1),
    )
