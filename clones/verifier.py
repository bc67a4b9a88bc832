"""Check an archive against its signed provenance, offline: a DSSE envelope (Ed25519) around an
in-toto Statement v1 whose subject is the archive's sha256.

Self-contained on purpose (Python 3.12+ and the `cryptography` package, no Django, nothing else
of this project): anyone can take this one file and run it where the archive is.

    python verifier.py ARCHIVE PROVENANCE --keys KEYS [--tree]

KEYS is the service's published keys (`/.well-known/cloneshelf/keys`, saved as a file): JSON,
{"keys": [{"keyid": ..., "public_key": "-----BEGIN PUBLIC KEY-----..."}, ...]}. With --tree
(full, shallow and files archives; needs `git`), the files the archive unpacks to must also
hash to the commit's tree that the provenance records, as git computes it. Exit status 0 and
"verified" when every check passes; 1 and what failed otherwise. The service signs with the
same functions (pae) that this file checks with.
"""

import argparse
import base64
import binascii
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"


class NotVerified(Exception):
    """The archive, its provenance or the signature is not what was signed; the message says
    which."""


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is signed, as the DSSE specification says."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def verify(archive: Path, envelope: dict, keys: dict[str, Ed25519PublicKey]) -> dict:
    """The statement `envelope` carries, once its signature is seen to be by one of `keys`
    (keyid -> public key) and its subject to be `archive`'s sha256. NotVerified otherwise."""
    statement = verified_statement(envelope, keys)
    digest = sha256_of(archive)
    subjects = statement.get("subject") or []
    if not any(subject.get("digest", {}).get("sha256") == digest for subject in subjects):
        raise NotVerified(
            f"The archive's sha256 ({digest}) is not the one the provenance names: the archive "
            "is not the one that was signed, or was changed since."
        )
    return statement


def verified_statement(envelope: dict, keys: dict[str, Ed25519PublicKey]) -> dict:
    try:
        payload = base64.b64decode(envelope["payload"], validate=True)
        payload_type = envelope["payloadType"]
        signatures = envelope["signatures"]
    except (KeyError, TypeError, binascii.Error):
        raise NotVerified("The provenance is not a DSSE envelope.") from None
    if payload_type != PAYLOAD_TYPE:
        raise NotVerified(f"The provenance's payload is {payload_type!r}, not an in-toto one.")
    signed = pae(payload_type, payload)
    known = [signature for signature in signatures if signature.get("keyid") in keys]
    if not known:
        named = ", ".join(str(signature.get("keyid")) for signature in signatures) or "none"
        raise NotVerified(f"The provenance is signed by no published key (key ids: {named}).")
    for signature in known:
        try:
            keys[signature["keyid"]].verify(base64.b64decode(signature["sig"]), signed)
            break
        except (InvalidSignature, binascii.Error, ValueError):
            continue
    else:
        raise NotVerified(
            "The provenance's signature does not verify: it was changed after it was signed, "
            "or signed by another key under this key id."
        )
    statement = json.loads(payload)
    if statement.get("_type") != STATEMENT_TYPE:
        raise NotVerified("The provenance's payload is not an in-toto Statement v1.")
    return statement


def check_tree(archive: Path, statement: dict) -> str:
    """The commit's tree that the statement records, once the archive's files are seen to be
    that tree (NotVerified otherwise): unpacked in a temporary directory, its files added to a
    throwaway repository of our own (`git add`, the files' attributes applied as on a commit;
    a checkout's .git left out, as git always leaves it), then `git write-tree`. Nothing of the
    archive's own .git is read: its config could run commands, its index could hide a change."""
    definition = statement["predicate"]["buildDefinition"]
    parameters = definition["externalParameters"]
    if parameters["history"] not in ("full", "shallow", "files") or parameters["paths"]:
        raise NotVerified(
            "Only an archive of a whole checkout (full, shallow or files history, no paths) "
            "unpacks to the commit's tree."
        )
    recorded = definition["resolvedDependencies"][0]["annotations"]["tree"]
    with tempfile.TemporaryDirectory() as scratch:
        top = _unpack(archive, Path(scratch) / "unpacked")
        found = _tree_of(top, Path(scratch) / "index.git", len(recorded))
    if found != recorded:
        raise NotVerified(
            f"The archive's files are tree {found}, not the commit's tree {recorded}: a file "
            "was changed, added or removed. (Files cannot match a commit whose tree itself is "
            "not as git writes trees today (zero-padded or group-writable modes) or holds a "
            "submodule, nor files that attributes changed on the way out: eol, and in a files "
            "archive export-ignore and export-subst.)"
        )
    return found


def _unpack(archive: Path, into: Path) -> Path:
    """The archive's one top-level directory, unpacked with modes and links as they are."""
    into.mkdir()
    if zipfile.is_zipfile(archive):  # Python's zipfile keeps neither modes nor links
        _tool(["unzip", "-q", str(archive), "-d", str(into)], "unzip")
    else:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="tar")
    entries = list(into.iterdir())
    if len(entries) != 1 or not entries[0].is_dir():
        raise NotVerified("The archive does not unpack to one top-level directory.")
    return entries[0]


def _git(*args: str) -> str:
    # No configuration of the user's may change what git adds (autocrlf, excludes, filters).
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null"}
    subcommand = next(arg for arg in args if not arg.startswith("-") and "=" not in arg)
    return _tool(["git", *args], f"git {subcommand}", env=env)


def _tool(command: list[str], name: str, **options) -> str:
    """`command`'s output; NotVerified saying why if it cannot run or fails."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, **options)
    except FileNotFoundError:
        raise NotVerified(f"--tree needs `{command[0]}`, which is not installed here.") from None
    if done.returncode != 0:
        raise NotVerified(f"{name} failed on the unpacked archive: {done.stderr.strip()}")
    return done.stdout.strip()


def _tree_of(top: Path, git_dir: Path, width: int) -> str:
    object_format = "sha256" if width == 64 else "sha1"
    _git("init", "--quiet", "--bare", f"--object-format={object_format}", str(git_dir))
    into = [f"--git-dir={git_dir}", f"--work-tree={top}"]
    _git(*into, "-c", "core.fileMode=true", "-c", "core.symlinks=true", "add", "-A", "-f", ".")
    return _git(*into, "write-tree")


def sha256_of(path: Path) -> str:
    with path.open("rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()


def load_keys(published: dict) -> dict[str, Ed25519PublicKey]:
    """keyid -> public key, from the service's published keys (see the module's docstring)."""
    keys = {}
    for entry in published.get("keys", []):
        key = load_pem_public_key(entry["public_key"].encode())
        if isinstance(key, Ed25519PublicKey):
            keys[entry["keyid"]] = key
    return keys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path)
    parser.add_argument("provenance", type=Path)
    parser.add_argument("--keys", type=Path, required=True, help="the published keys, as JSON")
    parser.add_argument("--tree", action="store_true", help="and unpack it to check its tree")
    options = parser.parse_args(argv)
    keys = load_keys(json.loads(options.keys.read_text()))
    envelope = json.loads(options.provenance.read_text())
    try:
        print(report(options.archive, envelope, keys, options.tree))
    except NotVerified as failed:
        print(f"NOT verified: {failed}", file=sys.stderr)
        return 1
    return 0


def report(
    archive: Path, envelope: dict, keys: dict[str, Ed25519PublicKey], tree: bool = False
) -> str:
    """What was verified, once every check has passed (NotVerified otherwise): `verified:
    <archive> is <source> at <commit>`, and with `tree` the tree its files are (check_tree)."""
    statement = verify(archive, envelope, keys)
    source = statement["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    said = f"verified: {archive.name} is {source['uri']} at {source['digest']['gitCommit']}"
    return f"{said}, tree {check_tree(archive, statement)}" if tree else said


if __name__ == "__main__":
    sys.exit(main())
