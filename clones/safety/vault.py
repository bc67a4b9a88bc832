"""Credentials kept at rest (a watch's access token): encrypted with Fernet (AES-128-CBC and
HMAC-SHA256, from `cryptography`) under keys kept on the data volume beside the secret key, never
in the database that holds what they encrypt.

The key file holds one key per line, the newest first: every line decrypts, the first
encrypts, so a key is rotated by putting a new one on top (`rotate`) and sealing again.
"""

import os
import tempfile
from contextlib import suppress
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

KEY_FILE = "credential_keys"


class Unreadable(Exception):
    """A sealed credential that none of the keys opens: its key file was lost or replaced."""


def _key_file() -> Path:
    return settings.CLONES_DATA_DIR / KEY_FILE


def _keys() -> list[bytes]:
    path = _key_file()
    if not path.exists():
        _write_first_key(path)
    return [line.encode() for line in path.read_text().split()]


def _write_first_key(path: Path) -> None:
    """A new key file, readable by this user only. Written whole under another name, then
    linked to its own: a reader never sees it empty or half written, and two processes starting
    at once write it once (the second link fails): the loser reads the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        _link_new(path, [Fernet.generate_key()], os.link)


def _link_new(path: Path, keys: list[bytes], put) -> None:
    """Write `keys` to a private temporary file beside `path`, then `put(temporary, path)`."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{KEY_FILE}-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as file:
            file.write("".join(key.decode() + "\n" for key in keys))
            file.flush()
            os.fsync(file.fileno())
        put(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def rotate(forget_old: bool = False) -> int:
    """Put a new key on top of the key file and seal every watch's credential again with it;
    how many were sealed again. Safe while the service runs: every key still opens what it
    sealed. `forget_old` then drops the older keys (a key that leaked): a credential sealed
    with one of them after its watch was sealed again here (a watch made during the rotation)
    could not be read any more, and its check would ask for it again."""
    from ..models import Watch

    path = _key_file()
    _link_new(path, [Fernet.generate_key(), *_keys()], os.replace)
    fernet = _fernet()
    resealed = 0
    for watch in Watch.objects.exclude(credential="").only("pk", "credential"):
        try:
            sealed = fernet.rotate(watch.credential.encode()).decode()
        except InvalidToken:
            continue  # already unreadable: its check says so, and its owner gives it again
        resealed += Watch.objects.filter(pk=watch.pk, credential=watch.credential).update(
            credential=sealed
        )
    if forget_old:
        _link_new(path, _keys()[:1], os.replace)
    return resealed


def _fernet() -> MultiFernet:
    return MultiFernet([Fernet(key) for key in _keys()])


def seal(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode()


def open_sealed(sealed: str) -> str:
    try:
        return _fernet().decrypt(sealed.encode()).decode()
    except InvalidToken:
        raise Unreadable(
            "The stored access token cannot be decrypted: its key is not in "
            f"{KEY_FILE} on the data volume any more. Give the token again."
        ) from None
