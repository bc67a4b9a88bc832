"""PostgreSQL restarted under a real worker, between jobs and during a clone: every job ends done
within a minute of the database's return, and the outage costs none of its attempts.

The database is a cluster of the test's own (tests.support.services.PostgresServer), which the
worker uses in place of the suite's; this test process reads it with psycopg and submits through
`manage.py clone`, as its own Django connection is the suite's database."""

import os
import subprocess
import sys
import time
from types import SimpleNamespace

import psycopg
import pytest
from django.conf import settings

from .support import PROJECT_DIR
from .support.gitservers import GitHTTPServer
from .support.helpers import containers_of, wait_until
from .support.services import postgres  # noqa: F401 - the fixture

OUTAGE_SECONDS = 3
DONE_WITHIN_SECONDS = 60  # of the database's return


class OwnDatabase:
    """The worker's database on `server`: migrated, with one admin who owns the jobs."""

    def __init__(self, server):
        self.server = server
        self.env = {"CLONESHELF_TEST_DATABASE_URL": server.url}
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {settings.POSTGRES_DATABASE_NAME}")
        self.manage("migrate", "--verbosity=0")
        self.manage("ensureadmin")

    def manage(self, *args: str) -> str:
        """Run `manage.py` on this database to the end; what it printed."""
        process = self.start_manage(*args)
        output, _ = process.communicate()
        assert process.returncode == 0, f"manage.py {args[0]} failed"
        return output

    def start_manage(self, *args: str) -> subprocess.Popen:
        environment = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **self.env}
        return subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=PROJECT_DIR, env=environment, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def submit(self, url: str) -> str:
        """The new job's id."""
        return self.manage("clone", url).removeprefix("queued ").strip()

    def jobs(self, ids: list[str]) -> dict[str, tuple]:
        """id -> (status, attempts, error), read afresh."""
        url = self.server.url.rsplit("/", 1)[0] + f"/{settings.POSTGRES_DATABASE_NAME}"
        with psycopg.connect(url) as connection:
            rows = connection.execute(
                "SELECT id::text, status, attempts, error FROM clones_clonejob "
                "WHERE id::text = ANY(%s)",
                [ids],
            ).fetchall()
        return {row[0]: row[1:] for row in rows}

    def restart(self) -> float:
        """Stop the cluster, keep it down OUTAGE_SECONDS, start it again; when it was back."""
        self.server.stop()
        time.sleep(OUTAGE_SECONDS)
        self.server.start()
        return time.monotonic()

    def assert_all_done_once(self, ids: list[str], back_at: float) -> None:
        def all_over() -> bool:
            return all(row[0] not in ("queued", "running") for row in self.jobs(ids).values())

        wait_until(all_over, timeout=DONE_WITHIN_SECONDS, what="every job to end")
        assert time.monotonic() - back_at <= DONE_WITHIN_SECONDS
        assert self.jobs(ids) == {job: ("done", 1, "") for job in ids}


@pytest.fixture
def own_database(postgres):  # noqa: F811
    return OwnDatabase(postgres)


def test_jobs_submitted_after_a_database_restart_are_done_soon_after(
    own_database, start_worker, new_repo, git_daemon
):
    start_worker(env=own_database.env)
    first = own_database.submit(git_daemon.url(new_repo().name))
    own_database.assert_all_done_once([first], time.monotonic())
    # The worker now holds connections that the restart cuts.

    back_at = own_database.restart()
    time.sleep(2)
    later = [own_database.submit(git_daemon.url(new_repo().name)) for _ in range(4)]

    own_database.assert_all_done_once(later, back_at)


def test_a_clone_under_way_outlives_a_database_restart(
    own_database, start_worker, new_repo, served_root
):
    slow = GitHTTPServer(served_root, rate=50_000)
    try:
        repo = new_repo("big", extra_bytes=400_000)  # about 8 s to fetch
        start_worker(env=own_database.env)
        job = own_database.submit(slow.url(repo.name))
        wait_until(lambda: containers_of(SimpleNamespace(id=job)), what="a clone container")

        back_at = own_database.restart()

        own_database.assert_all_done_once([job], back_at)
    finally:
        slow.stop()


def test_a_scheduled_task_that_finds_the_database_down_runs_once_it_is_back(own_database):
    own_database.server.stop()
    expiry = own_database.start_manage(
        "shell", "--no-imports", "-c", "from clones import tasks; print(tasks.expire_archives())"
    )
    time.sleep(OUTAGE_SECONDS)
    own_database.server.start()

    output, _ = expiry.communicate(timeout=DONE_WITHIN_SECONDS)
    assert expiry.returncode == 0
    assert output.strip() == "0"  # it ran, and found nothing to expire
