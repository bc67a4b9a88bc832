"""Which repository URLs and refs we accept, each refusal with its own reason.

Everything here runs before a job row exists, so bad input never reaches the queue.
"""

import ipaddress
import re
import socket
from urllib.parse import SplitResult, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

MAX_URL_LENGTH = 2048
MAX_REF_LENGTH = 255
SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>(?!//)[^\s]*)$")
UNSAFE_CHARS = re.compile(r"[\s\x00-\x1f\x7f]")


def check_url(url: str) -> str:
    """Return the URL stripped of surrounding spaces, or raise ValidationError saying why not."""
    url = url.strip()
    if not url:
        raise ValidationError("Enter the URL of a git repository.")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if UNSAFE_CHARS.search(url):
        raise ValidationError("The URL contains spaces or control characters.")
    if url.startswith("-"):
        raise ValidationError("The URL cannot start with '-'.")
    _refuse_local_and_ssh(url)
    parts = _split(url)
    if not parts.scheme or not parts.netloc:
        raise ValidationError("Enter a full URL, such as https://github.com/owner/repo.git.")
    scheme = parts.scheme.lower()
    if scheme not in settings.CLONES_ALLOWED_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in settings.CLONES_ALLOWED_SCHEMES)
        raise ValidationError(f"{scheme}:// URLs are not accepted here; use {allowed}.")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(
            "Remove the user name or password from the URL: credentials in URLs end up in "
            "logs and history."
        )
    _check_host(parts)
    return url


def _refuse_local_and_ssh(url: str) -> None:
    lowered = url.lower()
    if lowered.startswith("file:") or url.startswith(("/", ".", "~", "\\")):
        raise ValidationError(
            "Local paths and file:// URLs are not accepted: give the URL of a git server."
        )
    if re.match(r"^[a-z][a-z0-9+.-]*::", lowered):
        raise ValidationError("Remote-helper URLs (transport::address) are not accepted.")
    ssh_host_path = _ssh_host_and_path(url)
    if ssh_host_path:
        host, path = ssh_host_path
        https = f"https://{host}/{path.lstrip('/')}" if host and path else ""
        hint = f" Try {https}" if https else ""
        raise ValidationError(
            f"SSH URLs need keys we don't hold; use the repository's https URL instead.{hint}"
        )


def _ssh_host_and_path(url: str) -> tuple[str, str] | None:
    """(host, path) for ssh://… and scp-style user@host:path URLs, None for anything else."""
    lowered = url.lower()
    if lowered.startswith(("ssh://", "git+ssh://", "ssh+git://")):
        parts = _split(url)
        return parts.hostname or "", parts.path
    match = SCP_LIKE.match(url)
    if match and "://" not in url:
        return match["host"], match["path"]
    return None


def _split(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:  # e.g. an unclosed or invalid [IPv6] host
        raise ValidationError("The URL's host name is not valid.") from None


def _check_host(parts: SplitResult) -> None:
    host = parts.hostname
    if not host:
        raise ValidationError("The URL has no host name.")
    try:
        port = parts.port
    except ValueError:
        raise ValidationError("The URL's port is not a number between 0 and 65535.") from None
    if settings.CLONES_ALLOW_PRIVATE_NETWORKS:
        return
    for address in resolve(host, port):
        if not address.is_global:
            raise ValidationError(
                f"{host} resolves to {address}, a private or reserved address; "
                "only public git servers can be cloned."
            )


def resolve(host: str, port: int | None) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = socket.getaddrinfo(host, port or 443, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise ValidationError(f"The host {host} could not be found.") from None
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


def check_ref(ref: str) -> str:
    """A branch, tag or full commit SHA, by git's rules for ref names (git check-ref-format)."""
    ref = ref.strip()
    if not ref:
        return ""
    if re.fullmatch(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}", ref):
        return ref.lower()  # a commit: git names objects in lower case
    if UNSAFE_CHARS.search(ref):
        raise ValidationError("A branch or tag name cannot contain spaces or control characters.")
    if ref.startswith("-"):
        raise ValidationError("A branch or tag name cannot start with '-'.")
    if len(ref) > MAX_REF_LENGTH:
        raise ValidationError(f"A branch or tag name is at most {MAX_REF_LENGTH} characters.")
    if (
        re.search(r"[~^:?*\[\\]|\.\.|@\{|//", ref)
        or ref.startswith("/")
        or ref.endswith(("/", ".", ".lock"))
        or ref == "@"
    ):
        raise ValidationError(f"'{ref}' is not a valid branch or tag name.")
    return ref
