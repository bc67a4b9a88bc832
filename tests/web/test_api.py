"""The JSON API (/api/) with real tokens: authentication, submitting, the history, cancelling,
downloading, its errors; and the ways to get a token (profile page, `manage.py apitoken`)."""

import hashlib
import io
import json
import re
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from clones.models import ApiToken, CloneJob, Profile, Status
from clones.web import apitokens

from ..support.helpers import make_done_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)

URL = "https://127.0.0.1/team/repo.git"  # an address: no DNS; tests/settings allows it


@pytest.fixture
def token(owner) -> str:
    return apitokens.make(owner, "tests")[1]


@pytest.fixture
def api(client, token):
    """The test client, sending the owner's token with every request."""
    client.defaults["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    return client


def post_clone(api, **body):
    return api.post("/api/clones", json.dumps(body), content_type="application/json")


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json; charset=utf-8"
    body = response.json()
    assert body["code"] == code
    assert body["message"]
    return body


# --- Tokens --------------------------------------------------------------------------------------


def test_a_token_is_kept_only_as_its_sha256_and_prefix(owner):
    row, token = apitokens.make(owner, "ci")

    assert re.fullmatch(r"cs_[A-Za-z0-9_-]{43}", token)
    assert row.digest == hashlib.sha256(token.encode()).hexdigest()
    assert row.prefix == token[:10]
    stored = ApiToken.objects.get()
    assert token not in {stored.digest, stored.prefix, stored.name}


def test_a_token_authenticates_its_owner_and_notes_its_use_once_a_minute(api, owner, token):
    assert api.get("/api/clones").status_code == 200
    used = ApiToken.objects.get().last_used_at
    assert used is not None

    api.get("/api/clones")
    assert ApiToken.objects.get().last_used_at == used  # no write for every request

    ApiToken.objects.update(last_used_at=used - timedelta(minutes=2))
    api.get("/api/clones")
    assert ApiToken.objects.get().last_used_at > used


@pytest.mark.parametrize("header", [None, "Bearer cs_not-a-real-token", "Basic b3duZXI6cHc="])
def test_no_token_or_a_wrong_one_gets_401_json(client, token, header):
    if header:
        client.defaults["HTTP_AUTHORIZATION"] = header

    body = assert_error(client.get("/api/clones"), 401, "unauthorized")

    assert "token" in body["message"]


def test_a_revoked_token_is_refused(api, owner):
    assert apitokens.revoke(owner, ApiToken.objects.get().pk)

    response = api.get("/api/clones")

    assert_error(response, 401, "unauthorized")
    assert response["WWW-Authenticate"] == 'Bearer error="invalid_token"'


def test_the_token_of_a_deactivated_user_is_refused(api, owner):
    owner.is_active = False
    owner.save()
    assert_error(api.get("/api/clones"), 401, "unauthorized")


def test_a_session_is_no_api_login(owner_client):
    assert_error(owner_client.get("/api/clones"), 401, "unauthorized")


# --- Submitting ----------------------------------------------------------------------------------


def test_a_submission_is_queued_and_answered_with_202_location_and_the_job(api, owner):
    response = post_clone(
        api, url=URL, ref="v1.0", history="shallow", depth=3, archive_format="tar.gz", token="s3"
    )

    assert response.status_code == 202, response.content
    job = CloneJob.objects.get()
    assert response["Location"] == f"/api/clones/{job.id}"
    body = response.json()
    assert body["id"] == str(job.id)
    assert (job.owner, job.url, job.ref, job.history, job.depth, job.archive_format) == (
        owner,
        URL,
        "v1.0",
        "shallow",
        3,
        "tar.gz",
    )
    assert job.used_token and job.status == Status.QUEUED
    assert body["status"] == "queued" and body["depth"] == 3
    assert body["links"] == {
        "self": f"/api/clones/{job.id}",
        "download": None,
        "provenance": None,
        "page": job.get_absolute_url(),
    }
    assert "s3" not in response.content.decode()  # the access token is never answered


def test_only_the_url_is_needed(api):
    response = post_clone(api, url=URL)

    assert response.status_code == 202
    assert response.json()["history"] == "full"
    assert response.json()["archive_format"] == "tar"


def test_paths_are_a_list_checked_as_the_form_checks_them(api):
    response = post_clone(api, url=URL, history="files", paths=["./docs/", "src/main.py"])

    assert response.status_code == 202, response.content
    assert response.json()["paths"] == ["docs", "src/main.py"]
    assert CloneJob.objects.get().paths == ["docs", "src/main.py"]
    body = assert_error(post_clone(api, url=URL, paths=["../up"]), 400, "invalid")
    assert body["fields"] == {"paths": ["Line 1: '../up' goes up out of the repository ('..')."]}


def test_submodules_are_an_option_checked_as_the_form_checks_it(api, settings):
    response = post_clone(api, url=URL, submodules=True)

    assert response.status_code == 202, response.content
    assert response.json()["submodules"] is True
    assert CloneJob.objects.get().submodules is True
    body = assert_error(post_clone(api, url=URL, history="mirror", submodules=True), 400, "invalid")
    assert body["fields"] == {
        "submodules": [
            "A mirror holds the repository's own history only: submodules apply to files only, "
            "full and shallow archives."
        ]
    }
    body = assert_error(post_clone(api, url=URL, paths=["docs"], submodules=True), 400, "invalid")
    assert body["fields"] == {"submodules": ["Paths and submodules cannot be combined yet."]}
    settings.CLONES_EGRESS_BIND = ""
    body = assert_error(post_clone(api, url=URL, submodules=True), 400, "invalid")
    assert body["fields"] == {
        "submodules": ["This service cannot fetch submodules: its egress proxy is turned off."]
    }


def test_an_invalid_url_gets_the_forms_own_message(api):
    body = assert_error(post_clone(api, url="notaurl"), 400, "invalid")

    message = "Enter a full URL, such as https://github.com/owner/repo.git."
    assert body["message"] == message
    assert body["fields"] == {"url": [message]}
    assert not CloneJob.objects.exists()


def test_the_forms_cross_field_checks_apply(api):
    body = assert_error(post_clone(api, url=URL, depth=5), 400, "invalid")

    assert body["fields"] == {"depth": ["A number of commits only applies to a shallow clone."]}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "url"),
        ({"url": URL, "history": "everything"}, "history"),
        ({"url": URL, "depth": 0}, "depth"),
        ({"url": URL, "archive_format": "rar"}, "archive_format"),
        ({"url": URL, "paths": "docs"}, "paths"),  # a list, not a string
        ([URL], "url"),
        (None, "__all__"),  # no body at all
    ],
)
def test_the_schemas_own_checks_answer_in_the_same_format(api, body, field):
    sent = "" if body is None else json.dumps(body)
    response = api.post("/api/clones", sent, content_type="application/json")

    error = assert_error(response, 400, "invalid")
    assert list(error["fields"]) == [field]
    assert error["fields"][field][0] in error["message"]
    assert error["message"].startswith("" if field == "__all__" else f"{field}: ")


def test_a_body_that_is_not_json_is_refused_in_words(api):
    response = api.post("/api/clones", "url=x", content_type="application/json")

    assert assert_error(response, 400, "unreadable")["message"] == (
        "The request body is not valid JSON."
    )


def test_a_body_over_the_upload_limit_is_a_json_413_not_a_crash(api, settings, caplog):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    api.raise_request_exception = False

    response = post_clone(api, url=URL, ref="x" * 2048)

    body = assert_error(response, 413, "too_large")
    assert body["message"] == "The request body is larger than 1024 bytes, the most accepted."
    assert "Traceback" not in caplog.text
    assert CloneJob.objects.count() == 0


@pytest.mark.parametrize(
    ("cap", "existing", "retry_after"),
    [
        ("CLONES_MAX_ACTIVE_PER_USER", Status.QUEUED, 60),
        ("CLONES_MAX_QUEUED", Status.QUEUED, 180),
    ],
)
def test_a_cap_gets_429_with_retry_after(api, owner, settings, cap, existing, retry_after):
    setattr(settings, cap, 1)
    CloneJob.objects.create(owner=owner, url=URL, status=existing)

    response = post_clone(api, url=URL)

    body = assert_error(response, 429, "limit_reached")
    assert response["Retry-After"] == str(retry_after)
    assert "queue" in body["message"]
    assert CloneJob.objects.count() == 1


def test_the_hourly_cap_says_when_a_slot_frees(api, owner, settings):
    settings.CLONES_MAX_SUBMISSIONS_PER_HOUR = 1
    CloneJob.objects.create(
        owner=owner, url=URL, status=Status.DONE, created_at=timezone.now() - timedelta(minutes=50)
    )

    response = post_clone(api, url=URL)

    assert_error(response, 429, "limit_reached")
    assert 9 * 60 < int(response["Retry-After"]) <= 10 * 60


def test_the_web_forms_429_says_when_to_retry_too(owner_client, owner, settings):
    settings.CLONES_MAX_ACTIVE_PER_USER = 1
    CloneJob.objects.create(owner=owner, url=URL)

    response = owner_client.post(reverse("clones:new"), {"url": URL})

    assert response.status_code == 429
    assert response["Retry-After"] == "60"


def test_no_csrf_token_is_needed_with_a_bearer_token(token):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True, HTTP_AUTHORIZATION=f"Bearer {token}")
    response = strict.post("/api/clones", json.dumps({"url": URL}), "application/json")
    assert response.status_code == 202


# --- Reading -------------------------------------------------------------------------------------


def test_a_job_reads_as_json(api, owner):
    job = make_done_job(owner, b"tar bytes")

    body = api.get(f"/api/clones/{job.id}").json()

    assert body["status"] == "done"
    assert body["commit"] == job.commit
    assert body["archive_size"] == 9
    assert body["archive_sha256"] == job.archive_sha256
    assert body["links"]["download"] == f"/api/clones/{job.id}/download"
    fields = "id url ref commit history depth paths submodules lfs archive_format status phase "
    fields += "progress error "
    fields += "created_at started_at finished_at expires_at archive_size archive_sha256 "
    assert set(body) == {*fields.split(), "webhook_url", "watch", "pinned", "links"}


@pytest.mark.parametrize("what", ["", "/cancel", "/download"])
def test_another_users_job_is_404(api, other_user, what):
    job = make_done_job(other_user, b"theirs")
    method = api.post if what == "/cancel" else api.get

    assert_error(method(f"/api/clones/{job.id}{what}"), 404, "not_found")

    job.refresh_from_db()
    assert job.status == Status.DONE


def test_an_unknown_job_or_path_is_404_json(api):
    assert_error(api.get("/api/clones/00000000-0000-0000-0000-000000000000"), 404, "not_found")
    assert_error(api.get("/api/clones/not-a-uuid"), 404, "not_found")
    assert_error(api.get("/api/nothing/here"), 404, "not_found")
    assert_error(api.post("/api/nothing/here"), 404, "not_found")  # no CSRF page either


def test_a_wrong_method_is_405_json(api):
    response = api.delete("/api/clones")

    assert_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "GET, POST"


def test_the_history_is_own_newest_first_and_paginated(api, owner, other_user):
    mine = [
        CloneJob.objects.create(
            owner=owner,
            url=f"https://example.com/r{n}.git",
            created_at=timezone.now() - timedelta(minutes=n),
        )
        for n in range(5)
    ]
    CloneJob.objects.create(owner=other_user, url="https://example.com/secret.git")

    first = api.get("/api/clones", {"limit": 2}).json()
    second = api.get(first["next"]).json()
    last = api.get(second["next"]).json()

    assert first["count"] == 5
    assert [item["id"] for item in first["items"]] == [str(job.id) for job in mine[:2]]
    assert [item["id"] for item in second["items"]] == [str(job.id) for job in mine[2:4]]
    assert [item["id"] for item in last["items"]] == [str(mine[4].id)]
    assert first["previous"] is None and last["next"] is None
    assert api.get(last["previous"]).json() == second


def test_the_history_filters_by_status_and_keeps_it_in_its_links(api, owner):
    for status in [Status.DONE, Status.FAILED, Status.DONE, Status.DONE]:
        CloneJob.objects.create(owner=owner, url=URL, status=status)

    page = api.get("/api/clones", {"status": "done", "limit": 2}).json()

    assert page["count"] == 3
    assert {item["status"] for item in page["items"]} == {"done"}
    assert "status=done" in page["next"]
    assert_error(api.get("/api/clones", {"status": "lost"}), 400, "invalid")
    assert_error(api.get("/api/clones", {"limit": 1000}), 400, "invalid")


# --- Cancelling ----------------------------------------------------------------------------------


def test_a_queued_job_is_cancelled(api, owner):
    job = CloneJob.objects.create(owner=owner, url=URL)

    response = api.post(f"/api/clones/{job.id}/cancel")

    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["error"] == "Cancelled by owner."
    again = api.post(f"/api/clones/{job.id}/cancel")  # asking twice is no mistake
    assert again.status_code == 200 and again.json() == response.json()


def test_an_ended_job_cannot_be_cancelled_and_stays_as_it_was(api, owner):
    job = make_done_job(owner, b"done")

    body = assert_error(api.post(f"/api/clones/{job.id}/cancel"), 409, "ended")

    assert "already ended (done)" in body["message"]
    job.refresh_from_db()
    assert job.status == Status.DONE


# --- Downloading ---------------------------------------------------------------------------------


def test_a_done_jobs_archive_downloads_whole_and_in_ranges(api, owner):
    content = bytes(range(256)) * 40
    job = make_done_job(owner, content)
    url = api.get(f"/api/clones/{job.id}").json()["links"]["download"]

    whole = api.get(url)
    assert whole.status_code == 200
    received = b"".join(whole.streaming_content)
    assert hashlib.sha256(received).hexdigest() == job.archive_sha256
    assert whole["ETag"] == f'"{job.archive_sha256}"'
    assert 'filename="widget-2ac8988.tar"' in whole["Content-Disposition"]

    part = api.get(url, headers={"Range": "bytes=100-"})
    assert part.status_code == 206
    assert part["Content-Range"] == f"bytes 100-{len(content) - 1}/{len(content)}"
    assert b"".join(part.streaming_content) == content[100:]

    assert api.get(url, headers={"If-None-Match": whole["ETag"]}).status_code == 304
    head = api.head(url)
    assert head.status_code == 200 and head["Content-Length"] == str(len(content))


@pytest.mark.parametrize(
    ("status", "words"),
    [(Status.RUNNING, "still running"), (Status.EXPIRED, "expired"), (Status.FAILED, "failed")],
)
def test_no_archive_is_409_saying_why(api, owner, status, words):
    job = CloneJob.objects.create(owner=owner, url=URL, status=status)

    body = assert_error(api.get(f"/api/clones/{job.id}/download"), 409, "no_archive")

    assert words in body["message"]


def test_a_crash_is_a_json_500_and_logged(api, owner, monkeypatch, caplog):
    def crash(request, job):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("clones.web.downloads.archive_response", crash)
    api.raise_request_exception = False
    job = make_done_job(owner, b"bytes")

    body = assert_error(api.get(f"/api/clones/{job.id}/download"), 500, "server_error")

    assert "disk on fire" not in body["message"]  # the traceback is for the log only
    assert "disk on fire" in caplog.text


# --- Schema and docs -----------------------------------------------------------------------------


def test_the_schema_documents_the_bearer_scheme_and_every_operation(client):
    schema = client.get("/api/openapi.json").json()

    assert schema["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    operations = {
        (method.upper(), path) for path, methods in schema["paths"].items() for method in methods
    }
    assert operations == {
        ("POST", "/api/clones"),
        ("GET", "/api/clones"),
        ("GET", "/api/clones/{job_id}"),
        ("POST", "/api/clones/{job_id}/cancel"),
        ("GET", "/api/clones/{job_id}/download"),
        ("HEAD", "/api/clones/{job_id}/download"),
        ("GET", "/api/clones/{job_id}/provenance"),
        ("POST", "/api/clones/{job_id}/pin"),
        ("POST", "/api/clones/{job_id}/unpin"),
        ("POST", "/api/watches"),
        ("GET", "/api/watches"),
        ("GET", "/api/watches/{watch_id}"),
        ("DELETE", "/api/watches/{watch_id}"),
        ("POST", "/api/watches/{watch_id}/check"),
    }
    create = schema["paths"]["/api/clones"]["post"]
    assert {"202", "400", "401", "429"} <= set(create["responses"])


def test_the_docs_page_loads_nothing_from_another_host(client):
    page = client.get("/api/docs").content.decode()

    assert not re.search(r"https?://", page)
    assert not re.search(r'(?:src|href)="//', page)  # nor a protocol-relative address
    assets = re.findall(r'(?:src|href)="/static/([^"]+)"', page)
    assert "ninja/swagger-ui-bundle.js" in assets
    for asset in assets:
        assert finders.find(asset), asset  # shipped by django-ninja, served from here


# --- Getting a token -----------------------------------------------------------------------------


def test_the_apitoken_command_prints_a_working_token(client, owner):
    out = io.StringIO()
    call_command("apitoken", "owner", "--name", "laptop", stdout=out)

    token = out.getvalue().strip()
    assert ApiToken.objects.get().name == "laptop"
    response = client.get("/api/clones", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_the_apitoken_command_revokes_by_prefix(owner, token):
    prefix = ApiToken.objects.get().prefix

    call_command("apitoken", "owner", "--revoke", prefix, stderr=io.StringIO())

    assert apitokens.user_for(token) is None
    with pytest.raises(CommandError, match="has no unrevoked token"):
        call_command("apitoken", "owner", "--revoke", prefix)


def test_the_apitoken_command_names_an_unknown_user(db):
    with pytest.raises(CommandError, match="There is no user 'nobody'"):
        call_command("apitoken", "nobody")


def test_the_profile_page_makes_a_token_shown_once(owner_client, owner):
    response = owner_client.post(reverse("clones:token-new"), {"name": "ci"})

    page = response.content.decode()
    token = re.search(r'id="new-token" type="text" value="(cs_[^"]+)"', page)[1]
    assert "it will not be shown again" in page
    assert "no-store" in response["Cache-Control"]
    assert apitokens.user_for(token) == owner
    listed = owner_client.get(reverse("clones:profile")).content.decode()
    assert token not in listed
    assert f"{token[:10]}…" in listed and ">ci<" in listed


def test_the_profile_page_revokes_only_ones_own_tokens(owner_client, owner, other_user):
    mine, my_token = apitokens.make(owner, "mine")
    theirs, their_token = apitokens.make(other_user, "theirs")

    owner_client.post(reverse("clones:token-revoke", args=[theirs.id]))
    response = owner_client.post(reverse("clones:token-revoke", args=[mine.id]))

    assert response.status_code == 302
    assert apitokens.user_for(my_token) is None
    assert apitokens.user_for(their_token) == other_user
    assert owner_client.get(reverse("clones:token-revoke", args=[mine.id])).status_code == 405


def test_the_profile_page_shows_the_webhook_secret_and_makes_a_new_one(owner_client, owner):
    page = owner_client.get(reverse("clones:profile")).content.decode()
    secret = Profile.objects.get(user=owner).signing_secret
    assert secret.startswith("whsec_") and secret in page
    assert "<code>webhook-signature</code>" in page

    owner_client.post(reverse("clones:webhook-secret"))

    assert Profile.objects.get(user=owner).signing_secret != secret


def test_the_profile_page_needs_a_login(client):
    response = client.get(reverse("clones:profile"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
