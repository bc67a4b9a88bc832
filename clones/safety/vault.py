"""Credentials kept at rest (a watch's access token): encrypted with Fernet (AES-128-CBC and
HMAC-SHA256, from `cryptography`) under keys kept on the data volume beside the secret key, never
in the database that holds what they encrypt.

The key file holds one key per line, the newest first: every line decrypts, the first
encrypts, so a key is rotated by putting a new one on top (`rotate`) and sealing again.
"""

from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

from . import keyfiles

KEY_FILE = "credential_keys"


class Unreadable(Exception):
    """A sealed credential that none of the keys opens: its key file was lost or replaced."""


def _key_file() -> Path:
    return settings.CLONES_DATA_DIR / KEY_FILE


def _keys() -> list[bytes]:
    text = keyfiles.read(_key_file(), first=lambda: _lines([Fernet.generate_key()]))
    return [line.encode() for line in text.split()]


def _lines(keys: list[bytes]) -> str:
    return "".join(key.decode() + "\n" for key in keys)


def rotate(forget_old: bool = False) -> int:
    """Put a new key on top of the key file and seal every watch's credential and every SSH
    key's private half again with it; how many were sealed again. Safe while the service runs:
    every key still opens what it sealed. `forget_old` then drops the older keys (a key that
    leaked): a credential sealed with one of them after its watch was sealed again here (a watch
    made during the rotation) could not be read any more, and its check would ask for it again."""
    from ..models import SSHKey, Watch

    keyfiles.replace(_key_file(), _lines([Fernet.generate_key(), *_keys()]))
    fernet = _fernet()
    resealed = 0
    for model, field in ((Watch, "credential"), (SSHKey, "sealed_private")):
        for row in model.objects.exclude(**{field: ""}).only("pk", field):
            old = getattr(row, field)
            try:
                sealed = fernet.rotate(old.encode()).decode()
            except InvalidToken:
                continue  # already unreadable: its use says so, and its owner gives a new one
            resealed += model.objects.filter(pk=row.pk, **{field: old}).update(**{field: sealed})
    if forget_old:
        keyfiles.replace(_key_file(), _lines(_keys()[:1]))
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
