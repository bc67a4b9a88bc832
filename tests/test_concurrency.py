"""Many at once, each on its own database connection: the caps and the guarded transitions hold
(on SQLite, which serializes writers, and on PostgreSQL, where select_for_update and conditional
UPDATEs do the work)."""

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from clones import jobs
from clones.models import CloneJob, Status
from clones.pipeline import snapshots
from clones.pipeline.refs import Resolved

pytestmark = [pytest.mark.database, pytest.mark.django_db(transaction=True)]

THREADS = 8
MAIN = Resolved("c" * 40, "refs/heads/main")


def all_at_once(action, count: int = THREADS) -> list:
    """`action(i)` in `count` threads released together; what each returned or raised."""
    start = threading.Barrier(count)

    def run(index: int):
        start.wait()
        try:
            return action(index)
        except Exception as exc:
            return exc
        finally:
            connection.close()  # each thread's own connection

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_submissions_at_once_never_pass_the_per_user_cap(owner, settings):
    settings.CLONES_MAX_ACTIVE_PER_USER = 3

    outcomes = all_at_once(lambda i: jobs.submit(owner, f"https://example.com/r{i}.git"))

    made = [outcome for outcome in outcomes if isinstance(outcome, CloneJob)]
    refused = [outcome for outcome in outcomes if isinstance(outcome, jobs.Refused)]
    assert len(made) == 3 and len(refused) == THREADS - 3, outcomes
    assert CloneJob.objects.filter(owner=owner).count() == 3


def test_a_job_claimed_by_many_workers_at_once_runs_once(owner):
    job = CloneJob.objects.create(owner=owner, url="https://example.com/a.git")

    claims = all_at_once(lambda i: jobs.claim(job.id))

    assert len([claim for claim in claims if claim is not None]) == 1, claims
    job.refresh_from_db()
    assert job.status == Status.RUNNING and job.attempts == 1


def test_identical_jobs_at_once_elect_one_builder(owner):
    running = [
        jobs.claim(CloneJob.objects.create(owner=owner, url="https://example.com/a.git").id)
        for _ in range(THREADS)
    ]

    roles = all_at_once(lambda i: snapshots.take(running[i], MAIN)[1])

    assert sorted(role.name for role in roles) == ["BUILD"] + ["FOLLOW"] * (THREADS - 1), roles
