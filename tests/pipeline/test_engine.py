"""The worker reaches its engine over TLS, as it does with the dind sidecar in compose.

A second dockerd listens on 127.0.0.1 with --tlsverify and certificates made here by openssl;
the worker gets only DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (the client half).
"""

import shutil
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from clones.models import Status

from ..support.engines import Engine, make_certificates
from ..support.gitservers import free_port
from ..support.helpers import submit, wait_for_job


@pytest.fixture(scope="module")
def tls_engine():
    """(DOCKER_HOST, client certificate directory) of a TLS-only engine with the git image."""
    certificates = Path(tempfile.mkdtemp(prefix="cs-tls-"))
    server, client = make_certificates(certificates)
    tls = ["--tlsverify", f"--tlscacert={server}/ca.pem", f"--tlscert={server}/cert.pem",
           f"--tlskey={server}/key.pem"]  # fmt: skip
    host = f"tcp://127.0.0.1:{free_port()}"
    client_env = {"DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(client)}
    engine = Engine(settings.CLONES_GIT_IMAGE, host, extra_flags=tls, client_env=client_env)
    yield host, client
    engine.remove()
    shutil.rmtree(certificates, ignore_errors=True)


def test_the_worker_clones_through_a_tls_engine(
    tls_engine, owner_client, start_worker, new_repo, git_daemon
):
    host, client_certs = tls_engine
    repo = new_repo()
    start_worker(
        env={"DOCKER_HOST": host, "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(client_certs)}
    )

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.DONE, job.error
    assert job.commit == repo.head


def test_without_tls_settings_the_engine_refuses(
    tls_engine, owner_client, start_worker, new_repo, git_daemon
):
    host, _ = tls_engine
    repo = new_repo()
    start_worker(
        env={
            "DOCKER_HOST": host,
            "DOCKER_TLS_VERIFY": "",
            "DOCKER_CERT_PATH": "",
            "CLONES_WAIT_RETRIES": "0",  # fail at once instead of waiting for the engine
        }
    )

    job = wait_for_job(submit(owner_client, git_daemon.url(repo.name)))

    assert job.status == Status.FAILED
    assert job.error == "The Docker engine refused: Client sent an HTTP request to an HTTPS server."
