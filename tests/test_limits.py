"""Caps on what one person and everyone together may queue: each refusal says why, and no job
row is made."""

import json
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from clones.models import CloneJob, RefusedSubmission, Status
from clones.safety import urlpolicy
from clones.web import apitokens

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


# --- Refused URLs: the form is no free DNS oracle ------------------------------------------------


@pytest.fixture
def lookups(dns, monkeypatch, production_policy) -> list[str]:
    """The host names the URL policy asks DNS about, in order (answers from `dns`)."""
    asked: list[str] = []
    stub = urlpolicy.resolve

    def counted(host: str, port: int):
        asked.append(host)
        return stub(host, port)

    monkeypatch.setattr(urlpolicy, "resolve", counted)
    return asked


def probe(client, name: str, **more):
    return client.post(reverse("clones:new"), {"url": f"https://{name}/x.git", **more})


def test_past_the_refused_limit_the_form_answers_429_without_resolving(
    settings, owner_client, owner, lookups, dns
):
    settings.CLONES_MAX_REFUSED_PER_HOUR = 3
    dns["db.corp.example"] = ["10.0.0.7"]
    for name in ["db.corp.example", "vault.corp.example", "ci.corp.example"]:
        response = probe(owner_client, name)
        assert response.status_code == 200 and response.context["form"].errors["url"]
    assert lookups == ["db.corp.example", "vault.corp.example", "ci.corp.example"]

    response = probe(owner_client, "wiki.corp.example")

    assert response.status_code == 429
    assert 3590 < int(response["Retry-After"]) <= 3600
    page = response.content.decode()
    assert "3 of your submissions were refused in the last hour for their URL" in page
    assert "Try again in 60 minute(s)." in page
    assert 'value="https://wiki.corp.example/x.git"' in page  # what was sent, to fix later
    assert "url" not in response.context["form"].errors  # it was not checked
    assert lookups == ["db.corp.example", "vault.corp.example", "ci.corp.example"]
    assert not CloneJob.objects.exists()


def test_the_api_shares_the_count_and_answers_429_without_resolving(
    settings, client, owner, lookups
):
    settings.CLONES_MAX_REFUSED_PER_HOUR = 2
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {apitokens.make(owner)[1]}"

    def api_probe(name: str):
        body = json.dumps({"url": f"https://{name}/x.git"})
        return client.post("/api/clones", body, content_type="application/json")

    assert api_probe("a.corp.example").status_code == 400
    client.force_login(owner)
    assert probe(client, "b.corp.example").status_code == 200

    response = api_probe("c.corp.example")

    assert response.status_code == 429 and response.json()["code"] == "limit_reached"
    assert "2 of your submissions were refused" in response.json()["message"]
    assert lookups == ["a.corp.example", "b.corp.example"]


def test_refused_webhook_urls_count_and_other_mistakes_do_not(settings, owner_client, lookups, dns):
    settings.CLONES_MAX_REFUSED_PER_HOUR = 2
    dns["github.com"] = ["140.82.121.3"]
    good = "github.com/pallets"
    assert probe(owner_client, good, depth="x").status_code == 200  # a typo, not a probe
    assert probe(owner_client, good, history="files", depth="3").status_code == 200
    assert probe(owner_client, good, webhook_url="https://hooks.corp.example/").status_code == 200
    assert probe(owner_client, "gone.example").status_code == 200
    assert RefusedSubmission.objects.count() == 2

    assert probe(owner_client, good).status_code == 429


def test_the_refused_limit_is_per_person_and_an_hour_long(
    settings, owner_client, owner, other_user, client, lookups, dns
):
    settings.CLONES_MAX_REFUSED_PER_HOUR = 1
    dns["github.com"] = ["140.82.121.3"]
    assert probe(owner_client, "gone.example").status_code == 200
    assert probe(owner_client, "github.com/pallets").status_code == 429
    client.force_login(other_user)
    assert probe(client, "github.com/pallets").status_code == 302

    an_hour_ago = timezone.now() - timedelta(hours=1, seconds=1)
    RefusedSubmission.objects.filter(owner=owner).update(refused_at=an_hour_ago)

    assert probe(owner_client, "github.com/pallets").status_code == 302
