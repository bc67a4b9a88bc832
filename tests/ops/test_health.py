"""GET /healthz and `manage.py healthcheck`: database, storage, queue, worker heartbeat and the
engine as the workers last saw it; 200 when all is well, 503 when something is down."""

import json
import os
import subprocess
import sys
from datetime import timedelta
from io import StringIO

import pytest
import yaml
from django.core.management import call_command
from django.db import OperationalError
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule

from clones import queue
from clones.models import CloneJob, Status, WorkerReport
from clones.ops.health import HEARTBEAT_GRACE_SECONDS, engine_report_max_age
from clones.tasks import ensure_schedules

from ..support import PROJECT_DIR
from ..support.helpers import compose_environment, manage, wait_until

HEALTHZ = "/healthz"  # the address compose and monitors use, not a name to reverse


def schedule_due_in(seconds: float) -> None:
    """Where the workers' scheduler left the recovery sweep: negative is overdue."""
    ensure_schedules()
    next_run = timezone.now() + timedelta(seconds=seconds)
    Schedule.objects.filter(name=queue.RECOVERY_SCHEDULE).update(next_run=next_run)


def engine_reported(ok: bool, seconds_ago: float = 5, error: str = "") -> None:
    WorkerReport.objects.update_or_create(
        pk=1,
        defaults={
            "reported_at": timezone.now() - timedelta(seconds=seconds_ago),
            "engine_ok": ok,
            "engine_error": error,
        },
    )


@pytest.fixture
def healthy(db):
    schedule_due_in(30)
    engine_reported(ok=True)


@pytest.fixture
def staff_client(client, staff):
    """Staff see why a check fails; anyone else sees only that it does."""
    client.force_login(staff)
    return client


def get_health(client) -> tuple[int, dict]:
    response = client.get(HEALTHZ)
    return response.status_code, response.json()


def test_all_well_is_200_with_every_check_for_anyone_and_never_cached(client, healthy):
    response = client.get(HEALTHZ)  # not logged in
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    body = response.json()
    assert body["status"] == "ok"
    checks = body["checks"]
    assert set(checks) == {"database", "storage", "queue", "worker", "engine"}
    assert all(check["ok"] for check in checks.values())
    assert checks["queue"] == {"ok": True, "queued": 0, "running": 0, "oldest_queued_seconds": None}
    assert checks["engine"]["state"] == "up"
    assert checks["storage"]["free_bytes"] > 0


def test_post_is_refused(client, healthy):
    assert client.post(HEALTHZ).status_code == 405


def test_the_https_redirect_spares_healthz_alone(client, healthy, settings):
    settings.SECURE_SSL_REDIRECT = True
    assert client.get(HEALTHZ).status_code == 200
    assert client.get(reverse("clones:new")).status_code == 301


def test_it_names_no_jobs_users_or_paths(client, healthy, owner, settings):
    job = CloneJob.objects.create(owner=owner, url="https://example.com/team/secret.git")
    body = client.get(HEALTHZ).content.decode()
    for private in [owner.username, job.url, str(job.id), str(settings.CLONES_DATA_DIR)]:
        assert private not in body


def test_the_queue_counts_waiting_and_running_jobs_and_the_oldest_wait(client, healthy, owner):
    now = timezone.now()
    for status, minutes_ago in [
        (Status.QUEUED, 5),
        (Status.QUEUED, 1),
        (Status.RUNNING, 30),
        (Status.DONE, 60),
        (Status.FAILED, 90),
    ]:
        CloneJob.objects.create(
            owner=owner,
            url="https://example.com/a.git",
            status=status,
            created_at=now - timedelta(minutes=minutes_ago),
        )
    status, body = get_health(client)
    assert status == 200  # a queue is load, not an outage
    queue = body["checks"]["queue"]
    assert (queue["queued"], queue["running"]) == (2, 1)
    assert 300 <= queue["oldest_queued_seconds"] < 330


def test_an_engine_reported_down_is_503_with_the_reason(staff_client, healthy):
    engine_reported(ok=False, error="The Docker engine is unreachable: connection refused")
    status, body = get_health(staff_client)
    assert status == 503 and body["status"] == "down"
    engine = body["checks"]["engine"]
    assert engine["ok"] is False and engine["state"] == "down"
    assert engine["error"] == "The Docker engine is unreachable: connection refused"
    assert 0 <= engine["reported_seconds_ago"] < 60


def test_anonymous_callers_see_what_fails_but_not_the_errors_words(client, healthy, settings):
    engine_reported(ok=False, error="Cannot connect to tcp://10.1.2.3:2376: connection refused")
    settings.MEDIA_ROOT = settings.CLONES_DATA_DIR / "gone" / "archives"

    status, body = get_health(client)

    assert status == 503 and body["status"] == "down"
    checks = body["checks"]
    assert (checks["engine"]["ok"], checks["engine"]["state"]) == (False, "down")
    assert checks["storage"] == {"ok": False}
    assert checks["database"] == {"ok": True}
    assert not any("error" in check for check in checks.values())
    assert "10.1.2.3" not in json.dumps(body)


def test_before_the_first_sweep_the_engine_is_unknown_not_down(client, healthy):
    WorkerReport.objects.all().delete()
    status, body = get_health(client)
    assert status == 200
    unknown = {"ok": True, "state": "unknown", "reported_seconds_ago": None}
    assert body["checks"]["engine"] == unknown


def test_an_old_report_of_a_working_engine_is_not_trusted_as_up(client, healthy):
    engine_reported(ok=True, seconds_ago=engine_report_max_age() + 60)
    status, body = get_health(client)
    assert status == 200
    assert body["checks"]["engine"]["state"] == "unknown"


def test_an_engine_reported_down_stays_down_until_a_sweep_finds_it_up(client, healthy):
    engine_reported(ok=False, seconds_ago=engine_report_max_age() + 60, error="refused")
    status, body = get_health(client)
    assert status == 503
    assert body["checks"]["engine"]["state"] == "down"


@pytest.mark.parametrize("late", [0, HEARTBEAT_GRACE_SECONDS / 2])
def test_a_schedule_a_little_late_still_shows_a_live_worker(client, healthy, late):
    schedule_due_in(-late)
    status, body = get_health(client)
    assert status == 200
    worker = body["checks"]["worker"]
    assert worker["ok"] is True and late <= worker["overdue_seconds"] < late + 5


def test_a_long_overdue_schedule_means_no_worker_runs(staff_client, healthy):
    schedule_due_in(-(HEARTBEAT_GRACE_SECONDS + 60))
    status, body = get_health(staff_client)
    assert status == 503
    worker = body["checks"]["worker"]
    assert worker["ok"] is False and worker["overdue_seconds"] >= HEARTBEAT_GRACE_SECONDS + 60
    assert "no worker is running its scheduler" in worker["error"]


def test_a_missing_schedule_means_no_worker_heartbeat(staff_client, healthy):
    Schedule.objects.filter(name=queue.RECOVERY_SCHEDULE).delete()
    status, body = get_health(staff_client)
    assert status == 503
    assert "recovery schedule is missing" in body["checks"]["worker"]["error"]


def test_less_free_space_than_jobs_need_is_503(staff_client, healthy, settings):
    settings.CLONES_MIN_FREE_BYTES = 2**60
    status, body = get_health(staff_client)
    assert status == 503
    storage = body["checks"]["storage"]
    assert storage["ok"] is False and storage["free_bytes"] > 0
    assert "CLONES_MIN_FREE_BYTES" in storage["error"]


def test_an_archive_directory_not_made_yet_is_fine(client, healthy, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "archives"  # storage makes it on its first save
    assert get_health(client)[0] == 200


def test_storage_with_nowhere_to_write_is_503(staff_client, healthy, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "gone" / "archives"
    status, body = get_health(staff_client)
    assert status == 503
    assert body["checks"]["storage"] == {"ok": False, "error": "The archive directory is missing."}


def test_the_command_prints_the_report_and_succeeds_when_all_is_well(healthy):
    out = StringIO()
    call_command("healthcheck", stdout=out)
    assert json.loads(out.getvalue())["status"] == "ok"


def read_only_mount(directory) -> list[str]:
    """A command prefix: run in a private mount namespace where `directory` is read-only (a
    permission bit would not stop root, who runs the tests)."""
    remount = 'mount --bind -o ro "$1" "$1" && shift && exec "$@"'
    return ["unshare", "--mount", "--propagation=private", "sh", "-c", remount, "sh", directory]


def test_read_only_storage_fails_the_command_with_exit_1(healthy, transactional_db, tmp_path):
    data = tmp_path / "data"
    (data / "archives").mkdir(parents=True)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "CLONES_DATA_DIR": str(data)}
    result = subprocess.run(
        [*read_only_mount(data), sys.executable, "manage.py", "healthcheck"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    assert "down: storage" in result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert checks["storage"]["error"] == "The archive directory is not writable by this process."
    assert [name for name, check in checks.items() if not check["ok"]] == ["storage"]


def test_without_a_database_every_check_still_answers_and_the_command_fails(tmp_path):
    result = manage(
        "healthcheck",
        env={
            "DJANGO_SECRET_KEY": "only-for-tests",
            "CLONES_DATA_DIR": str(tmp_path),
            "DATABASE_URL": f"sqlite:///{tmp_path}/no-such-directory/db.sqlite3",
        },
    )
    assert result.returncode == 1, result.stderr
    checks = json.loads(result.stdout)["checks"]
    assert checks["storage"]["ok"] is True
    for name in ["database", "queue", "worker", "engine"]:
        assert checks[name] == {"ok": False, "error": "unable to open database file"}


def compose_web_healthcheck(port: int) -> list[str]:
    """The web service's healthcheck command, aimed at `port` instead of gunicorn's 8000."""
    compose = yaml.safe_load((PROJECT_DIR / "compose.yaml").read_text())
    form, python, *args = compose["services"]["web"]["healthcheck"]["test"]
    assert (form, python) == ("CMD", "python")
    return [sys.executable, *(arg.replace(":8000/", f":{port}/") for arg in args)]


def test_the_compose_web_healthcheck_passes_when_well_and_fails_on_503(
    live_server, healthy, settings
):
    # An operator's own host name: Django answers 400 to a Host header it does not know.
    settings.ALLOWED_HOSTS = ["clones.example.com"]
    env = compose_environment(
        "web", {"DJANGO_SECRET_KEY": "x", "DJANGO_ALLOWED_HOSTS": "clones.example.com"}
    )
    command = compose_web_healthcheck(live_server.thread.port)

    def passes() -> bool:
        return subprocess.run(command, env=env, capture_output=True).returncode == 0

    assert passes()
    engine_reported(ok=False, error="refused")
    assert not passes()


def test_a_real_worker_shows_its_heartbeat_and_reports_the_engine(client, start_worker):
    # Overdue and no report: as if no worker had run for a while.
    schedule_due_in(-(HEARTBEAT_GRACE_SECONDS + 60))
    WorkerReport.objects.all().delete()
    status, body = get_health(client)
    assert status == 503 and not body["checks"]["worker"]["ok"]

    start_worker()

    # It runs the sweep as it starts, which asks the engine and writes the report; its
    # scheduler (a pass every 30 s) advances the overdue schedule.
    wait_until(lambda: get_health(client)[0] == 200, timeout=120, what="a healthy report")
    status, body = get_health(client)
    assert status == 200, body
    assert body["checks"]["worker"] == {"ok": True, "overdue_seconds": 0}
    assert body["checks"]["engine"]["state"] == "up"


def test_a_signed_in_caller_gets_the_checks_while_the_database_that_knows_them_is_down(
    client, staff, healthy, monkeypatch
):
    """The session and the user live in the database: asking who is calling must not turn the
    answer into an error page when it is the database that fails."""
    client.force_login(staff)

    def unreachable(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr("django.contrib.auth.get_user", unreachable)

    status, body = get_health(client)

    assert status == 200 and set(body["checks"]) >= {"database", "queue"}
    assert all("error" not in check for check in body["checks"].values())
