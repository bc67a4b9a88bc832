"""Expiry runs as a django-q2 schedule, made by migrate, and is run here by a real worker."""

import time
from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from clones import queue
from clones.models import CloneJob, Status
from clones.tasks import expire_archives

from .support.helpers import run_schedule_now, submit, wait_for_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


def test_migrate_creates_the_expiry_schedule_once(db):
    call_command("migrate", verbosity=0)
    call_command("migrate", verbosity=0)
    schedule = Schedule.objects.get(name=queue.EXPIRY_SCHEDULE)
    assert schedule.func == queue.EXPIRE_ARCHIVES
    assert schedule.repeats == -1


def test_a_past_due_archive_is_removed_and_clone_again_works(
    owner_client, start_worker, new_repo, git_daemon
):

    repo = new_repo()
    start_worker()
    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))
    assert job.status == Status.DONE, job.error
    archive_name = job.archive.name
    assert default_storage.exists(archive_name)
    CloneJob.objects.filter(pk=job.pk).update(expires_at=timezone.now() - timedelta(minutes=1))

    run_schedule_now(queue.EXPIRY_SCHEDULE)
    deadline = time.monotonic() + 60
    # The task marks jobs expired first, then deletes the archives no job needs any more.
    while time.monotonic() < deadline and (
        job.status != Status.EXPIRED or default_storage.exists(archive_name)
    ):
        time.sleep(0.2)
        job.refresh_from_db()

    assert job.status == Status.EXPIRED
    assert job.expired_at is not None and not job.archive
    assert not default_storage.exists(archive_name)
    assert owner_client.get(reverse("clones:download", args=[job.id])).status_code == 404

    response = owner_client.post(reverse("clones:again", args=[job.id]))
    again = CloneJob.objects.latest("created_at")
    assert response["Location"] == again.get_absolute_url()
    again = wait_for_job(again)
    assert again.status == Status.DONE and again.commit == repo.head
    assert (again.url, again.ref) == (job.url, job.ref)
    assert default_storage.exists(again.archive.name)


def test_unexpired_archives_are_kept(owner, db):
    name = default_storage.save("keep.tar", ContentFile(b"x"))
    CloneJob.objects.create(
        owner=owner,
        url="https://example.com/keep.git",
        status=Status.DONE,
        archive=name,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    assert expire_archives() == 0
    assert default_storage.exists(name)
