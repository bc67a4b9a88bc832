"""The site in a real browser: Debian's Chromium, driven by Playwright, against gunicorn and a
real worker. Screenshots of each page go to ./screenshots (CLONESHELF_SCREENSHOTS to change it),
for a person to look at."""

import hashlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from axe_playwright_python.sync_playwright import Axe
from django.contrib.auth.models import Permission
from django.utils import timezone
from playwright.sync_api import expect, sync_playwright

from clones import jobs
from clones.models import CloneJob, Status, Watch

from .support import PROJECT_DIR
from .support.gitservers import StallingServer, free_port, wait_for_port
from .support.helpers import make_done_job, refreshed, web_server_command

CHROMIUM = "/usr/bin/chromium"  # Debian's: no browser can be downloaded here
SCREENSHOTS = Path(os.environ.get("CLONESHELF_SCREENSHOTS", PROJECT_DIR / "screenshots"))
PHONE = {"width": 390, "height": 844}
PASSWORD = "a browser's password"
AXE = Axe()  # axe-core, carried by the axe-playwright-python package: nothing is downloaded
WCAG_AA = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


@pytest.fixture
def site(transactional_db, monkeypatch):
    """gunicorn serving the site, with its static files collected, as in production."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    manage = [sys.executable, "manage.py", "collectstatic", "--noinput"]
    subprocess.run(manage, cwd=PROJECT_DIR, env=env, check=True, capture_output=True)
    port = free_port()
    web = subprocess.Popen(
        web_server_command(port),
        cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, timeout=30)
    # Playwright's sync API runs an event loop in this thread; the ORM here is still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    yield f"http://127.0.0.1:{port}"
    web.terminate()
    web.wait()


@pytest.fixture
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser
        browser.close()


@pytest.fixture
def page(browser, site):
    """A page whose test fails if the Content-Security-Policy blocked anything on it."""
    context = browser.new_context(accept_downloads=True)
    # The copy buttons write to the clipboard; the test reads it back.
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=site)
    page = context.new_page()
    blocked = []
    page.on(
        "console",
        lambda message: "Content Security Policy" in message.text and blocked.append(message.text),
    )
    yield page
    assert blocked == []


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def look_at(page, name: str) -> None:
    """A screenshot for people, and axe-core's WCAG 2.1 A/AA checks (labels, contrast, names,
    landmarks' structure) on the page as it is now."""
    screenshot(page, name)
    results = AXE.run(page, options={"runOnly": {"type": "tag", "values": WCAG_AA}})
    assert results.violations_count == 0, f"{name}:\n{results.generate_report()}"


def log_in(page, site: str, username: str) -> None:
    page.goto(f"{site}/")  # sends a stranger to the login page
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def submit(page, url: str) -> None:
    page.get_by_label("Repository URL").fill(url)
    page.get_by_role("button", name="Clone").click()
    page.wait_for_url("**/clones/*/")


def status_of(page):
    return page.locator("#job .status")


def download(page, job: CloneJob, into: Path) -> str:
    """Download through the job page's link; the saved file's sha256."""
    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {job.download_filename}").click()
    saved = into / f"{len(list(into.iterdir()))}-{download.value.suggested_filename}"
    download.value.save_as(saved)
    assert download.value.suggested_filename == job.download_filename
    return hashlib.sha256(saved.read_bytes()).hexdigest()


def clipboard(page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


def test_the_whole_walk_from_log_in_to_cancel(
    site, page, django_user_model, start_worker, new_repo, git_http, tmp_path
):
    django_user_model.objects.create_user("browser", password=PASSWORD)
    repo = new_repo()
    start_worker()

    page.goto(f"{site}/")  # sends a stranger to the login page
    look_at(page, "log-in")
    log_in(page, site, "browser")
    look_at(page, "new-clone")
    # Each choice's button sits beside its words (the text fields' width once stretched them).
    choice = page.get_by_label("Full clone (files and .git)").bounding_box()
    assert choice["width"] < 40, choice
    submit(page, git_http.url(repo.name))

    # The page moves to done in place: a marker set on window survives.
    page.evaluate("window.notReloaded = true")
    expect(status_of(page)).to_contain_text("Done", timeout=60_000)
    assert page.evaluate("window.notReloaded === true")
    look_at(page, "job-done")
    job = CloneJob.objects.get()
    assert job.status == Status.DONE
    assert download(page, job, tmp_path) == job.archive_sha256

    page.get_by_role("button", name="Copy SHA-256").click()
    assert clipboard(page) == job.archive_sha256
    page.get_by_role("button", name="Copy download link").click()
    assert clipboard(page) == f"{site}/clones/{job.id}/download"

    # History, then the same archive again from it.
    page.get_by_role("link", name="History").click()
    look_at(page, "history")
    page.get_by_label("Status").select_option("done")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("status")).to_have_text("1 clone matches.")
    page.get_by_role("link", name=job.url).click()
    assert download(page, job, tmp_path) == job.archive_sha256

    # Its time runs out: the page says so and offers to clone it again.
    CloneJob.objects.filter(pk=job.pk).update(expires_at=timezone.now())
    assert jobs.expire(refreshed(job))
    page.reload()
    expect(status_of(page)).to_have_text("Expired")
    expect(page.get_by_role("link", name=f"Download {job.download_filename}")).to_have_count(0)
    look_at(page, "job-expired")
    page.get_by_role("button", name="Clone again").click()
    page.wait_for_url(lambda url: str(job.id) not in url)
    expect(status_of(page)).to_contain_text("Done", timeout=60_000)
    again = CloneJob.objects.exclude(pk=job.pk).get()
    assert (again.url, again.commit) == (job.url, job.commit)

    # A clone that hangs, cancelled from its page.
    stalling = StallingServer()
    try:
        page.get_by_role("link", name="New clone").click()
        submit(page, stalling.url())
        expect(status_of(page)).to_contain_text("Running", timeout=30_000)
        look_at(page, "job-running")
        page.get_by_role("button", name="Cancel").click()
        expect(status_of(page)).to_contain_text("Cancelled")
        look_at(page, "job-cancelled")
    finally:
        stalling.stop()

    # An API token from the profile page opens the API; revoked, it no longer does.
    page.get_by_role("link", name="Profile").click()
    page.get_by_label("Name").fill("laptop")
    page.get_by_role("button", name="Make a token").click()
    token = page.get_by_role("textbox", name="Token").input_value()
    look_at(page, "profile-new-token")
    bearer = {"Authorization": f"Bearer {token}"}
    answer = page.request.get(f"{site}/api/clones/{again.id}", headers=bearer)
    assert answer.status == 200 and answer.json()["archive_sha256"] == again.archive_sha256
    page.get_by_role("link", name="Profile").click()
    page.get_by_role("button", name="Revoke token").click()
    look_at(page, "profile")
    assert page.request.get(f"{site}/api/clones/{again.id}", headers=bearer).status == 401
    page.goto(f"{site}/api/docs")
    expect(page.get_by_text("cloneshelf API").first).to_be_visible()
    screenshot(page, "api-docs")  # Swagger UI's own page: axe's findings there are not ours


def test_history_reads_on_a_phone(site, page, django_user_model):
    owner = django_user_model.objects.create_user("phone", password=PASSWORD)
    for number in range(3):
        make_done_job(owner, b"an archive", name=f"r{number}.tar")
    CloneJob.objects.create(owner=owner, url="https://example.com/failed.git",
                            status=Status.FAILED, error="The server said no.")  # fmt: skip
    page.set_viewport_size(PHONE)
    log_in(page, site, "phone")

    page.goto(f"{site}/clones/")
    look_at(page, "history-phone")
    # No word is broken inside its letters at a phone's width ("St / at / us" was).
    # (A failed job's short reason goes on a line of its own under its status, on purpose.)
    for cell in ["Status] .status", "Ref]", "Size]", "Requested]"]:
        line = page.locator(f"td[data-label={cell}").first.bounding_box()
        assert line["height"] < 30, f"{cell} wraps: {line}"
    expect(page.locator("td .reason")).to_have_text("The server said no.")
    page.get_by_label("Search").fill("nothing like this")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_text("No clones match these filters.")).to_be_visible()
    look_at(page, "history-no-match-phone")


def test_the_dashboard_draws_its_charts_for_staff_and_is_refused_to_others(
    site, page, django_user_model
):
    staff = django_user_model.objects.create_user("staff", password=PASSWORD, is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_clonejob"))
    django_user_model.objects.create_user("someone", password=PASSWORD)
    make_done_job(staff, b"an archive")
    CloneJob.objects.create(owner=staff, url="https://example.com/broken.git",
                            status=Status.FAILED, error="The server said no.",
                            started_at=timezone.now(), finished_at=timezone.now())  # fmt: skip

    log_in(page, site, "staff")
    page.get_by_role("link", name="Dashboard").click()
    charts = page.locator("svg[role=img]")
    expect(charts).to_have_count(2)
    for chart in charts.all():
        box = chart.bounding_box()
        assert box["width"] > 200 and box["height"] > 100, box  # drawn, not collapsed
    expect(page.get_by_text("The server said no.")).to_be_visible()
    look_at(page, "dashboard")
    page.set_viewport_size(PHONE)
    look_at(page, "dashboard-phone")
    page.get_by_role("link", name="All jobs").click()  # the admin, under the same policy
    expect(page.get_by_role("heading", name="Select clone job to view")).to_be_visible()
    page.go_back()

    page.get_by_role("button", name="Log out staff").click()
    log_in(page, site, "someone")
    expect(page.get_by_role("link", name="Dashboard")).to_have_count(0)
    assert page.goto(f"{site}/dashboard/").status == 404
    expect(page.get_by_role("heading", name="Nothing here")).to_be_visible()
    look_at(page, "not-found")


def test_copy_buttons_work_without_the_clipboard_api(site, page, django_user_model):
    """Over plain http on a LAN (not localhost) browsers have no navigator.clipboard."""
    owner = django_user_model.objects.create_user("lan", password=PASSWORD)
    job = make_done_job(owner, b"an archive")
    page.add_init_script(
        "window.realClipboard = Object.getOwnPropertyDescriptor(Navigator.prototype, 'clipboard');"
        "Object.defineProperty(Navigator.prototype, 'clipboard', "
        "{get: () => undefined, configurable: true})"
    )
    log_in(page, site, "lan")

    page.goto(f"{site}{job.get_absolute_url()}")
    copy = page.locator("button[data-copy]")  # by its text, it would be lost once it changes
    copy.click()
    expect(copy).to_have_text("Copied")
    copy.click()  # a second click while it says "Copied" must not keep that as its label
    expect(copy).to_have_text("Copy SHA-256", timeout=5_000)
    # Back, to read what was copied.
    page.evaluate("Object.defineProperty(Navigator.prototype, 'clipboard', window.realClipboard)")
    assert clipboard(page) == job.archive_sha256


def test_watching_repositories_from_the_list_to_the_timeline(site, page, django_user_model):
    owner = django_user_model.objects.create_user("watcher", password=PASSWORD)
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    log_in(page, site, "watcher")

    page.get_by_role("link", name="Watches", exact=True).click()
    expect(page.get_by_text("You do not watch any repository yet.")).to_be_visible()
    look_at(page, "watches-empty")
    page.get_by_role("link", name="Watch a repository").click()
    look_at(page, "watch-new")
    pasted = "https://127.0.0.1/team/widget.git\nfile:///etc/passwd"
    page.get_by_label("Repository URLs (one per line)").fill(pasted)
    page.get_by_label("Named branches and tags").check()
    page.get_by_label("Branches and tags to follow (one per line)").fill("main")
    page.get_by_label("Access token (private repositories only)").fill("ghp_browser")
    page.get_by_role("button", name="Watch", exact=True).click()
    expect(page.get_by_role("heading", name="2 lines: 1 refused")).to_be_visible()
    expect(page.get_by_label("Repository URLs (one per line)")).to_have_value("file:///etc/passwd")
    expect(page.get_by_label("Access token (private repositories only)")).to_have_value("")
    look_at(page, "watch-pasted")

    # Two snapshots, as checks would make them; a commit subject that is markup.
    watch = Watch.objects.get(owner=owner)
    for hours_ago, commit, changes in [
        (30, "a", []),
        (2, "b", [["b" * 40, '<img src=x onerror=alert("owned")>'], ["c" * 40, "Fix"]]),
    ]:
        job = make_done_job(owner, f"snapshot {commit}".encode(), name=f"{commit}.tar")
        CloneJob.objects.filter(pk=job.pk).update(
            watch=watch, commit=commit * 40, changes=changes, changes_total=len(changes) or None,
            created_at=timezone.now() - timedelta(hours=hours_ago), expires_at=None,
        )  # fmt: skip
    page.get_by_role("link", name="Watches", exact=True).click()
    look_at(page, "watches")
    page.get_by_role("link", name=watch.url).click()
    expect(page.get_by_role("heading", name="widget")).to_be_visible()
    expect(page.locator("svg[role=img]")).to_have_count(2)
    page.get_by_text("2 commits", exact=True).click()
    expect(page.get_by_text('<img src=x onerror=alert("owned")>')).to_be_visible()
    look_at(page, "watch-timeline")
    page.get_by_role("button", name="Compare").click()
    expect(page.get_by_text("2 commits listed")).to_be_visible()
    page.get_by_role("button", name="Pin the snapshot").first.click()
    expect(page.locator(".badge")).to_have_text("Pinned")
    page.get_by_role("button", name="Check now").click()
    page.set_viewport_size(PHONE)
    look_at(page, "watch-timeline-phone")
    page.get_by_role("link", name="Delete…").click()
    look_at(page, "watch-delete")
    page.get_by_role("button", name="Delete the watch").click()
    expect(page.get_by_text("You do not watch any repository yet.")).to_be_visible()
    assert dialogs == []  # no subject ran as script
