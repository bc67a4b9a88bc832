"""The web side of a deployment: settings that refuse to run insecurely, Django's deployment
checks clean for the compose configuration, CSRF on every POST, the admin for staff only."""

import re
import secrets
import subprocess
import sys

import pytest
import yaml
from django.test import Client
from django.urls import reverse

from clones.models import CloneJob, Status

from .conftest import PROJECT_DIR


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


@pytest.mark.parametrize("service", ["web", "worker"])
def test_the_compose_configuration_passes_djangos_deployment_checks(service, tmp_path):
    env = compose_environment(service, {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)})
    env["CLONES_DATA_DIR"] = str(tmp_path)  # /data exists only in the container
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_it_refuses_to_start_without_a_secret_key_and_says_why(tmp_path):
    result = manage("check", env={"CLONES_DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


@pytest.fixture
def csrf_client(owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    return client


def test_every_post_needs_the_csrf_token(csrf_client, owner):
    job = CloneJob.objects.create(owner=owner, url="https://127.0.0.1/a.git", status=Status.FAILED)
    for url in [reverse("clones:new"), reverse("clones:again", args=[job.id])]:
        assert csrf_client.post(url, {"url": "https://127.0.0.1/a.git"}).status_code == 403
    assert CloneJob.objects.count() == 1


def test_the_form_carries_its_csrf_token(csrf_client):
    page = csrf_client.get(reverse("clones:new")).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)[1]
    response = csrf_client.post(
        reverse("clones:new"), {"url": "https://127.0.0.1/a.git", "csrfmiddlewaretoken": token}
    )
    assert response.status_code == 302


def test_the_admin_is_for_staff_only(client, owner, staff):
    jobs_admin = reverse("admin:clones_clonejob_changelist")
    client.force_login(owner)
    response = client.get(jobs_admin)
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    client.force_login(staff)
    assert client.get(jobs_admin).status_code == 200
