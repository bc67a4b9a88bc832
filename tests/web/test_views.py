"""Pages, privacy and form errors. Archives here are real files in the test storage."""

import re
from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.test import Client, override_settings
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from clones.models import CloneJob, DeliveryState, Status, WebhookDelivery

from ..support.helpers import make_done_job

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


@pytest.fixture
def done_job(owner):
    return make_done_job(owner, b"tar bytes", "done.tar")


def job_urls(job: CloneJob) -> dict[str, str]:
    return {
        "page": reverse("clones:detail", args=[job.id]),
        "panel": reverse("clones:panel", args=[job.id]),
        "download": reverse("clones:download", args=[job.id]),
        "again": reverse("clones:again", args=[job.id]),
    }


def test_the_owner_downloads_with_a_named_file_and_length(client, owner, done_job):
    client.force_login(owner)
    response = client.get(job_urls(done_job)["download"])
    assert response.status_code == 200
    assert response["Content-Length"] == "9"
    assert 'filename="widget-2ac8988.tar"' in response["Content-Disposition"]
    assert b"".join(response.streaming_content) == b"tar bytes"


def test_the_job_page_shows_what_was_made(client, owner, done_job):
    client.force_login(owner)
    page = client.get(job_urls(done_job)["page"]).content.decode()
    for shown in [done_job.commit, done_job.archive_sha256, "9 bytes", "Download widget-2ac8988"]:
        assert shown in page
    assert 'http-equiv="refresh"' not in page  # finished: nothing left to watch


def test_an_active_job_page_updates_its_panel_in_place(client, owner):
    job = CloneJob.objects.create(owner=owner, url="https://example.com/a.git")
    client.force_login(owner)
    page = client.get(job_urls(job)["page"]).content.decode()
    assert "clones/job.js" in page and 'id="job"' in page and "data-active" in page
    assert '<noscript><meta http-equiv="refresh"' in page  # without JavaScript, a reload
    assert "Queued" in page


def test_a_done_job_s_panel_is_watched_while_its_webhook_is_on_its_way(client, owner):
    job = make_done_job(owner, b"an archive")
    job.webhook_url = "https://example.com/hook"
    job.save()
    client.force_login(owner)

    def panel() -> str:
        return client.get(job_urls(job)["panel"]).content.decode()

    assert 'data-active="webhook"' in panel()  # just ended: its delivery is being made
    delivery = WebhookDelivery.objects.create(job=job, url=job.webhook_url)
    assert 'data-active="webhook"' in panel()  # pending
    delivery.state = DeliveryState.DELIVERED
    delivery.save()
    assert "data-active" not in panel()


def test_the_panel_shows_what_a_running_job_is_doing_and_how_far_along(client, owner):
    job = CloneJob.objects.create(
        owner=owner,
        url="https://example.com/a.git",
        status=Status.RUNNING,
        phase="Receiving objects",
        progress=45,
    )
    client.force_login(owner)

    response = client.get(job_urls(job)["panel"])

    panel = response.content.decode()
    assert response["Cache-Control"] == "no-store"
    assert panel.lstrip().startswith("<section")
    assert "Running: Receiving objects 45%" in panel
    assert '<progress max="100" value="45"' in panel
    assert "<html" not in panel  # the panel alone, to put in place


@pytest.mark.parametrize("what", ["page", "panel", "download"])
def test_another_user_gets_404(client, other_user, done_job, what):
    client.force_login(other_user)
    assert client.get(job_urls(done_job)[what]).status_code == 404


def test_another_user_cannot_clone_again(client, other_user, done_job):
    client.force_login(other_user)
    assert client.post(job_urls(done_job)["again"]).status_code == 404
    assert CloneJob.objects.count() == 1


@pytest.mark.parametrize("what", ["page", "panel", "download"])
def test_staff_too_get_404_outside_the_admin(client, staff, done_job, what):
    client.force_login(staff)
    assert client.get(job_urls(done_job)[what]).status_code == 404


@pytest.mark.parametrize(
    "url", [reverse("clones:new"), reverse("clones:history"), "page", "download"]
)
def test_anonymous_gets_the_login_page(client, done_job, url):
    url = job_urls(done_job).get(url, url)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert "Log in" in client.get(response["Location"]).content.decode()


def test_an_expired_job_has_no_download_but_offers_clone_again(client, owner, done_job):
    done_job.status, done_job.archive = Status.EXPIRED, ""
    done_job.save()
    client.force_login(owner)
    assert client.get(job_urls(done_job)["download"]).status_code == 404
    page = client.get(job_urls(done_job)["page"]).content.decode()
    assert "Clone again" in page and "Download" not in page


def test_history_lists_only_own_jobs_newest_first_in_pages(client, owner, other_user):
    for number in range(30):
        CloneJob.objects.create(owner=owner, url=f"https://example.com/r{number}.git")
    CloneJob.objects.create(owner=other_user, url="https://example.com/secret.git")
    client.force_login(owner)

    first = client.get(reverse("clones:history")).content.decode()
    second = client.get(reverse("clones:history") + "?page=2").content.decode()

    assert "r29.git" in table_of(first) and "r5.git" in table_of(first)
    assert "r4.git" not in table_of(first)
    assert "r4.git" in table_of(second) and "r0.git" in table_of(second)
    assert "Page 1 of 2" in first
    assert "secret.git" not in first + second


def table_of(page: str) -> str:
    """The history table's rows alone (the repository filter lists every URL too)."""
    return page.split("<tbody>", 1)[1].split("</tbody>", 1)[0]


def history_page(client, **filters) -> str:
    return client.get(reverse("clones:history"), filters).content.decode()


@pytest.fixture
def varied_history(owner, other_user):
    make = CloneJob.objects.create
    make(owner=owner, url="https://example.com/alpha.git", ref="main", status=Status.DONE)
    make(owner=owner, url="https://example.com/alpha.git", ref="v2", status=Status.FAILED,
         error="The server refused the token.")  # fmt: skip
    make(owner=owner, url="https://example.com/beta.git", status=Status.DONE, commit="ab" * 20)
    make(owner=other_user, url="https://example.com/alpha.git", status=Status.FAILED)


def test_history_filters_by_status_repository_and_search(client, owner, varied_history):
    client.force_login(owner)

    failed = table_of(history_page(client, status="failed"))
    assert failed.count("<tr>") == 1 and "v2" in failed
    alpha = table_of(history_page(client, repository="https://example.com/alpha.git"))
    assert alpha.count("<tr>") == 2 and "beta" not in alpha
    assert table_of(history_page(client, q="refused the")).count("<tr>") == 1  # error text
    assert "beta.git" in table_of(history_page(client, q="ababab"))  # a commit's start
    both = history_page(client, status="done", repository="https://example.com/alpha.git")
    assert table_of(both).count("<tr>") == 1 and "1 clone matches." in both


def test_history_pages_keep_the_filters(client, owner):
    for number in range(30):
        CloneJob.objects.create(owner=owner, url=f"https://example.com/r{number}.git")
    client.force_login(owner)

    page = history_page(client, q="example")
    assert 'href="?q=example&amp;page=2"' in page


def test_history_says_when_nothing_matches_and_how_to_see_everything(client, owner, varied_history):
    client.force_login(owner)

    page = history_page(client, q="no such repository")
    assert "No clones match these filters." in page
    assert "Clear filters" in page and "<tbody>" not in page


def test_a_first_visit_to_history_says_where_to_start(client, owner):
    client.force_login(owner)

    page = history_page(client)
    assert "You have not cloned anything yet." in page
    assert reverse("clones:new") in page and 'role="search"' not in page


def test_a_hand_made_status_filter_is_explained(client, owner, varied_history):
    client.force_login(owner)

    page = history_page(client, status="exploded")
    assert "Select a valid choice. exploded is not one of the available choices." in page
    assert table_of(page).count("<tr>") == 3  # the rest of the page still shows everything


BAD_INPUT = [
    ({"url": ""}, "url", "Enter the URL of a git repository."),
    ({"url": "not a url"}, "url", "The URL contains spaces or control characters."),
    ({"url": "notaurl"}, "url", "Enter a full URL, such as https://github.com/owner/repo.git."),
    (
        {"url": "file:///etc/passwd"},
        "url",
        "Local paths and file:// URLs are not accepted: give the URL of a git server.",
    ),
    (
        {"url": "/srv/git/repo.git"},
        "url",
        "Local paths and file:// URLs are not accepted: give the URL of a git server.",
    ),
    (
        {"url": "ftp://127.0.0.1/repo.git"},
        "url",
        "ftp:// URLs are not accepted here; use https://.",
    ),
    (
        {"url": "http://127.0.0.1/repo.git"},
        "url",
        "http:// URLs are not accepted here; use https://.",
    ),
    (
        {"url": "https://alice:s3cret@127.0.0.1/repo.git"},
        "url",
        "Remove the user name or password from the URL: credentials in URLs end up in logs "
        "and history.",
    ),
    (
        {"url": "git@github.com:owner/repo.git"},
        "url",
        "SSH URLs need keys we don't hold; use the repository's https URL instead. "
        "Try https://github.com/owner/repo.git",
    ),
    (
        {"url": "ext::sh -c touch% /tmp/pwned"},
        "url",
        "The URL contains spaces or control characters.",
    ),
    (
        {"url": "ext::sh"},
        "url",
        "Remote-helper URLs (transport::address) are not accepted.",
    ),
    ({"url": "-uhttps://x"}, "url", "The URL cannot start with '-'."),
    (
        {"url": "https://0x7f.1/repo.git"},
        "url",
        "0x7f.1 is not a usual IPv4 address: write it as four decimal numbers without leading "
        "zeros, like 192.0.2.1.",
    ),
    (
        {"url": "https://git_server/repo.git"},
        "url",
        "git_server is not a valid host name: each part between dots is 1 to 63 letters, digits "
        "or hyphens, and does not start or end with a hyphen.",
    ),
    (
        {"url": "https://127.0.0.1/a.git", "ref": "my branch"},
        "ref",
        "A branch or tag name cannot contain spaces or control characters.",
    ),
    (
        {"url": "https://127.0.0.1/a.git", "ref": "--upload-pack=evil"},
        "ref",
        "A branch or tag name cannot start with '-'.",
    ),
    (
        {"url": "https://127.0.0.1/a.git", "ref": "a..b"},
        "ref",
        "'a..b' is not a valid branch or tag name.",
    ),
]


@override_settings(CLONES_ALLOWED_SCHEMES=["https"])
@pytest.mark.parametrize(("data", "field", "message"), BAD_INPUT)
def test_bad_input_gets_a_specific_error_and_no_job(client, owner, data, field, message):
    client.force_login(owner)
    response = client.post(reverse("clones:new"), {"ref": "", **data})

    assert response.status_code == 200
    assert response.context["form"].errors[field] == [message]
    assert message.replace("'", "&#x27;") in response.content.decode()
    assert not CloneJob.objects.exists()


@override_settings(CLONES_ALLOW_PRIVATE_NETWORKS=False)
def test_private_addresses_are_refused_unless_allowed(client, owner):
    client.force_login(owner)
    response = client.post(reverse("clones:new"), {"url": "https://127.0.0.1/repo.git"})
    assert response.context["form"].errors["url"] == [
        "127.0.0.1 is a private or reserved address; only public git servers can be cloned."
    ]
    assert not CloneJob.objects.exists()


def test_a_missing_page_says_what_to_do_next(client, owner, settings):
    settings.DEBUG = False
    client.force_login(owner)

    response = client.get("/clones/00000000-0000-0000-0000-000000000000/")
    assert response.status_code == 404
    assert "Check the address, or find your clone in" in response.content.decode()


def test_a_stale_form_says_to_reload_and_send_again(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)

    response = client.post(reverse("clones:new"), {"url": "https://example.com/r.git"})
    assert response.status_code == 403
    assert "Go back, reload the page and send it again." in response.content.decode()


# --- Accounts ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/accounts/password_reset/",
        "/accounts/password_reset/done/",
        "/accounts/reset/MQ/set-password/",
        "/accounts/reset/done/",
    ],
)
def test_there_is_no_password_reset_by_email(client, owner, mailoutbox, path):
    # Accounts come from an admin, who also sets a forgotten password: nobody can ask for a
    # reset email, anonymous or not, and nothing tries to reach a mail server.
    assert client.get(path).status_code == 404
    assert client.post(path, {"email": "owner@example.com"}).status_code == 404
    assert mailoutbox == []
    with pytest.raises(NoReverseMatch):
        reverse("password_reset")


def test_no_page_links_to_a_password_reset(client, staff):
    pages = [reverse("login"), reverse("admin:login")]
    for page in pages:
        text = client.get(page).content.decode().lower()
        assert "reset" not in text and "forgotten" not in text
    assert "Accounts are created by an administrator." in client.get(pages[0]).content.decode()


def test_a_logged_in_user_changes_their_password_with_the_current_one(client, owner):
    change = reverse("password_change")
    assert client.get(change).status_code == 302  # to the login page

    client.force_login(owner)
    wrong = {
        "old_password": "guess",
        "new_password1": "n3w-secret-pw",
        "new_password2": "n3w-secret-pw",
    }
    assert client.post(change, wrong).status_code == 200
    right = {**wrong, "old_password": "pw-owner-123"}
    assert client.post(change, right)["Location"] == reverse("password_change_done")

    owner.refresh_from_db()
    assert owner.check_password("n3w-secret-pw")


def test_logins_are_locked_out_after_failures_in_a_row_with_a_clear_message(
    client, owner, other_user, settings
):
    settings.CLONES_LOGIN_FAILURES = settings.AXES_FAILURE_LIMIT = 3
    login = reverse("login")
    wrong = {"username": "owner", "password": "guess"}
    for _ in range(2):
        response = client.post(login, wrong)
        assert response.status_code == 200
        assert "didn't match" in response.content.decode()

    response = client.post(login, wrong)  # the third failure locks the name out

    assert response.status_code == 429
    assert response["Retry-After"] == str(settings.CLONES_LOGIN_LOCKOUT_MINUTES * 60)
    page = response.content.decode()
    assert "This user name failed to log in 3 times in a row from your address" in page
    assert f"locked for {settings.CLONES_LOGIN_LOCKOUT_MINUTES} minutes" in page
    right = {**wrong, "password": "pw-owner-123"}
    assert client.post(login, right).status_code == 429  # the right password too, for now
    assert client.post(reverse("admin:login"), right).status_code == 429
    assert "_auth_user_id" not in client.session
    # Another user name from the same address is not locked out.
    assert client.post(login, {"username": "other", "password": "pw-other-123"}).status_code == 302


def test_behind_the_proxy_the_lockout_holds_the_address_the_proxy_saw_not_the_proxys(
    client, owner, settings
):
    """Every request comes from the proxy: by its address alone, anyone anywhere could lock any
    user name out. The proxy appends the client's address to X-Forwarded-For; what comes
    before it is the client's to forge, and changes nothing."""
    settings.BEHIND_TLS_PROXY = True
    settings.CLONES_LOGIN_FAILURES = settings.AXES_FAILURE_LIMIT = 2
    login = reverse("login")
    wrong = {"username": "owner", "password": "guess"}
    attacker = {"HTTP_X_FORWARDED_FOR": "192.0.2.7"}
    for forged in ["203.0.113.1", "203.0.113.2"]:
        client.post(login, wrong, HTTP_X_FORWARDED_FOR=f"{forged}, 192.0.2.7")
    assert client.post(login, wrong, **attacker).status_code == 429

    right = {"username": "owner", "password": "pw-owner-123"}
    owner_elsewhere = {"HTTP_X_FORWARDED_FOR": "198.51.100.5"}
    assert client.post(login, right, **owner_elsewhere).status_code == 302


def test_a_lockout_ends_after_its_time_and_a_good_login_resets_the_count(client, owner, settings):
    settings.CLONES_LOGIN_FAILURES = settings.AXES_FAILURE_LIMIT = 2
    login = reverse("login")
    wrong, right = (
        {"username": "owner", "password": "guess"},
        {"username": "owner", "password": "pw-owner-123"},
    )
    client.post(login, wrong)
    assert client.post(login, right).status_code == 302  # one failure, then a login that works
    client.logout()
    client.post(login, wrong)
    assert client.post(login, right).status_code == 302  # the count started again
    client.logout()
    for _ in range(2):
        client.post(login, wrong)
    assert client.post(login, right).status_code == 429

    over = timezone.now() - timedelta(minutes=settings.CLONES_LOGIN_LOCKOUT_MINUTES, seconds=1)
    AccessAttempt.objects.update(attempt_time=over)

    assert client.post(login, right).status_code == 302


# --- Content-Security-Policy ---------------------------------------------------------------------


def test_every_page_carries_a_policy_with_no_inline_script_or_style(client, owner):
    client.force_login(owner)
    policy = client.get(reverse("clones:new"))["Content-Security-Policy"]
    directives = dict(directive.split(" ", 1) for directive in policy.split("; "))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == directives["style-src"] == "'self'"  # no nonce used here
    assert directives["frame-ancestors"] == directives["object-src"] == "'none'"
    assert "unsafe" not in policy


def test_the_admin_pages_carry_the_policys_nonce(client, staff):
    # Django's admin marks its tags (and its one inline <style>, where it has it) with the nonce.
    client.force_login(staff)
    response = client.get(reverse("admin:clones_clonejob_changelist"))
    nonce = re.search(r'nonce="([^"]+)"', response.content.decode())[1]
    assert f"style-src 'self' 'nonce-{nonce}'" in response["Content-Security-Policy"]
