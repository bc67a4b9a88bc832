"""Credentials kept at rest (a watch's access token): encrypted with Fernet (AES-128-CBC and
HMAC-SHA256, from `cryptography`) under keys kept on the data volume beside the secret key, never
in the database that holds what they encrypt.

The key file holds one key per line, the newest first: every line decrypts, the first
encrypts, so a key is rotated by putting a new one on top (`rotate`) and sealing again.
"""

import os
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
    """A new key file, readable by this user only; two processes starting at once write it
    once (O_EXCL): the loser reads the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(Fernet.generate_key().decode() + "\n")


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
