"""The clone task is safe to deliver twice: a done job is not redone, no second archive; and a
job whose failure cannot be recorded in full still ends with its reason. Every task django-q2
runs is in clones.tasks, named once in clones.queue, and stored names of before are renamed."""

import inspect
import logging
import os
import pydoc

import pytest
from django.conf import settings
from django.utils import timezone
from django_q.models import Schedule
from django_q.tasks import async_task, fetch

from clones import queue, tasks
from clones.models import CloneJob, Status
from clones.pipeline import gitwords

from .support.helpers import submit, wait_for_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


def test_a_task_delivered_again_leaves_a_done_job_alone(
    owner_client, start_worker, new_repo, git_daemon
):

    repo = new_repo()
    start_worker()
    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))
    assert job.status == Status.DONE, job.error
    before = (job.finished_at, job.archive.name, job.archive_sha256, job.attempts)

    task_id = async_task(queue.RUN_CLONE_JOB, str(job.id))
    assert fetch(task_id, wait=30_000).success

    job.refresh_from_db()
    assert (job.finished_at, job.archive.name, job.archive_sha256, job.attempts) == before
    mine = [
        name for name in os.listdir(settings.MEDIA_ROOT) if name.startswith(str(job.snapshot_id))
    ]
    assert mine == [job.archive.name]  # no second archive


@pytest.mark.django_db(transaction=True)
def test_a_failure_while_recording_a_failure_still_ends_the_job_with_its_reason(
    owner, monkeypatch, caplog
):
    job = CloneJob.objects.create(
        owner=owner, url="https://git.example/team/app.git", status=Status.RUNNING,
        started_at=timezone.now(), attempts=1,
    )  # fmt: skip
    reason = "The server closed the connection in the middle of sending the repository."

    def clone_fails(job):
        # A lone surrogate: text no database driver can encode, so recording it fails.
        raise gitwords.CloneFailed(reason, output="fatal: early EOF \udc80")

    monkeypatch.setattr(tasks, "_deliver", clone_fails)

    with caplog.at_level(logging.ERROR, logger="clones.tasks"):
        tasks._run(job)

    job.refresh_from_db()
    assert (job.status, job.error, job.git_output) == (Status.FAILED, reason, "")
    assert f"job {job.id}: could not record its failure with git's output" in caplog.text


def test_every_task_name_leads_to_a_function_of_tasks_and_every_task_has_one():
    names = {
        value
        for constant, value in vars(queue).items()
        if constant.isupper() and not constant.endswith("_SCHEDULE") and isinstance(value, str)
    }
    found = {name: pydoc.locate(name) for name in names}  # as django-q2 finds them
    assert all(inspect.isfunction(task) for task in found.values()), found
    assert {task.__module__ for task in found.values()} == {"clones.tasks"}
    public = {
        name
        for name, function in inspect.getmembers(tasks, inspect.isfunction)
        if function.__module__ == "clones.tasks" and not name.startswith("_")
    }
    # ensure_schedules is migrate's signal receiver, not a task
    assert {task.__name__ for task in found.values()} == public - {"ensure_schedules"}


@pytest.mark.django_db
def test_ensure_schedules_renames_the_tasks_stored_under_a_former_name():
    Schedule.objects.update_or_create(
        name=queue.RECOVERY_SCHEDULE,
        defaults={"func": "clones.recovery.recover", "schedule_type": Schedule.MINUTES},
    )
    retry = Schedule.objects.create(
        name="cloneshelf: webhook 1 attempt 2", func="clones.webhooks.deliver", args="('1', 2)",
        schedule_type=Schedule.ONCE,
    )  # fmt: skip
    email = Schedule.objects.create(
        name="an email", func="clones.notifications.send_email", schedule_type=Schedule.ONCE
    )

    tasks.ensure_schedules()

    recovery = Schedule.objects.get(name=queue.RECOVERY_SCHEDULE)
    assert recovery.func == queue.RECOVER
    retry.refresh_from_db()
    assert (retry.func, retry.args) == (queue.DELIVER_WEBHOOK, "('1', 2)")
    email.refresh_from_db()
    assert email.func == queue.SEND_EMAIL
    assert not Schedule.objects.filter(func__in=list(queue.FORMER_NAMES)).exists()
