"""SSH keys for cloning over SSH: the users' own key pairs, which the service makes, and the
known_hosts lines an admin enters, which it checks before ssh ever reads them.

Pure functions only: where the keys are kept (the private half sealed with clones.safety.vault)
and who may see them is the models' business.
"""

import base64
import hashlib
import ipaddress
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import ValidationError

COMMENT_PREFIX = "cloneshelf:"
# What a key's name may hold: it ends up as the comment of a public key line, which people paste
# into a git host's form, so nothing that would split the line or look like another field.
KEY_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
# Host key types ssh accepts in known_hosts that we take: no DSA (OpenSSH dropped it), no
# certificates or security-key types (a server's host key is never one of those in practice).
HOST_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
)
DEFAULT_PORT = 22
HOST_NAME = re.compile(r"(?=.{1,253}$)(?!-)[a-z0-9-]{1,63}(?<!-)(?:\.(?!-)[a-z0-9-]{1,63}(?<!-))*")
BRACKETED = re.compile(r"\[(?P<host>[^\]]+)\]:(?P<port>[0-9]{1,5})")
MAX_LINE_LENGTH = 8192  # an RSA-16384 key line is about 2,800 characters


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str  # "-----BEGIN OPENSSH PRIVATE KEY-----...", unencrypted: seal it
    public_line: str  # "ssh-ed25519 AAAA... cloneshelf:<name>", to paste as a deploy key
    fingerprint: str  # "SHA256:...", as `ssh-keygen -lf` prints it


@dataclass(frozen=True)
class KnownHost:
    host: str  # lower-case host name, or an IP address
    port: int
    key_type: str
    key_base64: str

    @property
    def pattern(self) -> str:
        return host_pattern(self.host, self.port)

    @property
    def line(self) -> str:
        return f"{self.pattern} {self.key_type} {self.key_base64}\n"

    @property
    def fingerprint(self) -> str:
        return fingerprint(base64.b64decode(self.key_base64))


def host_pattern(host: str, port: int) -> str:
    """The host as ssh looks it up in known_hosts: bare for port 22, else [host]:port. The same
    string is what HostKeyAlias must name, since ssh adds no port to an alias."""
    return host if port == DEFAULT_PORT else f"[{host}]:{port}"


def make_key_pair(name: str) -> KeyPair:
    """A new Ed25519 key pair whose public line carries `name`, so a git host's list of deploy
    keys says which cloneshelf key each is."""
    if not KEY_NAME.fullmatch(name):
        raise ValidationError(
            "A key name is 1 to 64 letters, digits, '.', '_', '@' or '-', with no spaces."
        )
    private_key = Ed25519PrivateKey.generate()
    private_openssh = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    ).decode()
    public_openssh = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    key_blob = base64.b64decode(public_openssh.split()[1])
    public_line = f"{public_openssh} {COMMENT_PREFIX}{name}"
    return KeyPair(private_openssh, public_line, fingerprint(key_blob))


def fingerprint(key_blob: bytes) -> str:
    """SHA256 of the key's wire form, in unpadded base64: what ssh-keygen -l and ssh print."""
    digest = hashlib.sha256(key_blob).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def parse_known_host(line: str) -> KnownHost:
    """One known_hosts line, "HOST KEYTYPE BASE64" or "[HOST]:PORT KEYTYPE BASE64" (a comment
    after it is dropped), or ValidationError saying what is wrong with it. Only one plain host
    per line: no markers, hashed names, lists or wildcards, so the admin page shows exactly which
    host each key is trusted for."""
    line = line.strip()
    if len(line) > MAX_LINE_LENGTH:
        raise ValidationError(f"The line is longer than {MAX_LINE_LENGTH} characters.")
    fields = line.split()
    if len(fields) < 3:
        raise ValidationError("Enter a line of the form: HOST KEYTYPE KEY, as ssh-keyscan prints.")
    host_field, key_type, key_base64 = fields[:3]
    host, port = _host_and_port(host_field)
    _check_key(key_type, key_base64)
    return KnownHost(host, port, key_type, key_base64)


def _host_and_port(host_field: str) -> tuple[str, int]:
    if host_field.startswith("@"):
        raise ValidationError("Markers such as @cert-authority and @revoked are not supported.")
    if host_field.startswith("|"):
        raise ValidationError("Hashed host names are not supported: write the host name.")
    if "," in host_field:
        raise ValidationError("Enter one host per line.")
    if any(char in host_field for char in "*?!"):
        raise ValidationError("Wildcards and negations are not supported: write the host name.")
    host, port = host_field, DEFAULT_PORT
    if bracketed := BRACKETED.fullmatch(host_field):
        host, port = bracketed["host"], int(bracketed["port"])
        if not 1 <= port <= 65535:
            raise ValidationError(f"The port {port} is not between 1 and 65535.")
    return _host(host), port


def _host(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    host = host.lower()
    if not HOST_NAME.fullmatch(host):
        raise ValidationError(f"{host!r} is not a host name or an IP address.")
    return host


def _check_key(key_type: str, key_base64: str) -> None:
    if key_type not in HOST_KEY_TYPES:
        raise ValidationError(
            f"The key type {key_type!r} is not supported: use one of {', '.join(HOST_KEY_TYPES)}."
        )
    try:
        key_blob = base64.b64decode(key_base64, validate=True)
    except ValueError:
        raise ValidationError("The key is not valid base64.") from None
    if _blob_type(key_blob) != key_type:
        raise ValidationError(f"The key is not an {key_type} key, whatever the line says.")
    try:
        serialization.load_ssh_public_key(f"{key_type} {key_base64}".encode())
    except (ValueError, UnsupportedAlgorithm):
        raise ValidationError(f"The key is not a valid {key_type} key.") from None


def _blob_type(key_blob: bytes) -> str | None:
    """The key type a key's wire form starts with (a length-prefixed string), if any."""
    if len(key_blob) < 4:
        return None
    (length,) = struct.unpack(">I", key_blob[:4])
    type_bytes = key_blob[4 : 4 + length]
    if len(type_bytes) != length or not type_bytes.isascii():
        return None
    return type_bytes.decode()
