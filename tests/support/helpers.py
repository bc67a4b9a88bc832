"""What many tests do with a job: submit it through the form, wait, download, check."""

import hashlib
import json
import re
import subprocess
import sys
import tarfile
import time
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone
from django_q.models import Schedule
from django_q.scheduler import scheduler

from clones import jobs, tasks
from clones.models import CloneJob, Status
from clones.pipeline import engine, paths

from . import PROJECT_DIR
from .repos import git

JOB_WAIT_SECONDS = 120
DOCKERFILE = PROJECT_DIR / "Dockerfile"


def web_server_command(port: int) -> list[str]:
    """The site's web server as production starts it: the image's command (compose runs it as
    well), listening on a loopback port instead, run by this Python."""
    image_command = re.search(r"^CMD (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)[1]
    command = json.loads(image_command)
    assert command[0] == "gunicorn", command
    listen = {"0.0.0.0:8000": f"127.0.0.1:{port}"}
    return [sys.executable, "-m", "gunicorn", *(listen.get(arg, arg) for arg in command[1:])]


def submit(client, url: str, ref: str = "", **options) -> CloneJob:
    """Through the form; `options` are its other fields (history, depth, archive_format)."""
    response = client.post(reverse("clones:new"), {"url": url, "ref": ref, **options})
    assert response.status_code == 302, response.content.decode()
    job = CloneJob.objects.latest("created_at")
    assert response["Location"] == job.get_absolute_url()
    return job


def run_job(owner, url: str, ref: str = "", **options) -> CloneJob:
    """Submit a job and run its task in this process, as a worker would; the job, ended."""
    job = jobs.submit(owner, url, ref, **options)
    tasks.run_clone_job(str(job.id))
    job.refresh_from_db()
    return job


def unpacked(job: CloneJob, into: Path) -> Path:
    """The job's tar archive unpacked into `into`; its top-level folder."""
    with tarfile.open(job.archive.path) as tar:
        tar.extractall(into, filter="tar")
    return into / job.top_level


def make_done_job(owner, content: bytes, name: str = "archive.tar") -> CloneJob:
    """A done job whose archive (`content`, a real file in the test storage) is ready to
    download, made without a worker."""
    stored = default_storage.save(name, ContentFile(content))
    now = timezone.now()
    return CloneJob.objects.create(
        owner=owner,
        url="https://example.com/team/widget.git",
        commit="2ac8988" + "0" * 33,
        status=Status.DONE,
        archive=stored,
        archive_size=len(content),
        archive_sha256=hashlib.sha256(content).hexdigest(),
        started_at=now,
        finished_at=now,
        expires_at=now + timedelta(days=7),
    )


def make_job(owner, url="https://example.com/team/app.git", ago=timedelta(hours=1), **fields):
    """A job submitted `ago` before now, in any state, made without a worker; `seconds` (if
    given) from its start to its finish."""
    seconds = fields.pop("seconds", None)
    created = timezone.now() - ago
    if seconds is not None:
        fields.update(started_at=created, finished_at=created + timedelta(seconds=seconds))
    return CloneJob.objects.create(owner=owner, url=url, created_at=created, **fields)


def download(client, job: CloneJob, into: Path) -> Path:
    """Fetch the archive through the view, check it, extract it; the extracted directory."""
    response = client.get(reverse("clones:download", args=[job.id]))
    assert response.status_code == 200
    archive = into / job.download_filename
    # Streamed to disk, not joined in memory: some archives are hundreds of MiB.
    digest, size = hashlib.sha256(), 0
    with archive.open("wb") as file:
        for chunk in response.streaming_content:
            digest.update(chunk)
            size += len(chunk)
            file.write(chunk)
    assert int(response["Content-Length"]) == size == job.archive_size
    assert digest.hexdigest() == job.archive_sha256
    assert f'filename="{job.download_filename}"' in response["Content-Disposition"]
    subprocess.run(["tar", "-xf", archive, "-C", into], check=True)
    return into / job.top_level


def assert_left_nothing_behind(job: CloneJob) -> None:
    assert not paths.job_dir(job.id).exists()
    assert engine.remove_job_containers(str(job.id)) == 0


def containers_of(job: CloneJob) -> list[str]:
    """Ids of the job's clone containers on the test engine, running or not."""
    with engine.connected() as client:
        label = f"{engine.JOB_LABEL}={job.id}"
        found = client.containers.list(all=True, filters={"label": label}, ignore_removed=True)
        return [container.id for container in found]


def assert_handed_back(job: CloneJob) -> None:
    """A stopping worker gave the job back to the queue, untried, and left nothing behind."""
    job.refresh_from_db()
    assert job.status == Status.QUEUED
    assert job.phase == "Queued again: its worker was stopped."
    assert job.attempts == 0
    assert not containers_of(job)
    assert not paths.job_dir(job.id).exists()


def assert_is_clean_checkout(checkout: Path, commit: str) -> None:
    git("fsck", "--strict", cwd=checkout)
    assert git("rev-parse", "HEAD", cwd=checkout) == commit
    assert git("status", "--porcelain", cwd=checkout) == ""


def wait_for_job(job: CloneJob, timeout: float = JOB_WAIT_SECONDS) -> CloneJob:
    """Poll until the job has left queued/running; fail the test if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if not job.is_active:
            return job
        time.sleep(0.2)
    pytest.fail(f"job {job.id} still {job.status} ({job.phase}) after {timeout} s")


def refreshed(job: CloneJob) -> CloneJob:
    job.refresh_from_db()
    return job


def wait_until(
    condition, timeout: float = JOB_WAIT_SECONDS, interval: float = 0.2, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not met after {timeout} s")
        time.sleep(interval)


def small_disk(directory: Path, size: str) -> list[str]:
    """A command prefix: run in a mount namespace where `directory` is a tmpfs of `size`."""
    directory.mkdir(parents=True, exist_ok=True)
    mount_then_run = f'mount -t tmpfs -o size={size} tmpfs "{directory}" && exec "$@"'
    return ["unshare", "--mount", "--propagation=private", "sh", "-c", mount_then_run, "small"]


def run_schedule_now(name: str) -> None:
    """Make the schedule due and let django-q2's own scheduler hand it to the workers."""
    Schedule.objects.filter(name=name).update(next_run=timezone.now() - timedelta(seconds=1))
    scheduler()


def compose_environment(service: str, given: dict[str, str]) -> dict[str, str]:
    """A compose service's environment, with ${VAR}, ${VAR:-default} and ${VAR:?error}
    filled in from `given` as `docker compose` would."""
    compose = yaml.safe_load((PROJECT_DIR / "compose.yaml").read_text())

    def fill(match: re.Match) -> str:
        name, operator, default = match["name"], match["operator"], match["default"] or ""
        if given.get(name):
            return given[name]
        assert operator != ":?", f"compose needs {name}"
        return default

    pattern = re.compile(r"\$\{(?P<name>\w+)(?:(?P<operator>:-|:\?)(?P<default>[^}]*))?\}")
    environment = compose["services"][service]["environment"]
    return {key: pattern.sub(fill, str(value)) for key, value in environment.items()}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT_DIR,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "project.settings", **env},
        capture_output=True,
        text=True,
        check=False,
    )
