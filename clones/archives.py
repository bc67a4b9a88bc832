"""Packing a clone into a tar archive and keeping it in Django's storage."""

import errno
import hashlib
import logging
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.core.files import File
from django.core.files.storage import default_storage

from . import paths

logger = logging.getLogger(__name__)


def _ignore(percent: int) -> None:
    pass


@dataclass
class Archive:
    name: str  # in default_storage
    size: int
    sha256: str


class _HashingWriter:
    """A write-only file that counts and hashes what passes through it, and tells
    `on_size(bytes so far)` as it grows."""

    def __init__(self, file, on_size: Callable[[int], None]):
        self.file = file
        self.size = 0
        self.digest = hashlib.sha256()
        self.on_size = on_size

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        self.on_size(self.size)
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


def pack(
    source: Path, top_level: str, staging: Path, on_progress: Callable[[int], None] = _ignore
) -> tuple[int, str]:
    """Write `source` as a tar to `staging`, every entry under `top_level/`, telling
    `on_progress` the percent done as it goes.

    Streamed, never held in memory. tarfile stores symlinks as symlinks (it never follows
    them), so nothing outside `source` is read. Returns the size and the sha256.
    """
    expected = max(paths.usage(source)[0], 1)  # the tar is a little more: headers, padding

    def on_size(size: int) -> None:
        on_progress(min(99, size * 100 // expected))

    with staging.open("wb") as raw:
        writer = _HashingWriter(raw, on_size)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.add(source, arcname=top_level, recursive=True, filter=_anonymous)
    return writer.size, writer.digest.hexdigest()


class ArchiveFailed(Exception):
    """Packing or storing failed; the message is for the person who asked."""


def store(
    source: Path,
    top_level: str,
    staging: Path,
    name: str,
    on_progress: Callable[[int], None] = _ignore,
) -> Archive:
    """Pack `source` and save it in storage as `name` (or a free variant of it).

    On failure nothing is left in storage (the staging file is the caller's to remove).
    """
    try:
        size, sha256 = pack(source, top_level, staging, on_progress)
    except OSError as exc:
        raise ArchiveFailed(f"The archive could not be written: {_reason(exc)}") from exc
    # Chosen here rather than by save(), so that a half-copied file can be found and removed.
    name = default_storage.get_available_name(name)
    try:
        with staging.open("rb") as staged:
            saved_name = default_storage.save(name, _StagedFile(staged))
    except OSError as exc:
        delete(name)
        raise ArchiveFailed(f"The archive could not be stored: {_reason(exc)}") from exc
    return Archive(name=saved_name, size=size, sha256=sha256)


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the server's disk is full. Try again later."
    return f"{exc.strerror or exc}."


def delete(name: str) -> None:
    if name:
        default_storage.delete(name)
