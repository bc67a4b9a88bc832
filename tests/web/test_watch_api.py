"""Watches in the JSON API: one or a list made, listed, read with their snapshots, checked now,
deleted; snapshots pinned; the stored token never in any answer."""

import json
from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from clones import watches
from clones.models import CloneJob, Follow, History, RefusedSubmission, Watch
from clones.web import apitokens

from ..support.helpers import make_done_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

URL = "https://127.0.0.1/team/repo.git"  # an address: no DNS; tests/settings allows it
TOKEN = "ghp_watchsecret"


@pytest.fixture
def api(client, owner):
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {apitokens.make(owner, 'tests')[1]}"
    return client


def post_watches(api, body):
    return api.post("/api/watches", json.dumps(body), content_type="application/json")


def assert_no_token(response) -> None:
    assert TOKEN not in response.content.decode()
    assert "credential" not in response.content.decode()


def test_one_watch_is_made_and_returned_without_its_token(api, owner):
    response = post_watches(
        api,
        {"url": URL, "follow": "refs", "refs": ["main", "v1"], "interval_minutes": 15,
         "keep_last": 2, "token": TOKEN},
    )  # fmt: skip
    assert response.status_code == 201, response.content
    body = response.json()
    watch = Watch.objects.get(owner=owner)
    assert response["Location"] == f"/api/watches/{watch.id}"
    assert body["id"] == str(watch.id)
    assert (body["follow"], body["refs"], body["interval_minutes"]) == ("refs", ["main", "v1"], 15)
    assert (body["keep_last"], body["keep_daily"], body["has_token"]) == (2, 7, True)
    assert body["last_result"] is None and body["links"]["page"] == watch.get_absolute_url()
    assert_no_token(response)
    assert watch.credential and TOKEN not in watch.credential


def test_following_everything_makes_mirrors(api, owner):
    assert post_watches(api, {"url": URL, "follow": "everything"}).status_code == 201
    assert Watch.objects.get(owner=owner).history == History.MIRROR


def test_an_invalid_watch_says_which_field(api):
    response = post_watches(api, {"url": URL, "interval_minutes": 1})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid" and "at most every 5 minutes" in body["message"]
    assert "interval_minutes" in body["fields"]
    assert not Watch.objects.exists()


def test_a_list_is_made_or_refused_item_by_item(api, owner):
    response = post_watches(
        api,
        [
            {"url": "https://127.0.0.1/team/one.git", "token": TOKEN},
            {"url": "file:///etc/passwd"},
            {"url": "https://127.0.0.1/team/two.git", "cron": "* * * * *"},
            {"url": "https://127.0.0.1/team/three.git", "follow": Follow.EVERYTHING},
        ],
    )
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [result["url"] for result in results] == [
        "https://127.0.0.1/team/one.git",
        "file:///etc/passwd",
        "https://127.0.0.1/team/two.git",
        "https://127.0.0.1/team/three.git",
    ]
    assert [result["watch"] is not None for result in results] == [True, False, False, True]
    assert results[1]["error"]["code"] == "invalid" and "url" in results[1]["error"]["fields"]
    assert "cron" in results[2]["error"]["fields"]
    assert results[0]["watch"]["has_token"] is True
    assert Watch.objects.filter(owner=owner).count() == 2
    assert RefusedSubmission.objects.filter(owner=owner).count() == 1  # the URL, not the cron
    assert_no_token(response)


@override_settings(CLONES_MAX_WATCHES_PER_USER=1)
def test_the_watch_cap_is_a_limit(api):
    assert post_watches(api, {"url": URL}).status_code == 201
    response = post_watches(api, {"url": URL})
    assert response.status_code == 429
    assert response.json()["code"] == "limit_reached"
    listed = post_watches(api, [{"url": URL}]).json()["results"]
    assert listed[0]["error"]["code"] == "limit_reached"


def test_list_get_check_and_delete(api, owner, other_user):
    watch = watches.create(owner, URL, credential=TOKEN)
    theirs = watches.create(other_user, URL)
    job = make_done_job(owner, b"snapshot bytes")
    CloneJob.objects.filter(pk=job.pk).update(
        watch=watch, changes=[["a" * 40, "<b>bold</b> subject"]], changes_total=3
    )

    listing = api.get("/api/watches")
    assert listing.status_code == 200
    assert [item["id"] for item in listing.json()["items"]] == [str(watch.id)]
    assert_no_token(listing)

    detail = api.get(f"/api/watches/{watch.id}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["snapshot_count"] == 1
    (snapshot,) = body["snapshots"]
    assert snapshot["id"] == str(job.id) and snapshot["watch"] == str(watch.id)
    assert snapshot["changes"] == [{"sha": "a" * 40, "subject": "<b>bold</b> subject"}]
    assert snapshot["changes_total"] == 3 and snapshot["pinned"] is False
    assert_no_token(detail)
    assert api.get(f"/api/watches/{theirs.id}").status_code == 404

    Watch.objects.filter(pk=watch.pk).update(next_check_at=timezone.now() + timedelta(days=1))
    checked = api.post(f"/api/watches/{watch.id}/check")
    assert checked.status_code == 202
    assert Watch.objects.get(pk=watch.pk).next_check_at <= timezone.now()
    watches.set_active(watch, False)
    paused = api.post(f"/api/watches/{watch.id}/check")
    assert paused.status_code == 409 and paused.json()["code"] == "paused"

    assert api.delete(f"/api/watches/{theirs.id}").status_code == 404
    assert api.delete(f"/api/watches/{watch.id}").status_code == 204
    assert not Watch.objects.filter(pk=watch.pk).exists()
    assert Watch.objects.filter(pk=theirs.pk).exists()


def test_pin_and_unpin_a_snapshot(api, owner):
    watch = watches.create(owner, URL)
    snapshot = make_done_job(owner, b"snapshot")
    CloneJob.objects.filter(pk=snapshot.pk).update(watch=watch)
    one_off = make_done_job(owner, b"one-off")

    pinned = api.post(f"/api/clones/{snapshot.id}/pin")
    assert pinned.status_code == 200 and pinned.json()["pinned"] is True
    assert CloneJob.objects.get(pk=snapshot.pk).pinned
    unpinned = api.post(f"/api/clones/{snapshot.id}/unpin")
    assert unpinned.json()["pinned"] is False

    refused = api.post(f"/api/clones/{one_off.id}/pin")
    assert refused.status_code == 409 and refused.json()["code"] == "not_a_snapshot"


@override_settings(CLONES_MAX_WATCHES_PER_USER=2)
def test_a_list_longer_than_anyone_may_have_is_refused_whole(api):
    response = post_watches(api, [{"url": URL}] * 3)
    assert response.status_code == 400
    assert response.json()["message"] == "That is 3 watches; you may have 2 at most: send fewer."
    assert not Watch.objects.exists()
