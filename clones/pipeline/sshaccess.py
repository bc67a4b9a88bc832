"""SSH remotes (ssh://… and user@host:path): the key, the known host keys and the ssh command
that a clone of one uses, in the worker's ref lookup (clones.pipeline.refs) and in the clone's
container (clones.pipeline.cloning) alike.

- The key is the job's owner's (models.SSHKey), made here, its private half opened from the
  vault only for the clone and written, readable by the container's user only, for as long as
  the clone runs.
- ssh reads no configuration (-F /dev/null), offers that key only, never asks anything
  (BatchMode) and checks the host key strictly against the keys kept for the URL's host and port
  (models.KnownHost), matched under HostKeyAlias whatever address it connects to: the one
  urlpolicy.pin checked, so there is no second DNS lookup, and a key that differs is refused.
- A host with no known key is refused, unless CLONES_SSH_TRUST_ON_FIRST_USE is on: then the
  worker's ref lookup takes the key the host offers (StrictHostKeyChecking=accept-new) and
  records it, marked as trusted on first use, and everything after checks against it.
"""

import logging
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from ..models import KnownHost, SSHKey
from ..safety import sshkeys, urlpolicy, vault
from . import paths
from .gitwords import UNREACHABLE, CloneFailed

logger = logging.getLogger(__name__)

KEY_FILE = "ssh-key"
KNOWN_HOSTS_FILE = "ssh-known-hosts"
PASSWD_FILE = "ssh-passwd"  # the container's /etc/passwd: ssh refuses a uid it has no entry for
# How long ssh waits for the TCP connection and the server's first words.
CONNECT_SECONDS = 15

NO_KEY = (
    "SSH URLs are cloned with your SSH key, and you have none: make one on your profile "
    "page, add its public half to the repository as a deploy key, and ask again."
)
UNKNOWN_HOST = (
    "{host}'s SSH host key is not known here, so {host} cannot be told from an impostor. An "
    "admin adds its key under Known hosts, checked against the one its operators publish."
)
CHANGED_HOST = (
    "{host} offered an SSH host key ({fingerprint}) other than the one known here: either its "
    "key has changed or someone is in between. Nothing was fetched. An admin who has checked "
    "the new key replaces the old one under Known hosts."
)
KEY_UNREADABLE = (
    "Your SSH key cannot be decrypted any more (the key it was encrypted with is gone from the "
    "service): make a new one on your profile page and give its public half to the repository."
)
KEY_REFUSED = (
    "{host} did not accept your SSH key ({fingerprint}): add its public half, shown on your "
    "profile page, to the repository as a deploy key, or to an account that may read it."
)


@dataclass(frozen=True)
class Access:
    """What ssh needs to reach one host as one person."""

    private_key: str = field(repr=False)  # OpenSSH format, opened: in no log or traceback
    fingerprint: str  # of the key, for the messages
    known_hosts: str  # the known_hosts lines kept for `alias`; "" for a first use
    alias: str  # HostKeyAlias: KnownHost.pattern of the URL's host and port
    owner_id: int

    @property
    def host(self) -> str:
        return shown(self.alias)


def shown(alias: str) -> str:
    """The host (and a port other than 22) as the messages name it: "[host]:2222" as host:2222."""
    return re.sub(r"^\[(.*)\]:(\d+)$", r"\1:\2", alias)


def make_key(user) -> SSHKey:
    """A new key pair for `user`, replacing theirs if they had one: its private half is gone,
    so every later clone uses the new one, whose public half must be pasted where the old was."""
    name = re.sub(r"[^A-Za-z0-9._@-]", "-", user.get_username())[:64] or "user"
    pair = sshkeys.make_key_pair(name)
    key, _ = SSHKey.objects.update_or_create(
        owner=user,
        defaults={
            "public_line": pair.public_line,
            "fingerprint": pair.fingerprint,
            "sealed_private": vault.seal(pair.private_openssh),
            "created_at": timezone.now(),
        },
    )
    return key


def for_owner(owner_id: int, pinned: urlpolicy.PinnedURL) -> Access | None:
    """The access of `owner_id`'s key to the host `pinned` checked, None if its URL is not an
    SSH URL; CloneFailed, with what to do, when they have no key or the host's key is not known
    (and may not be learnt)."""
    if pinned.scheme != "ssh":
        return None
    key = SSHKey.objects.filter(owner_id=owner_id).first()
    if key is None:
        raise CloneFailed(NO_KEY)
    alias = sshkeys.host_pattern(pinned.host, pinned.port)
    known = "".join(host.line for host in KnownHost.objects.filter(pattern=alias))
    if not known and not settings.CLONES_SSH_TRUST_ON_FIRST_USE:
        raise CloneFailed(UNKNOWN_HOST.format(host=shown(alias)))
    try:
        private_key = vault.open_sealed(key.sealed_private)
    except vault.Unreadable:
        raise CloneFailed(KEY_UNREADABLE) from None
    return Access(private_key, key.fingerprint, known, alias, owner_id)


def command(access: Access, directory: str, learn_host_key: bool = False) -> list[str]:
    """ssh and its options, with the key and known hosts in `directory` (as whoever runs it sees
    it), for git's GIT_SSH_COMMAND or the ref lookup: options only, since git (and the lookup)
    add the port, the user@address to connect to and the command to run there."""
    strict = "accept-new" if learn_host_key else "yes"
    chosen = [
        "IdentitiesOnly=yes",
        "IdentityAgent=none",  # not the worker's agent, if it has one: this key only
        f"UserKnownHostsFile={directory}/{KNOWN_HOSTS_FILE}",
        "GlobalKnownHostsFile=/dev/null",
        f"StrictHostKeyChecking={strict}",
        f"HostKeyAlias={access.alias}",
        "UpdateHostKeys=no",  # the host may not add keys of its own choosing to the file
        "BatchMode=yes",
        f"ConnectTimeout={CONNECT_SECONDS}",
        "ClearAllForwardings=yes",
    ]
    return ["ssh", "-F", "/dev/null", "-i", f"{directory}/{KEY_FILE}", *options(chosen)]


def options(chosen: list[str]) -> list[str]:
    """ssh's `-o name=value` options, one for each of `chosen`."""
    return [argument for option in chosen for argument in ("-o", option)]


def written(
    directory: Path, access: Access, user: tuple[int, int], passwd: bool = False
) -> AbstractContextManager[None]:
    """The key and the known hosts (and, for a container, an /etc/passwd naming `user`) in
    `directory`, readable by `user` only, for as long as the clone runs (paths.private_files)."""
    uid, gid = user
    contents = {KEY_FILE: access.private_key, KNOWN_HOSTS_FILE: access.known_hosts}
    if passwd:
        entries = f"root:x:0:0::/root:/sbin/nologin\ncloneshelf:x:{uid}:{gid}::/tmp:/bin/sh\n"
        contents[PASSWD_FILE] = entries
    return paths.private_files(directory, contents, user)


@contextmanager
def for_lookup(access: Access) -> Iterator[list[str]]:
    """The ssh command for the worker's ref lookup, its files in a private directory while it
    runs. On a first use, the key the host offered is recorded as trusted on first use."""
    first_use = not access.known_hosts
    with (
        tempfile.TemporaryDirectory(prefix="cloneshelf-ssh-") as directory,
        written(Path(directory), access, (os.getuid(), os.getgid())),
    ):
        try:
            yield command(access, directory, learn_host_key=first_use)
        finally:
            if first_use:  # taken at the key exchange, whatever came after it
                _record_first_use(access, Path(directory) / KNOWN_HOSTS_FILE)


def _record_first_use(access: Access, known_hosts: Path) -> None:
    try:
        _record(access, known_hosts)
    except Exception:  # the lookup's own outcome is what the person must hear of
        logger.exception("could not record the SSH host key of %s", access.alias)


def known_host_fields(seen: sshkeys.KnownHost) -> dict[str, str]:
    """A checked known_hosts line as models.KnownHost's fields."""
    return {
        "pattern": seen.pattern,
        "key_type": seen.key_type,
        "key_base64": seen.key_base64,
        "fingerprint": seen.fingerprint,
    }


def _record(access: Access, known_hosts: Path) -> None:
    for line in known_hosts.read_text().splitlines():
        try:
            seen = sshkeys.parse_known_host(line)
        except ValidationError:
            logger.warning("ssh wrote a known_hosts line that is not read here: %r", line[:200])
            continue
        if seen.pattern != access.alias:
            continue
        try:
            with transaction.atomic():  # two first clones at once: the first to record wins
                fields = known_host_fields(seen)
                KnownHost.objects.get_or_create(
                    pattern=fields.pop("pattern"),
                    key_type=fields.pop("key_type"),
                    defaults={
                        **fields,
                        "trusted_on_first_use": True,
                        "added_by_id": access.owner_id,
                    },
                )
        except IntegrityError:
            pass
        logger.warning("SSH host %s trusted on first use: %s", seen.pattern, seen.fingerprint)


# ssh's own words (OpenSSH 9), on standard error.
CHANGED = re.compile(
    r"REMOTE HOST IDENTIFICATION HAS CHANGED.*?key sent by the remote host is\s+(SHA256:[\w+/=]+)"
    r"|Host key for \S+ has changed",
    re.S,
)
UNKNOWN = re.compile(r"No \S+ host key is known for|Host key verification failed")
REFUSED = re.compile(r"Permission denied \((publickey|[^)]*publickey[^)]*)\)")
NO_CONNECTION = re.compile(
    r"ssh: connect to host \S+ port \d+: "
    r"(Connection refused|Connection timed out|No route to host|Network is unreachable)"
)


def explained(output: str, access: Access) -> str | None:
    """ssh's failure in `output` (git's, or the ref lookup's) as a message the person can act
    on; None when ssh did not fail for its host key or the person's key."""
    if changed := CHANGED.search(output):
        fingerprint = changed.group(1) or "a different key"
        return CHANGED_HOST.format(host=access.host, fingerprint=fingerprint)
    if UNKNOWN.search(output):
        return UNKNOWN_HOST.format(host=access.host)
    if REFUSED.search(output):
        return KEY_REFUSED.format(host=access.host, fingerprint=access.fingerprint)
    if NO_CONNECTION.search(output):
        return UNREACHABLE.format(host=access.host)
    return None
