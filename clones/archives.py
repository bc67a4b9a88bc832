"""Packing a clone into a tar archive and keeping it in Django's storage."""

import hashlib
import logging
import tarfile
from dataclasses import dataclass
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage

logger = logging.getLogger(__name__)


@dataclass
class Archive:
    name: str  # in default_storage
    size: int
    sha256: str


class _HashingWriter:
    """A write-only file that counts and hashes what passes through it."""

    def __init__(self, file):
        self.file = file
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)


class _StagedFile(File):
    """A finished file on disk. FileSystemStorage moves a file that has temporary_file_path()
    into place with a rename, so no half-written archive ever stands under its final name."""

    def temporary_file_path(self) -> str:
        return self.file.name


def _anonymous(member: tarfile.TarInfo) -> tarfile.TarInfo:
    # The worker's uid means nothing to whoever downloads the archive.
    member.uid = member.gid = 0
    member.uname = member.gname = ""
    return member


def pack(source: Path, top_level: str, staging: Path) -> tuple[int, str]:
    """Write `source` as a tar to `staging`, every entry under `top_level/`.

    Streamed, never held in memory. tarfile stores symlinks as symlinks (it never follows
    them), so nothing outside `source` is read. Returns the size and the sha256.
    """
    with staging.open("wb") as raw:
        writer = _HashingWriter(raw)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(source, arcname=top_level, recursive=True, filter=_anonymous)
    return writer.size, writer.digest.hexdigest()


def store(source: Path, top_level: str, staging: Path, name: str) -> Archive:
    """Pack `source` and save it in storage as `name` (or a free variant of it)."""
    size, sha256 = pack(source, top_level, staging)
    with staging.open("rb") as staged:
        saved_name = default_storage.save(name, _StagedFile(staged))
    return Archive(name=saved_name, size=size, sha256=sha256)


def delete(name: str) -> None:
    if name:
        default_storage.delete(name)
