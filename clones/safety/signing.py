"""The service's signing keys (Ed25519, from `cryptography`): made on first use and kept on the
data volume beside the secret key, in `signing_keys` (or in the file CLONES_SIGNING_KEYS_FILE
names: PEM private keys, PKCS#8, one after the other), the newest first. The newest signs; every
key's public half stays published, so that what an older key signed still verifies after a
rotation (`manage.py rotatesigningkey`).

A key's id is the sha256 of its public key's raw 32 bytes, in hex: anyone can compute it from
the published key, and no two keys share one.
"""

import base64
import hashlib
import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.conf import settings

from .. import verifier
from . import keyfiles

KEY_FILE = "signing_keys"
PEM_END = "-----END PRIVATE KEY-----"


class Unusable(Exception):
    """The signing keys cannot be read; the message says why, for the admin to mend."""


def _private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _keys() -> list[Ed25519PrivateKey]:
    """Every key, the newest first. Unusable if the file cannot be read or holds anything but
    unencrypted Ed25519 keys; one is made on first use only at the data volume's own place (a
    file given in settings and missing is a mistake to tell, not to paper over)."""
    path = _key_file()
    try:
        if settings.CLONES_SIGNING_KEYS_FILE:
            text = path.read_text()
        else:
            text = keyfiles.read(path, first=lambda: _private_pem(Ed25519PrivateKey.generate()))
        blocks = [block + PEM_END for block in text.split(PEM_END) if block.strip()]
        keys = [serialization.load_pem_private_key(block.encode(), None) for block in blocks]
    except (OSError, ValueError, TypeError) as exc:
        raise Unusable(f"The signing keys in {path} cannot be read: {exc}") from None
    if not keys or not all(isinstance(key, Ed25519PrivateKey) for key in keys):
        raise Unusable(f"{path} must hold one or more unencrypted Ed25519 keys (PEM, PKCS#8).")
    return keys


def signing_key() -> Ed25519PrivateKey:
    """The newest key, which signs; Unusable as _keys() says. Taken before a build, so that a
    key that cannot sign fails it before its clone, not after it has stored its archive."""
    return _keys()[0]


def _key_file() -> Path:
    """CLONES_SIGNING_KEYS_FILE, or `signing_keys` on the data volume."""
    given = settings.CLONES_SIGNING_KEYS_FILE
    return Path(given) if given else settings.CLONES_DATA_DIR / KEY_FILE


def rotate() -> str:
    """Put a new key on top: it signs from now on; the older ones stay published. Its id."""
    new = Ed25519PrivateKey.generate()
    older = _keys() if _key_file().exists() or not settings.CLONES_SIGNING_KEYS_FILE else []
    text = "".join(_private_pem(key) for key in [new, *older])
    keyfiles.replace(_key_file(), text)
    return key_id(new.public_key())


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def published() -> dict:
    """Every key's public half, the signing one first: what /.well-known/cloneshelf/keys
    serves and verifier.load_keys reads."""
    keys = []
    for number, private in enumerate(_keys()):
        public = private.public_key()
        pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        keys.append(
            {
                "keyid": key_id(public),
                "algorithm": "ed25519",
                "public_key": pem.decode(),
                "signing": number == 0,
            }
        )
    return {"keys": keys}


def envelope(statement: dict, key: Ed25519PrivateKey) -> dict:
    """`statement` in a DSSE envelope signed with `key` (signing_key())."""
    payload = canonical_json(statement)
    signature = key.sign(verifier.pae(verifier.PAYLOAD_TYPE, payload))
    return {
        "payloadType": verifier.PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {"keyid": key_id(key.public_key()), "sig": base64.b64encode(signature).decode()}
        ],
    }


def canonical_json(value) -> bytes:
    """One spelling of a JSON value: keys sorted, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
