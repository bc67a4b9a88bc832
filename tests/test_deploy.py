"""The web side of a deployment: a secret key kept from the first start, Django's deployment
checks clean for the compose configuration, CSRF on every POST, the admin for staff only."""

import re
import secrets
import subprocess

import pytest
import yaml
from django.test import Client
from django.urls import reverse

from clones.models import CloneJob, Status

from .support import PROJECT_DIR
from .support.helpers import compose_environment, manage


@pytest.mark.parametrize("service", ["web", "worker"])
def test_the_compose_configuration_passes_djangos_deployment_checks(service, tmp_path):
    env = compose_environment(service, {"DJANGO_SECRET_KEY": secrets.token_urlsafe(50)})
    env["CLONES_DATA_DIR"] = str(tmp_path)  # /data exists only in the container
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=env)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "no issues" in result.stdout


def test_without_a_secret_key_one_is_made_on_the_first_start_and_kept(tmp_path):
    show_key = ["shell", "-c", "from django.conf import settings; print(settings.SECRET_KEY)"]
    env = {"CLONES_DATA_DIR": str(tmp_path / "data")}  # not there yet, as on a first start

    first, second = (manage(*show_key, env=env) for _ in range(2))

    assert first.returncode == 0, first.stderr
    key = first.stdout.split()[-1]  # after the shell's own words
    assert len(key) >= 50 and second.stdout.split()[-1] == key
    kept = tmp_path / "data" / "secret_key"
    assert kept.read_text() == key and kept.stat().st_mode & 0o777 == 0o600
    assert not list(kept.parent.glob(".secret_key*"))  # no draft left


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


def test_compose_yaml_is_valid_compose():
    result = subprocess.run(
        ["docker-compose", "-f", "compose.yaml", "config", "--quiet"],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_compose_starts_each_service_once_what_it_needs_is_ready():
    services = yaml.safe_load((PROJECT_DIR / "compose.yaml").read_text())["services"]
    for name, service in services.items():
        for needed, how in service.get("depends_on", {}).items():
            condition = how["condition"]
            assert condition in {"service_healthy", "service_completed_successfully"}, name
            if condition == "service_healthy":
                assert "healthcheck" in services[needed], needed
    app = [
        name
        for name, service in services.items()
        if "DATABASE_URL" in service.get("environment", {})
    ]
    assert set(app) == {"migrate", "web", "worker"}
    assert all("db" in services[name]["depends_on"] for name in app)


def test_compose_keeps_the_engine_behind_tls_with_one_volume_at_two_paths():
    services = yaml.safe_load((PROJECT_DIR / "compose.yaml").read_text())["services"]
    worker, engine = services["worker"], services["docker"]
    env = worker["environment"]
    assert env["DOCKER_HOST"] == "tcp://docker:2376" and env["DOCKER_TLS_VERIFY"] == "1"
    assert engine["environment"]["DOCKER_TLS_CERTDIR"] == "/certs" and "ports" not in engine
    # The worker holds the client half of the certificates only, read-only.
    assert [v for v in worker["volumes"] if "certs" in v] == [
        "docker-certs-client:/certs/client:ro"
    ]
    # One volume, seen at two paths, and the worker told both.
    assert "data:/data" in worker["volumes"] and "data:/var/lib/cloneshelf" in engine["volumes"]
    assert (env["CLONES_DATA_DIR"], env["CLONES_ENGINE_DATA_DIR"]) == (
        "/data",
        "/var/lib/cloneshelf",
    )


def test_compose_offers_submodules_and_lfs_files_on_the_site_the_worker_fetches_them_for():
    """The site's form checks that the egress proxy is on; the worker runs it: both are told."""
    services = yaml.safe_load((PROJECT_DIR / "compose.yaml").read_text())["services"]
    for name in ("web", "worker"):
        env = services[name]["environment"]
        assert (env["CLONES_EGRESS_BIND"], env["CLONES_EGRESS_HOST"]) == ("0.0.0.0", "worker")
