"""A running job's heartbeat: refreshed from a thread of its own while the attempt runs, and
only for that attempt."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from clones import jobs
from clones.models import CloneJob
from clones.ops.heartbeat import beating

pytestmark = [
    pytest.mark.database,
    pytest.mark.django_db(transaction=True),
]  # the beat writes from another thread


@pytest.fixture
def running(owner, settings):
    settings.CLONES_HEARTBEAT_SECONDS = 0.05
    queued = CloneJob.objects.create(owner=owner, url="https://example.com/a.git")
    return jobs.claim(queued.id)


def heartbeat_of(job: CloneJob):
    return CloneJob.objects.values_list("heartbeat_at", flat=True).get(pk=job.pk)


def test_it_beats_while_the_attempt_runs_and_stops_after(running):
    claimed_at = heartbeat_of(running)

    with beating(running):
        time.sleep(0.3)
        during = heartbeat_of(running)
    after = heartbeat_of(running)
    time.sleep(0.2)

    assert during > claimed_at
    assert heartbeat_of(running) == after  # no beat once the attempt is over
    assert not any(thread.name.startswith("heartbeat") for thread in threading.enumerate())


def test_a_job_taken_from_under_the_attempt_does_not_look_alive(running):
    long_ago = timezone.now() - timedelta(hours=1)
    CloneJob.objects.filter(pk=running.pk).update(
        started_at=timezone.now(),
        heartbeat_at=long_ago,  # another attempt's, now silent
    )

    with beating(running):
        time.sleep(0.3)

    assert heartbeat_of(running) == long_ago


def test_it_beats_again_after_the_database_dropped_its_connection(running):
    if connection.vendor != "postgresql":
        pytest.skip("drops a connection as a restart would: PostgreSQL's pg_terminate_backend")

    with beating(running):
        time.sleep(0.2)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        dropped_at = timezone.now()
        time.sleep(0.5)
        beat_since = heartbeat_of(running)

    assert beat_since > dropped_at
