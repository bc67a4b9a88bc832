"""Users' SSH key pairs and known_hosts lines: what ssh's own tools say of them, and the
sshd fixture accepting a key made here."""

import base64
import shlex
import subprocess

import pytest
from django.core.exceptions import ValidationError

from clones.safety.sshkeys import KnownHost, make_key_pair, parse_known_host

from ..support.repos import GIT_ENV, make_tiny_repo
from ..support.sshserver import make_key, ssh_command


def keygen_fingerprint(public_key_file) -> list[str]:
    """`ssh-keygen -lf` as fields: bits, fingerprint, comment, (type)."""
    result = subprocess.run(
        ["ssh-keygen", "-lf", str(public_key_file)], capture_output=True, text=True, check=True
    )
    return result.stdout.split()


def test_a_key_pair_is_ed25519_with_the_name_as_comment(tmp_path):
    pair = make_key_pair("alice")
    key_type, key_base64, comment = pair.public_line.split()
    assert key_type == "ssh-ed25519"
    assert key_base64.startswith("AAAAC3NzaC1lZDI1NTE5")
    assert comment == "cloneshelf:alice"
    assert pair.private_openssh.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")


def test_ssh_keygen_prints_the_same_fingerprint(tmp_path):
    pair = make_key_pair("alice")
    (tmp_path / "key.pub").write_text(pair.public_line + "\n")
    assert keygen_fingerprint(tmp_path / "key.pub") == [
        "256",
        pair.fingerprint,
        "cloneshelf:alice",
        "(ED25519)",
    ]


def test_ssh_keygen_reads_the_private_half(tmp_path):
    pair = make_key_pair("alice")
    private = tmp_path / "key"
    private.write_text(pair.private_openssh)
    private.chmod(0o600)
    derived = subprocess.run(
        ["ssh-keygen", "-y", "-f", str(private)], capture_output=True, text=True, check=True
    )
    assert derived.stdout.split()[:2] == pair.public_line.split()[:2]


def test_each_key_pair_is_new():
    assert make_key_pair("a").public_line != make_key_pair("a").public_line


@pytest.mark.parametrize("name", ["", "two words", "x" * 65, "new\nline", "é"])
def test_a_key_name_that_would_spoil_the_line_is_refused(name):
    with pytest.raises(ValidationError, match="A key name is 1 to 64"):
        make_key_pair(name)


def test_the_sshd_fixture_accepts_a_key_made_here(sshd, tmp_path):
    pair = make_key_pair("deploy")
    key = tmp_path / "id_ed25519"
    key.write_text(pair.private_openssh)
    key.chmod(0o600)  # ssh ignores a private key others may read
    sshd.authorize(pair.public_line)
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(sshd.known_hosts_line("git.example.test"))
    repo = make_tiny_repo(tmp_path, "deploy")
    command = ssh_command(key, known_hosts, "git.example.test", sshd.port)
    environment = {**GIT_ENV, "GIT_SSH_COMMAND": shlex.join(command)}
    result = subprocess.run(
        ["git", "ls-remote", sshd.url(repo.bare), "refs/heads/main"],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [repo.head, "refs/heads/main"]


def host_key_line(tmp_path, key_type="ed25519") -> tuple[str, str, str]:
    """A real host key's (type, base64, fingerprint) from ssh-keygen."""
    path = tmp_path / f"host_{key_type}"
    subprocess.run(["ssh-keygen", "-q", "-t", key_type, "-N", "", "-f", str(path)], check=True)
    key_type_name, key_base64 = (tmp_path / f"host_{key_type}.pub").read_text().split()[:2]
    return key_type_name, key_base64, keygen_fingerprint(tmp_path / f"host_{key_type}.pub")[1]


@pytest.mark.parametrize("key_type", ["ed25519", "ecdsa", "rsa"])
def test_a_known_hosts_line(tmp_path, key_type):
    type_name, key_base64, expected_fingerprint = host_key_line(tmp_path, key_type)
    known = parse_known_host(f"  Git.Example.COM {type_name} {key_base64} a comment\n")
    assert known == KnownHost("git.example.com", 22, type_name, key_base64)
    assert known.line == f"git.example.com {type_name} {key_base64}\n"
    assert known.fingerprint == expected_fingerprint


def test_a_known_hosts_line_with_a_port_and_an_address(tmp_path):
    type_name, key_base64, _ = host_key_line(tmp_path)
    known = parse_known_host(f"[192.0.2.7]:2222 {type_name} {key_base64}")
    assert (known.host, known.port, known.pattern) == ("192.0.2.7", 2222, "[192.0.2.7]:2222")
    known = parse_known_host(f"[git.example.com]:22 {type_name} {key_base64}")
    assert known.pattern == "git.example.com"


def test_host_key_alias_with_a_port_matches_the_bracketed_line(sshd, tmp_path):
    """ssh adds no port to a HostKeyAlias, so the alias must be the bracketed pattern itself."""
    client = make_key(tmp_path / "client")
    sshd.authorize((tmp_path / "client.pub").read_text())
    type_name, key_base64 = sshd.known_hosts_line().split()[1:3]
    known = parse_known_host(f"[git.example.test]:{sshd.port} {type_name} {key_base64}")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known.line)
    command = ssh_command(client, known_hosts, known.pattern, sshd.port)
    result = subprocess.run(
        [*command, f"{sshd.user}@{sshd.host}", "git-upload-pack '/nonexistent.git'"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "Host key verification failed" not in result.stderr
    assert "does not appear to be a git repository" in result.stderr


def ed25519_base64() -> str:
    public_line = make_key_pair("x").public_line
    return public_line.split()[1]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "Enter a line of the form"),
        ("host.example ssh-ed25519", "Enter a line of the form"),
        ("@cert-authority *.example ssh-ed25519 KEY", "Markers"),
        ("|1|abc=|def= ssh-ed25519 KEY", "Hashed host names"),
        ("a.example,b.example ssh-ed25519 KEY", "one host per line"),
        ("*.example ssh-ed25519 KEY", "Wildcards"),
        ("!bad.example ssh-ed25519 KEY", "Wildcards"),
        ("[host.example]:0 ssh-ed25519 KEY", "not between 1 and 65535"),
        ("[host.example]:70000 ssh-ed25519 KEY", "not between 1 and 65535"),
        ("-oProxyCommand=x ssh-ed25519 KEY", "not a host name"),
        ("host_name.example ssh-ed25519 KEY", "not a host name"),
        ("[host.example]2222 ssh-ed25519 KEY", "not a host name"),
        ("host.example ssh-dss KEY", "key type 'ssh-dss' is not supported"),
        ("host.example ssh-ed25519 not*base64", "not valid base64"),
        ("host.example ssh-rsa KEY", "not an ssh-rsa key"),
        ("host.example ssh-ed25519 " + "x" * 9000, "longer than 8192"),
    ],
)
def test_a_bad_known_hosts_line_is_refused(line, message):
    line = line.replace("KEY", ed25519_base64())
    with pytest.raises(ValidationError, match=message):
        parse_known_host(line)


def test_a_truncated_key_is_refused():
    blob = base64.b64decode(ed25519_base64())
    truncated = base64.b64encode(blob[:-8]).decode()
    with pytest.raises(ValidationError, match="not a valid ssh-ed25519 key"):
        parse_known_host(f"host.example ssh-ed25519 {truncated}")
