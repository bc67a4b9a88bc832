"""Debian's sshd on 127.0.0.1 for the tests: a git server reached as ssh://USER@127.0.0.1:PORT/ABS.

It runs as the current user (root on CI) with a host key, a config and an authorized_keys file of
its own, so it never reads /etc/ssh. Every login runs git-shell, which only lets git's own commands
(git-upload-pack, git-receive-pack) through, on repositories named by absolute path.
"""

import getpass
import os
import subprocess
from pathlib import Path

from .gitservers import free_port, wait_for_port

# The host SSH URLs in tests name (the tests' stubbed DNS: 127.0.0.1), so that known host keys
# are matched under a name while ssh connects to the address.
SSH_HOST = "git.example.test"
SSHD = "/usr/sbin/sshd"  # sshd refuses to start unless run by its absolute path (it re-executes)
# With privilege separation (always on in OpenSSH 9) sshd chroots its unprivileged child here.
PRIVSEP_DIR = Path("/run/sshd")


def ensure_sshd() -> None:
    """Install Debian's openssh-server when this machine lacks it (.ci/run installs it too)."""
    if Path(SSHD).exists():
        return
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=environment)
    install = ["apt-get", "install", "-y", "-qq", "openssh-server"]
    subprocess.run(install, check=True, env=environment, stdout=subprocess.DEVNULL)


def make_key(path: Path, comment: str = "cloneshelf-test") -> Path:
    """An Ed25519 key pair at `path` and `path`.pub, with no passphrase; returns `path`."""
    command = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]
    subprocess.run(command, check=True)
    return path


def ssh_command(key: Path, known_hosts: Path, alias: str, port: int) -> list[str]:
    """The client command the service uses: no config file, only this key, only these known hosts,
    never asking anything, host keys matched under `alias` whatever address is connected to."""
    return [
        "ssh",
        "-F",
        "/dev/null",
        "-i",
        str(key),
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        f"UserKnownHostsFile={known_hosts}",
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        f"HostKeyAlias={alias}",
        "-o",
        "BatchMode=yes",
        "-p",
        str(port),
    ]


class SSHServer:
    """sshd serving git repositories to the public keys in `authorized` (see authorize)."""

    host = "127.0.0.1"  # only ever loopback

    def __init__(self, directory: Path):
        ensure_sshd()
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.user = getpass.getuser()
        self.port = free_port(self.host)
        self.host_key = make_key(directory / "host_ed25519", comment="cloneshelf-test-host")
        self.authorized = directory / "authorized_keys"
        self.authorized.touch(mode=0o600)
        self.log = directory / "sshd.log"
        self.config = directory / "sshd_config"
        self.config.write_text(self._config())
        self.process = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )
        wait_for_port(self.port, self.host)

    def _config(self) -> str:
        # ForceCommand runs through the user's shell, which expands $SSH_ORIGINAL_COMMAND: the
        # "git-upload-pack '/abs/path.git'" the client asked for, checked again by git-shell.
        lines = [
            f"ListenAddress {self.host}:{self.port}",
            f"HostKey {self.host_key}",
            f"PidFile {self.directory / 'sshd.pid'}",
            f"AuthorizedKeysFile {self.authorized}",
            f"AllowUsers {self.user}",
            "PermitRootLogin prohibit-password",
            "AuthenticationMethods publickey",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",  # the test's files live in pytest's tmp dirs, whatever their modes
            "UseDNS no",
            "PermitTTY no",
            "AllowTcpForwarding no",
            "AllowAgentForwarding no",
            "X11Forwarding no",
            "LogLevel VERBOSE",
            'ForceCommand git-shell -c "$SSH_ORIGINAL_COMMAND"',
        ]
        return "\n".join(lines) + "\n"

    def authorize(self, public_key_line: str) -> None:
        """Let the key in `public_key_line` (as in a .pub file) log in."""
        with self.authorized.open("a") as authorized:
            authorized.write(public_key_line.strip() + "\n")

    def known_hosts_line(self, alias: str | None = None) -> str:
        """The known_hosts line for this server's host key, under `alias` (what HostKeyAlias
        names) or else [127.0.0.1]:PORT."""
        key_type, key_base64 = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"{alias or f'[{self.host}]:{self.port}'} {key_type} {key_base64}\n"

    def url(self, repository: Path) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}{repository.resolve()}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
