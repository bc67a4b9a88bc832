"""The sshd fixture with this machine's git and ssh, as the service will call them: a correct
host key, an unknown one, a changed one, and a client key the server does not accept."""

import shlex
import subprocess

import pytest

from .support.repos import GIT_ENV, make_tiny_repo
from .support.sshserver import make_key, ssh_command

ALIAS = "git.example.test"  # the name known_hosts holds; the connection goes to 127.0.0.1


@pytest.fixture(scope="module")
def client_key(sshd, tmp_path_factory):
    key = make_key(tmp_path_factory.mktemp("client") / "id_ed25519")
    sshd.authorize((key.parent / "id_ed25519.pub").read_text())
    return key


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return make_tiny_repo(tmp_path_factory.mktemp("served"), "over-ssh")


def clone(sshd, repo, key, known_hosts, destination) -> subprocess.CompletedProcess:
    command = shlex.join(ssh_command(key, known_hosts, ALIAS, sshd.port))
    environment = {**GIT_ENV, "GIT_SSH_COMMAND": command, "GIT_TERMINAL_PROMPT": "0"}
    return subprocess.run(
        ["git", "clone", "--quiet", sshd.url(repo.bare), str(destination)],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_clone_with_the_right_host_key(sshd, client_key, repo, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line(ALIAS))
    result = clone(sshd, repo, client_key, known_hosts, tmp_path / "clone")
    assert result.returncode == 0, result.stderr
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=tmp_path / "clone", capture_output=True, text=True
    )
    assert head.stdout.strip() == repo.head


def test_an_unknown_host_key_is_refused(sshd, client_key, repo, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    result = clone(sshd, repo, client_key, known_hosts, tmp_path / "clone")
    assert result.returncode != 0
    assert f"No ED25519 host key is known for {ALIAS}" in result.stderr
    assert "Host key verification failed." in result.stderr
    assert known_hosts.read_text() == ""  # StrictHostKeyChecking=yes never adds a key


def test_a_changed_host_key_is_refused(sshd, client_key, repo, tmp_path):
    other = make_key(tmp_path / "other_host_key")
    key_type, key_base64 = (tmp_path / "other_host_key.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"{ALIAS} {key_type} {key_base64}\n")
    result = clone(sshd, repo, client_key, known_hosts, tmp_path / "clone")
    assert other.exists() and result.returncode != 0
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in result.stderr
    assert "Host key verification failed." in result.stderr


def test_a_key_the_server_does_not_accept(sshd, client_key, repo, tmp_path):
    stranger = make_key(tmp_path / "stranger")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line(ALIAS))
    result = clone(sshd, repo, stranger, known_hosts, tmp_path / "clone")
    assert result.returncode != 0
    assert "Permission denied (publickey)." in result.stderr


def test_git_shell_refuses_anything_but_git(sshd, client_key, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line(ALIAS))
    command = ssh_command(client_key, known_hosts, ALIAS, sshd.port)
    result = subprocess.run(
        [*command, f"{sshd.user}@{sshd.host}", "id"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert "unrecognized command" in result.stderr
