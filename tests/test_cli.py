"""`manage.py clone`, run as a separate process against a real worker."""

import os
import subprocess
import sys

import pytest

from clones.models import CloneJob, Status

from .support import PROJECT_DIR

pytestmark = pytest.mark.database  # also run on PostgreSQL (README)


def run_clone_command(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", "clone", *args],
        cwd=PROJECT_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", **(env or {})},
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_it_queues_waits_and_reports_the_archive(owner, start_worker, new_repo, git_http):
    repo = new_repo()
    start_worker()

    url = git_http.url(repo.name)
    result = run_clone_command(url, "--ref", "feature", "--user", "owner", "--wait")

    assert result.returncode == 0, result.stderr
    job = CloneJob.objects.get()
    assert job.status == Status.DONE and job.commit == repo.refs["feature"]
    assert result.stdout.splitlines()[-4:] == [
        "status done",
        f"commit {job.commit}",
        f"sha256 {job.archive_sha256}",
        f"archive {job.archive.path}",
    ]


def test_a_failed_job_exits_non_zero_with_the_reason(owner, start_worker, git_daemon):
    start_worker()
    url = git_daemon.url("missing.git")

    result = run_clone_command(url, "--user", "owner", "--wait")

    assert result.returncode == 1
    assert f"There is no git repository at {url}." in result.stderr
    assert "status failed" in result.stdout


def test_bad_input_is_refused_with_the_form_s_message_and_no_job(owner, transactional_db):
    result = run_clone_command("file:///etc/passwd", "--user", "owner")

    assert result.returncode == 1
    assert "Local paths and file:// URLs are not accepted" in result.stderr
    assert not CloneJob.objects.exists()


def test_a_webhook_url_is_kept_or_refused_as_the_form_does(owner, transactional_db):
    url = "http://127.0.0.1/a.git"

    hook = "http://127.0.0.1/hook"
    refused = run_clone_command(url, "--user", "owner", "--webhook-url", "file:///hook")
    private = run_clone_command(url, "--user", "owner", "--webhook-url", hook)
    allowed = {"CLONES_WEBHOOK_ALLOWED_PRIVATE_HOSTS": "127.0.0.1"}
    kept = run_clone_command(url, "--user", "owner", "--webhook-url", hook, env=allowed)

    assert refused.returncode == 1
    assert "webhook_url: file:// URLs cannot receive webhooks" in refused.stderr
    assert private.returncode == 1
    assert "webhooks are only sent to public servers" in private.stderr
    assert kept.returncode == 0, kept.stderr
    assert CloneJob.objects.get().webhook_url == "http://127.0.0.1/hook"


def test_it_needs_to_know_the_owner_when_it_cannot_guess(transactional_db):
    result = run_clone_command("https://127.0.0.1/a.git")

    assert result.returncode == 1
    assert "Say who owns the job with --user NAME." in result.stderr


def test_waiting_gives_up_when_no_worker_runs(owner, transactional_db):
    result = run_clone_command(
        "https://127.0.0.1/a.git", "--user", "owner", "--wait", "--timeout", "1"
    )

    assert result.returncode == 1
    assert "is still queued after 1 s; is a worker (manage.py worker) running?" in result.stderr
