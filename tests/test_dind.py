"""The seed's real topology: the worker drives a docker:dind engine over TLS, for real.

compose.yaml runs the engine as `docker:dind` with client-certificate TLS, and mounts the one
data volume at /data in the worker and at /var/lib/cloneshelf in the engine. Here the engine is
a dockerd in a container of the shared test engine (the image: tests/support/dind_image.py),
listening on 127.0.0.1 with --tlsverify. The test's data directory is bind-mounted into it at
/var/lib/cloneshelf, and its own path does not exist in there: a clone lands where the worker
reads it only if the worker hands the engine the engine's path (CLONES_ENGINE_DATA_DIR).
"""

import os
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from clones.models import KnownHost, Status
from clones.pipeline import engine, sshaccess
from clones.safety import sshkeys

from .support.dind_image import ensure_image
from .support.engines import (
    ContainedEngine,
    engine_events,
    make_certificates,
    remove_abandoned_engines,
)
from .support.gitservers import free_port
from .support.helpers import assert_is_clean_checkout, download, submit, wait_for_job
from .support.repos import make_tiny_repo

ENGINE_DATA_DIR = "/var/lib/cloneshelf"  # the data volume as the engine sees it, as in compose


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> tuple[Path, Path]:
    """(server, client) certificate directories, both signed by one throwaway CA."""
    return make_certificates(tmp_path_factory.mktemp("dind-certs"))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """The data volume as the worker sees it (compose's /data)."""
    return tmp_path_factory.mktemp("dind-data")


@pytest.fixture(scope="module")
def dind(certificates, data_dir):
    """A TLS-only engine in a container, with the git image, seeing data_dir at ENGINE_DATA_DIR;
    removed afterwards with its volume and whatever its containers left on this machine."""
    remove_abandoned_engines()  # of a test process killed before its finalizers ran
    server, client = certificates
    contained = ContainedEngine(
        django_settings.CLONES_GIT_IMAGE,
        dind_image=ensure_image(),
        host=f"tcp://127.0.0.1:{free_port()}",
        server_certs=server,
        client_env={"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(client)},
        mounts={data_dir: ENGINE_DATA_DIR},
    )
    yield contained
    contained.remove()


@pytest.fixture
def worker_env(dind, certificates, data_dir, settings) -> dict[str, str]:
    """What compose gives the worker; the test process (web) reads the same data directory."""
    settings.CLONES_DATA_DIR = data_dir
    settings.MEDIA_ROOT = data_dir / "archives"
    return {
        "DOCKER_HOST": dind.host,
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(certificates[1]),
        "CLONES_DATA_DIR": str(data_dir),
        "CLONES_ENGINE_DATA_DIR": ENGINE_DATA_DIR,
        "CLONES_NETWORK": "host",
    }


def in_engine_container(dind: ContainedEngine, test: str, path: str) -> bool:
    """Whether `test -<test> path` holds in the engine's own filesystem."""
    return dind.exec("sh", "-c", f'test -{test} "$1"', "sh", path).returncode == 0


def test_the_worker_clones_through_a_dind_engine_that_sees_the_data_elsewhere(
    dind, worker_env, data_dir, owner_client, start_worker, new_repo, git_http, tmp_path
):
    assert in_engine_container(dind, "d", ENGINE_DATA_DIR)
    assert not in_engine_container(dind, "e", str(data_dir))  # the worker's path means nothing
    repo = new_repo()
    since = time.time()
    start_worker(env=worker_env)

    job = wait_for_job(submit(owner_client, git_http.url(repo.name)))

    assert job.status == Status.DONE, job.error
    assert_is_clean_checkout(download(owner_client, job, tmp_path), repo.head)
    assert (data_dir / "archives" / job.archive.name).is_file()
    assert not (data_dir / "jobs" / str(job.id)).exists()
    # The clone container ran in the engine in the container, and nowhere else.
    label = f"{engine.JOB_LABEL}={job.id}"
    assert {"create", "start", "die", "destroy"} <= set(dind.events(label, since))
    assert dind.containers(label) == []
    assert engine_events(dict(os.environ), label, since) == []  # the shared engine's


def test_given_the_workers_path_the_dind_engine_finds_no_job_directory(
    worker_env, data_dir, owner_client, start_worker, new_repo, git_http
):
    """The control: the same set-up without translation fails, as it would in compose."""
    repo = new_repo()
    start_worker(env={**worker_env, "CLONES_ENGINE_DATA_DIR": str(data_dir)})

    job = wait_for_job(submit(owner_client, git_http.url(repo.name)))

    assert job.status == Status.FAILED
    assert "bind source path does not exist" in job.error


def docker_cli(host: str, *tls: str, home: Path) -> subprocess.CompletedProcess:
    """`docker version` against `host` with only the TLS options given: no DOCKER_* settings,
    and an empty configuration directory (the CLI would take ~/.docker/cert.pem)."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("DOCKER_")}
    return subprocess.run(
        ["docker", "--config", str(home), "-H", host, *tls, "version"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip


def test_the_dind_engine_serves_only_clients_with_its_certificate(dind, certificates, tmp_path):
    client = certificates[1]
    ca = f"--tlscacert={client}/ca.pem"
    stranger = make_certificates(tmp_path)[1]  # a client certificate from another CA

    plain = docker_cli(dind.host, home=tmp_path)
    no_certificate = docker_cli(dind.host, "--tlsverify", ca, home=tmp_path)
    wrong_certificate = docker_cli(
        dind.host, "--tlsverify", ca, f"--tlscert={stranger}/cert.pem",
        f"--tlskey={stranger}/key.pem", home=tmp_path,
    )  # fmt: skip
    ours = docker_cli(
        dind.host, "--tlsverify", ca, f"--tlscert={client}/cert.pem",
        f"--tlskey={client}/key.pem", home=tmp_path,
    )  # fmt: skip

    assert plain.returncode != 0
    assert "Client sent an HTTP request to an HTTPS server." in plain.stderr
    for refused in [no_certificate, wrong_certificate]:
        assert refused.returncode != 0
        assert "remote error: tls: bad certificate" in refused.stderr  # the engine's TLS alert
    assert ours.returncode == 0, ours.stderr


def test_an_ssh_clone_through_the_dind_engine_gets_its_files_at_the_engines_path(
    dind, worker_env, owner, owner_client, start_worker, sshd, settings, tmp_path
):
    """The key, the known hosts and the /etc/passwd ssh needs are files in the job directory,
    mounted by the engine's path too: the worker's lookup and the container's clone both log in."""
    settings.CLONES_ALLOWED_SCHEMES = [*settings.CLONES_ALLOWED_SCHEMES, "ssh"]
    settings.CLONES_ALLOWED_PORTS = {**settings.CLONES_ALLOWED_PORTS, "ssh": None}
    sshd.authorize(sshaccess.make_key(owner).public_line)  # sealed under the data volume's key
    seen = sshkeys.parse_known_host(sshd.known_hosts_line())
    KnownHost.objects.create(
        **sshaccess.known_host_fields(seen),
    )
    repo = make_tiny_repo(tmp_path, "dind-over-ssh")
    start_worker(
        env={
            **worker_env,
            "CLONES_ALLOWED_SCHEMES": "https,http,git,ssh",
            "CLONES_ALLOWED_PORTS": "https:*,http:*,git:*,ssh:*",
        }
    )

    job = wait_for_job(submit(owner_client, sshd.url(repo.bare)))

    assert job.status == Status.DONE, job.error
    assert_is_clean_checkout(download(owner_client, job, tmp_path), repo.head)
