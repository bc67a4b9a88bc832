"""Caps on what one person and everyone together may queue: each refusal says why, and no job
row is made."""

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from clones.models import CloneJob, Status

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

URL = "https://127.0.0.1/team/repo.git"


def post(client) -> tuple[int, str]:
    response = client.post(reverse("clones:new"), {"url": URL})
    return response.status_code, response.content.decode()


def make_jobs(user, count: int, status=Status.QUEUED, age=timedelta(0)) -> None:
    for _ in range(count):
        CloneJob.objects.create(owner=user, url=URL, status=status, created_at=timezone.now() - age)


def test_a_user_at_the_active_cap_is_refused(settings, owner_client, owner, other_user, client):
    settings.CLONES_MAX_ACTIVE_PER_USER = 2
    make_jobs(owner, 1)
    make_jobs(owner, 1, status=Status.RUNNING)

    status, page = post(owner_client)

    assert status == 429
    assert "You already have 2 clones queued or running, the most at once" in page
    assert CloneJob.objects.count() == 2
    client.force_login(other_user)  # the cap is per person
    assert client.post(reverse("clones:new"), {"url": URL}).status_code == 302


def test_a_user_over_the_hourly_rate_is_refused(settings, owner_client, owner):
    settings.CLONES_MAX_SUBMISSIONS_PER_HOUR = 3
    make_jobs(owner, 2, status=Status.DONE, age=timedelta(minutes=50))
    make_jobs(owner, 5, status=Status.DONE, age=timedelta(minutes=61))  # outside the hour
    assert post(owner_client)[0] == 302

    status, page = post(owner_client)

    assert status == 429
    assert "You have asked for 3 clones in the last hour, the most allowed" in page
    assert "try again in 10 minute(s)" in page
    assert CloneJob.objects.count() == 8


def test_a_full_queue_refuses_everyone(settings, owner_client, other_user):
    settings.CLONES_MAX_QUEUED = 3
    make_jobs(other_user, 3)

    status, page = post(owner_client)

    assert status == 429
    assert "The service is busy: 3 clones waiting in the queue." in page
    assert CloneJob.objects.count() == 3


def test_the_cli_says_why_it_was_refused(settings, owner):
    settings.CLONES_MAX_ACTIVE_PER_USER = 1
    make_jobs(owner, 1)
    with pytest.raises(CommandError, match="You already have 1 clone queued or running"):
        call_command("clone", URL, user=owner.username)
    assert CloneJob.objects.count() == 1
