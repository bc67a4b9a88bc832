"""The worker reaches its engine over TLS, as it does with the dind sidecar in compose.

A second dockerd listens on 127.0.0.1 with --tlsverify and certificates made here by openssl;
the worker gets only DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH (the client half).
"""

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from django.conf import settings

from clones.models import Status

from .gitservers import free_port
from .helpers import submit, wait_for_job

DOCKERD_FLAGS = ["--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false"]


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(directory: Path) -> tuple[Path, Path]:
    """A CA, a server certificate for 127.0.0.1, a client certificate; (server dir, client dir)."""
    server, client = directory / "server", directory / "client"
    server.mkdir()
    client.mkdir()
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=test-ca",
            "-keyout", "ca-key.pem", "-out", "ca.pem", cwd=directory)  # fmt: skip
    for name, usage, extra in [
        ("server", "serverAuth", "\nsubjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "clientAuth", ""),
    ]:
        (directory / f"{name}.cnf").write_text(f"extendedKeyUsage={usage}{extra}\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
                "-keyout", f"{name}/key.pem", "-out", f"{name}.csr", cwd=directory)  # fmt: skip
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem",
                "-CAcreateserial", "-days", "1", "-extfile", f"{name}.cnf",
                "-out", f"{name}/cert.pem", cwd=directory)  # fmt: skip
        shutil.copy(directory / "ca.pem", directory / name / "ca.pem")
    return server, client


@pytest.fixture(scope="module")
def tls_engine():
    """(DOCKER_HOST, client certificate directory) of a TLS-only engine with the git image."""
    # Short: containerd's socket path must fit in 108 bytes.
    root = Path(tempfile.mkdtemp(prefix="cs-tls-"))
    server, client = make_certificates(root)
    host = f"tcp://127.0.0.1:{free_port()}"
    # fmt: off
    dockerd = subprocess.Popen(
        ["dockerd", "--host", host, "--tlsverify", f"--tlscacert={server}/ca.pem",
         f"--tlscert={server}/cert.pem", f"--tlskey={server}/key.pem",
         "--data-root", f"{root}/docker", "--exec-root", f"{root}/exec",
         "--pidfile", f"{root}/dockerd.pid", *DOCKERD_FLAGS],
        stdout=subprocess.DEVNULL, stderr=open(root / "dockerd.log", "wb"),  # noqa: SIM115
        start_new_session=True,
    )
    # fmt: on
    client_env = {
        **os.environ,
        "DOCKER_HOST": host,
        "DOCKER_TLS_VERIFY": "1",
        "DOCKER_CERT_PATH": str(client),
    }
    try:
        wait_for_engine(client_env)
        copy_image(settings.CLONES_GIT_IMAGE, client_env)
        yield host, client
    finally:
        dockerd.terminate()
        dockerd.wait(timeout=30)
        subprocess.run(["umount", "-R", f"{root}/exec"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


def wait_for_engine(env: dict, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while subprocess.run(["docker", "info"], env=env, capture_output=True).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail("the TLS engine did not start")
        time.sleep(0.3)


def copy_image(image: str, target_env: dict) -> None:
    saved = subprocess.run(["docker", "save", image], capture_output=True, check=True).stdout
    subprocess.run(["docker", "load"], input=saved, env=target_env, capture_output=True, check=True)


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
