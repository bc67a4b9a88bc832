"""The site in a real browser: Debian's Chromium, driven by Playwright, against gunicorn and a
real worker. Screenshots of each page go to ./screenshots (CLONESHELF_SCREENSHOTS to change it),
for a person to look at."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from clones.models import CloneJob, Status

from .conftest import PROJECT_DIR
from .gitservers import free_port, wait_for_port

CHROMIUM = "/usr/bin/chromium"  # Debian's: no browser can be downloaded here
SCREENSHOTS = Path(os.environ.get("CLONESHELF_SCREENSHOTS", PROJECT_DIR / "screenshots"))
PHONE = {"width": 390, "height": 844}
PASSWORD = "a browser's password"


@pytest.fixture
def site(transactional_db, monkeypatch):
    """gunicorn serving the site, with its static files collected, as in production."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings"}
    manage = [sys.executable, "manage.py", "collectstatic", "--noinput"]
    subprocess.run(manage, cwd=PROJECT_DIR, env=env, check=True, capture_output=True)
    port = free_port()
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "project.wsgi", "--bind", f"127.0.0.1:{port}"],
        cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    wait_for_port(port, timeout=30)
    # Playwright's sync API runs an event loop in this thread; the ORM here is still synchronous.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    yield f"http://127.0.0.1:{port}"
    web.terminate()
    web.wait()


@pytest.fixture
def page():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        yield browser.new_page(accept_downloads=True)
        browser.close()


def screenshot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


def test_log_in_clone_watch_it_finish_in_place_and_download(
    site, page, django_user_model, start_worker, new_repo, git_http, tmp_path
):
    django_user_model.objects.create_user("browser", password=PASSWORD)
    repo = new_repo()
    start_worker()

    page.goto(f"{site}/")  # sends a stranger to the login page
    page.get_by_label("Username").fill("browser")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    screenshot(page, "new-clone")
    page.get_by_label("Repository URL").fill(git_http.url(repo.name))
    page.get_by_role("button", name="Clone").click()

    page.wait_for_url("**/clones/*/")
    page.evaluate("window.notReloaded = true")
    expect(page.locator("#job .status")).to_contain_text("Done", timeout=60_000)
    assert page.evaluate("window.notReloaded === true")  # updated in place
    screenshot(page, "job-done")
    job = CloneJob.objects.get()
    assert job.status == Status.DONE

    with page.expect_download() as download:
        page.get_by_role("link", name=f"Download {job.download_filename}").click()
    saved = tmp_path / download.value.suggested_filename
    download.value.save_as(saved)
    assert saved.name == job.download_filename
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == job.archive_sha256

    page.goto(f"{site}/clones/")
    expect(page.get_by_role("link", name=job.url)).to_be_visible()
    screenshot(page, "history")
    page.set_viewport_size(PHONE)
    screenshot(page, "history-phone")
    # No word is broken inside its letters at a phone's width ("St / at / us" was).
    for cell in ["Status", "Ref", "Size", "Requested"]:
        line = page.locator(f"td[data-label={cell}]").first.bounding_box()
        assert line["height"] < 30, f"the {cell} cell wraps: {line}"
