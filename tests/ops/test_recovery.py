"""The recovery sweep and the reaping a worker does when it starts: leftovers of dead workers
go, and nothing that belongs to a running job is touched."""

import os
import time
import uuid

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.utils import timezone

from clones.models import CloneJob, Status, WorkerReport
from clones.ops import recovery
from clones.pipeline import engine, paths
from clones.safety import tokens

from ..support.helpers import wait_until

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

LONG_AGO = time.time() - 3600


def make_leftover_container(job_id: str) -> str:
    with engine.connected() as client:
        labels = {engine.JOB_LABEL: job_id, engine.INSTALLATION_LABEL: engine.installation()}
        container = client.containers.create(
            settings.CLONES_GIT_IMAGE, ["--version"], labels=labels, network_mode="none"
        )
        return container.id


def make_leftovers(job_id: str) -> dict:
    """A container, a job directory, an archive and a token, all old, all of job_id."""
    directory = paths.job_dir(job_id)
    (directory / "repo").mkdir(parents=True)
    os.utime(directory, (LONG_AGO, LONG_AGO))
    archive = default_storage.save(f"{job_id}.tar", ContentFile(b"half an archive"))
    os.utime(default_storage.path(archive), (LONG_AGO, LONG_AGO))
    tokens.keep(job_id, "secret-token")
    os.utime(settings.CLONES_DATA_DIR / "tokens" / job_id, (LONG_AGO, LONG_AGO))
    container = make_leftover_container(job_id)
    return {"container": container, "directory": directory, "archive": archive}


def assert_gone(leftovers: dict, job_id: str) -> None:
    assert leftovers["container"] not in engine.job_containers()
    assert not leftovers["directory"].exists()
    assert not default_storage.exists(leftovers["archive"])
    assert tokens.read(job_id) == ""


def assert_kept(leftovers: dict, job_id: str) -> None:
    assert leftovers["container"] in engine.job_containers()
    assert leftovers["directory"].exists()
    assert tokens.read(job_id) == "secret-token"


def test_a_starting_worker_reaps_what_no_live_job_owns(start_worker, owner):
    gone = str(uuid.uuid4())  # a job whose row is gone
    orphans = make_leftovers(gone)
    running = CloneJob.objects.create(
        owner=owner, url="https://127.0.0.1/a.git", status=Status.RUNNING, started_at=timezone.now()
    )
    live = make_leftovers(str(running.id))

    with paths.job_dir_lock(running.id):  # as its worker holds it
        start_worker()
        wait_until(lambda: not paths.job_dir(gone).exists(), timeout=60, what="the reaping")

    assert_gone(orphans, gone)
    assert_kept(live, str(running.id))  # a running job's files are its worker's business
    engine.remove_job_containers(str(running.id))
    paths.remove_job_dir(running.id)


def test_a_job_directory_goes_as_soon_as_no_attempt_holds_it(db):
    held, left = str(uuid.uuid4()), str(uuid.uuid4())
    for job_id in (held, left):
        (paths.job_dir(job_id) / "repo").mkdir(parents=True)

    with paths.job_dir_lock(held):
        recovery.reap_leftovers()
        assert paths.job_dir(held).exists()
    assert not paths.job_dir(left).exists()  # young, but no attempt works there

    recovery.reap_leftovers()
    assert not paths.job_dir(held).exists()
    assert paths.job_ids_on_disk() == set()  # lock files go with their directories


def test_a_directory_set_aside_by_a_worker_that_died_is_reaped(db):
    job_id = uuid.uuid4()
    with paths.job_dir_lock(job_id):
        (paths.job_dir(job_id) / "repo").mkdir(parents=True)
        discarded = paths.discard_job_dir(job_id)
    assert not paths.job_dir(job_id).exists()
    # The worker died here, before remove_discarded().

    recovery.reap_leftovers()

    assert paths.job_ids_on_disk() == set()
    paths.remove_discarded(discarded)  # what the worker would have done: nothing left to do


def test_a_directory_that_vanishes_while_it_is_removed_is_fine(db, monkeypatch):
    job_id = str(uuid.uuid4())
    for index in range(50):
        (paths.job_dir(job_id) / "repo" / f"d{index}").mkdir(parents=True)
    remove_dir = os.rmdir

    def a_concurrent_remover_was_first(path, *args, **kwargs):
        remove_dir(path, *args, **kwargs)
        raise FileNotFoundError(path)

    monkeypatch.setattr(os, "rmdir", a_concurrent_remover_was_first)

    assert paths.remove_job_dir(job_id)

    assert not paths.job_dir(job_id).exists()


def test_the_sweep_reports_whether_the_engine_answers(db, monkeypatch):
    recovery.recover()
    assert WorkerReport.objects.get().engine_ok

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    recovery.recover()

    report = WorkerReport.objects.get()
    assert not report.engine_ok
    assert report.engine_error.startswith("The Docker engine is unreachable")
