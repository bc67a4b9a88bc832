"""Packing a clone into a reproducible archive (tar, tar.gz or zip) and keeping it in Django's
storage.

Reproducible: the bytes depend only on the names, types, contents, exec bits and link targets
under the source, plus the top-level name and the given mtime, so the same commit always gives
the same archive and the same sha256. Nothing else the filesystem knows (owners, times,
permission details, inode order, hard links, the locale) may leak in.
"""

import errno
import gzip
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from botocore.exceptions import BotoCoreError, ClientError
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from ..models import PACKED_FORMATS
from . import paths

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
# zipfile refuses plain (32-bit) sizes from 2 GiB on. The size is only written after the data
# (data descriptors) and deflate can grow data a little, so zip64 fields go in up front, from
# well below that.
_ZIP64_FROM = 1 << 30


def _ignore(percent: int) -> None:
    pass


@dataclass
class Archive:
    name: str  # in default_storage
    size: int
    sha256: str


class ArchiveFailed(Exception):
    """Packing or storing failed; the message is for the person who asked."""


# What goes into an archive.


@dataclass(frozen=True)
class _Entry:
    name: str  # in the archive; bytes that are not UTF-8 on disk are surrogate-escaped
    path: bytes  # on disk: bytes throughout, so no locale ever decodes a name
    kind: str  # "dir", "file" or "link"
    mode: int  # permission bits, normalized
    size: int = 0  # of a file
    target: bytes = b""  # of a link, exactly as on disk


def _entries(source: Path, top_level: str) -> Iterator[_Entry]:
    """Every entry under `source`, in an order fixed by the names alone: depth first, a directory
    before its contents, siblings sorted as bytes (not by locale, not in the filesystem's order).
    Iterative: a hostile repository may nest directories deeper than Python's recursion limit."""
    pending = [_Entry(f"{top_level}/", os.fsencode(source), "dir", 0o755)]
    while pending:
        entry = pending.pop()
        yield entry
        if entry.kind == "dir":
            with os.scandir(entry.path) as listing:
                children = sorted(listing, key=lambda child: child.name)
            found = (_entry(entry.name, child) for child in children)
            pending.extend(reversed([child for child in found if child]))


def _entry(parent: str, child: os.DirEntry) -> _Entry | None:
    name = parent + child.name.decode("utf-8", "surrogateescape")
    info = child.stat(follow_symlinks=False)
    if stat.S_ISDIR(info.st_mode):
        return _Entry(f"{name}/", child.path, "dir", 0o755)
    if stat.S_ISREG(info.st_mode):
        # A hard link is stored as another copy: whether two names share an inode is not
        # something git knows, so it must not show in the archive.
        mode = 0o755 if info.st_mode & 0o111 else 0o644  # all git keeps of permissions
        return _Entry(name, child.path, "file", mode, size=info.st_size)
    if stat.S_ISLNK(info.st_mode):
        return _Entry(name, child.path, "link", 0o777, target=os.readlink(child.path))
    logger.warning("Not archived (neither file, directory nor symlink): %r", child.path)
    return None


class _Progress:
    """Percent of the source's bytes packed so far: counted as they are read, not as the archive
    grows, so that compressed formats do not seem to stall. Capped at 99 until it is stored."""

    def __init__(self, source: Path, on_progress: Callable[[int], None]):
        self.expected = max(paths.usage(source)[0], 1)
        self.done = 0
        self.percent = -1
        self.on_progress = on_progress

    def add(self, count: int) -> None:
        self.done += count
        percent = min(99, self.done * 100 // self.expected)
        if percent != self.percent:
            self.percent = percent
            self.on_progress(percent)

    @contextmanager
    def reading(self, entry: _Entry) -> Iterator["_CountedReader"]:
        with open(entry.path, "rb") as file:
            yield _CountedReader(file, self.add)


class _CountedReader:
    def __init__(self, file, on_read: Callable[[int], None]):
        self.file = file
        self.on_read = on_read

    def read(self, size: int = -1) -> bytes:
        data = self.file.read(size)
        self.on_read(len(data))
        return data


class _HashingWriter:
    """A write-only, unseekable file that counts and hashes what passes through it."""

    def __init__(self, file):
        self.file = file
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self.file.write(data)

    def tell(self) -> int:  # where tarfile starts, in its "w" mode
        return self.size

    def flush(self) -> None:
        self.file.flush()


# Packing.


def pack(
    source: Path,
    top_level: str,
    staging: Path,
    archive_format: str,
    mtime: int,
    on_progress: Callable[[int], None] = _ignore,
) -> tuple[int, str]:
    """Write `source` to `staging` as an `archive_format` archive, every entry under
    `top_level/` and dated `mtime` (the commit's time), telling `on_progress` the percent done.

    Streamed, never held in memory. Symlinks are stored as symlinks, never followed, so nothing
    outside `source` is read. Returns the size and the sha256.
    """
    if archive_format not in PACKED_FORMATS:
        raise ValueError(f"Unknown archive format {archive_format!r}; one of {PACKED_FORMATS}.")
    progress = _Progress(source, on_progress)
    entries = _entries(source, top_level)
    with staging.open("wb") as file:
        writer = _HashingWriter(file)
        if archive_format == "zip":
            _write_zip(writer, entries, mtime, progress)
        elif archive_format == "tar.gz":
            # No name and no time in the gzip header; level 6 is gzip's own default (9 is much
            # slower for little gain). Fixed, as the same level must give the same bytes.
            with gzip.GzipFile(
                fileobj=writer, mode="wb", filename="", mtime=0, compresslevel=6
            ) as compressed:
                _write_tar(compressed, entries, mtime, progress)
        else:
            _write_tar(writer, entries, mtime, progress)
    return writer.size, writer.digest.hexdigest()


def _write_tar(file, entries: Iterator[_Entry], mtime: int, progress: _Progress) -> None:
    # GNU format: long names go in GNU longname records. PAX headers would do too, but GNU tar
    # warns about their hdrcharset for names that are not UTF-8. surrogateescape writes such
    # names back as the very bytes they were on disk.
    # Mode "w", not the stream mode "w|": the same bytes, written straight to `file` a chunk of
    # _CHUNK at a time, where "w|" copies them again through a buffer of 10 KiB (a 350 MiB
    # checkout packed in half the time); tarfile only asks `file` where it starts (tell()).
    with tarfile.open(
        fileobj=file,
        mode="w",
        format=tarfile.GNU_FORMAT,
        encoding="utf-8",
        errors="surrogateescape",
        copybufsize=_CHUNK,
    ) as tar:
        for entry in entries:
            info = _tar_info(entry, mtime)
            if entry.kind == "file":
                with progress.reading(entry) as reader:
                    tar.addfile(info, reader)
            else:
                tar.addfile(info)
                progress.add(len(entry.target))


def _tar_info(entry: _Entry, mtime: int) -> tarfile.TarInfo:
    # Built here rather than by gettarinfo(), which copies the inode's owner, times and links.
    # A new TarInfo already says uid = gid = 0 and uname = gname = "": the worker's uid means
    # nothing to whoever downloads the archive.
    info = tarfile.TarInfo(entry.name)
    info.mode = entry.mode
    info.mtime = mtime
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "link":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.target.decode("utf-8", "surrogateescape")
    else:
        info.size = entry.size
    return info


def _write_zip(file, entries: Iterator[_Entry], mtime: int, progress: _Progress) -> None:
    # The writer cannot seek, so zipfile puts each entry's sizes and CRC in a data descriptor
    # after its data instead of going back to the header: one pass, nothing held in memory.
    with zipfile.ZipFile(file, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            info = _zip_info(entry, mtime)
            if entry.kind == "dir":
                archive.mkdir(info)
            elif entry.kind == "link":
                # A symlink is an entry whose content is its target, as git archive and Info-ZIP
                # write them; unzip makes a link of it again.
                archive.writestr(info, entry.target)
                progress.add(len(entry.target))
            else:
                big = entry.size >= _ZIP64_FROM
                with (
                    progress.reading(entry) as reader,
                    archive.open(info, "w", force_zip64=big) as stored,
                ):
                    shutil.copyfileobj(reader, stored, _CHUNK)


class _ZipInfo(zipfile.ZipInfo):
    """zipfile writes a name as ASCII, or as UTF-8 with the UTF-8 flag (0x800), and cannot write
    a name that was not UTF-8 on disk (kept surrogate-escaped) at all. Such a name is written as
    its original bytes without the flag, as git archive and Info-ZIP's zip do: unzip on Unix
    restores those bytes. (This overrides a private method; tests/pipeline/test_archives.py checks
    the bytes written, so a Python that changes it fails there.)"""

    __slots__ = ()

    def _encodeFilenameFlags(self) -> tuple[bytes, int]:
        try:
            return super()._encodeFilenameFlags()
        except UnicodeEncodeError:
            return self.filename.encode("utf-8", "surrogateescape"), self.flag_bits


def _zip_info(entry: _Entry, mtime: int) -> zipfile.ZipInfo:
    info = _ZipInfo(entry.name, _dos_time(mtime))
    info.create_system = 3  # Unix: external_attr holds a Unix mode, which unzip applies
    info.extra = _extended_timestamp(mtime)
    file_type = {"dir": stat.S_IFDIR, "file": stat.S_IFREG, "link": stat.S_IFLNK}[entry.kind]
    info.external_attr = (file_type | entry.mode) << 16
    if entry.kind == "dir":
        info.external_attr |= 0x10  # the MS-DOS directory bit
        info.CRC = 0  # mkdir() expects it set
    elif entry.kind == "file":
        info.compress_type = zipfile.ZIP_DEFLATED
    return info


def _dos_time(mtime: int) -> tuple[int, ...]:
    # In UTC, so that the bytes do not depend on the server's time zone. Zip's dates run from
    # 1980 to 2107 only; older (or absurd) commit times are clamped.
    date_time = time.gmtime(mtime)[:6]
    return min(max(date_time, (1980, 1, 1, 0, 0, 0)), (2107, 12, 31, 23, 59, 58))


def _extended_timestamp(mtime: int) -> bytes:
    """The "UT" extra field (as git archive writes it): the exact mtime in seconds since the
    epoch, which unzip prefers to the DOS time, itself read as local time where it is unpacked."""
    if not 0 <= mtime < 2**31:
        return b""
    return b"UT" + (5).to_bytes(2, "little") + b"\x01" + mtime.to_bytes(4, "little")


# Storing.


class _StagedFile(File):
    """A finished file on disk. FileSystemStorage moves a file that has temporary_file_path()
    into place with a rename, so no half-written archive ever stands under its final name."""

    def temporary_file_path(self) -> str:
        return self.file.name


def store(
    source: Path,
    top_level: str,
    staging: Path,
    name: str,
    archive_format: str,
    mtime: int,
    on_progress: Callable[[int], None] = _ignore,
) -> Archive:
    """Pack `source` (see pack()) and save it in storage as `name` (or a free variant of it).

    On failure nothing is left in storage (the staging file is the caller's to remove).
    """
    with _failing_as("written"):
        size, sha256 = pack(source, top_level, staging, archive_format, mtime, on_progress)
    return _save(staged=staging, name=name, size=size, sha256=sha256)


def store_file(staged: Path, name: str) -> Archive:
    """Save `staged`, a finished file made by someone else (git archive, git bundle), in storage
    as `name` (or a free variant of it), with its size and sha256.

    On failure nothing is left in storage (the staged file is the caller's to remove).
    """
    with _failing_as("read"), staged.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()  # streamed
        size = file.tell()
    return _save(staged=staged, name=name, size=size, sha256=sha256)


def _save(staged: Path, name: str, size: int, sha256: str) -> Archive:
    # Chosen here rather than by save(), so that a half-copied file can be found and removed.
    name = default_storage.get_available_name(name)
    try:
        with _failing_as("stored"), staged.open("rb") as file:
            saved_name = default_storage.save(name, _StagedFile(file))
    except ArchiveFailed:
        delete(name)
        raise
    return Archive(name=saved_name, size=size, sha256=sha256)


@contextmanager
def _failing_as(doing: str) -> Iterator[None]:
    """Turn a disk's or a storage service's error into ArchiveFailed, worded for the person who
    asked."""
    try:
        yield
    except (OSError, BotoCoreError, ClientError) as exc:
        raise ArchiveFailed(f"The archive could not be {doing}: {_reason(exc)}") from exc


def _reason(exc: Exception) -> str:
    if isinstance(exc, ClientError):  # the S3 service answered, and said no
        return f"the storage service refused it ({exc.response['Error'].get('Code', '?')})."
    if isinstance(exc, BotoCoreError):
        # Not only "unreachable": missing credentials, a bad endpoint… botocore says which.
        return f"the storage service could not be used: {exc}."
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "the server's disk is full. Try again later."
    return f"{exc.strerror or exc}."


def delete(name: str) -> None:
    if name:
        default_storage.delete(name)


def stored_names() -> list[str]:
    """Every file in storage (for the recovery sweep's reaping of orphans)."""
    return default_storage.listdir("")[1] if default_storage.exists("") else []


def last_modified(name: str) -> datetime:
    return default_storage.get_modified_time(name)


def delete_with_row(instance, **kwargs) -> None:
    """post_delete of a job: a deleted job (or user) takes its own archive with it, no file
    without a row. A snapshot's file is shared with other jobs, other people's too: it stays,
    and the expiry sweep deletes it once no job delivers it (snapshots.due_for_deletion)."""
    if instance.snapshot_id is not None:
        return
    name = instance.archive.name
    # Only once the deletion is committed: a rolled-back delete must keep its archive.
    transaction.on_commit(lambda: delete(name))
