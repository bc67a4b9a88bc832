import errno
import hashlib
import os
import stat
import subprocess
import tarfile
import time
import zipfile
from pathlib import Path

import psutil
import pytest
from botocore.exceptions import EndpointConnectionError
from django.core.files.storage import default_storage

from clones.models import PACKED_FORMATS
from clones.pipeline import archives
from clones.pipeline.archives import ArchiveFailed, pack, store, store_file

MTIME = 1_700_000_000  # 2023-11-14 22:13:20 UTC: even seconds, as zip's DOS time has
LATIN1 = b"caf\xe9.txt"  # not UTF-8: a name git keeps as bytes
LONG_DIR, LONG_FILE = "d" * 200, "e" * 255  # a path over 255 bytes, a component of 255
LONG_TARGET = "x" * 150  # over tar's 100-byte linkname field

# The tree the tests pack: relative path -> content (bytes), ("link", target) or ("dir",).
TREE = {
    "copy.txt": b"hello\n",  # first: made last the other way, as a hard link to sub/file.txt
    "sub/file.txt": b"hello\n",
    "tool.sh": b"#!/bin/sh\n",
    "escape": ("link", "/etc/shadow"),
    "sub/rel": ("link", "file.txt"),
    "longlink": ("link", LONG_TARGET),
    "latin-link": ("link", LATIN1),
    LATIN1: b"latin-1\n",
    "na\u00efve.txt": b"utf-8\n",
    f"{LONG_DIR}/{LONG_FILE}": b"deep\n",
    "empty": ("dir",),
}
EXECUTABLE = {"tool.sh"}
# In the archive, in the order expected: a directory before its contents, siblings as bytes.
NAMES = [
    "top/",
    "top/caf\udce9.txt",
    "top/copy.txt",
    f"top/{LONG_DIR}/",
    f"top/{LONG_DIR}/{LONG_FILE}",
    "top/empty/",
    "top/escape",
    "top/latin-link",
    "top/longlink",
    "top/na\u00efve.txt",
    "top/sub/",
    "top/sub/file.txt",
    "top/sub/rel",
    "top/tool.sh",
]


def make_tree(root: Path, *, other_way: bool = False) -> Path:
    """TREE under `root`. With `other_way`, the same content made as differently as can be:
    another umask and other permissions, the reverse creation order, other mtimes, and a hard
    link where the first way has a copy."""
    root = os.fsencode(root)
    old_umask = os.umask(0o077 if other_way else 0o022)
    try:
        items = list(TREE.items())
        for path, content in reversed(items) if other_way else items:
            _make(root, os.fsencode(path), content, other_way)
        for index, (directory, subdirs, files) in enumerate(os.walk(root)):
            for name in [*subdirs, *files, b""]:
                stamp = (MTIME // 3 + index) if other_way else (MTIME * 2 - index)
                os.utime(os.path.join(directory, name), (stamp, stamp), follow_symlinks=False)
    finally:
        os.umask(old_umask)
    return Path(os.fsdecode(root))


def _make(root: bytes, path: bytes, content, other_way: bool) -> None:
    full = os.path.join(root, path)
    os.makedirs(os.path.dirname(full), mode=0o700 if other_way else 0o755, exist_ok=True)
    if content == ("dir",):
        os.makedirs(full, mode=0o700 if other_way else 0o755, exist_ok=True)
    elif isinstance(content, tuple):
        os.symlink(content[1], full)
    elif other_way and path == b"copy.txt":
        os.link(os.path.join(root, b"sub/file.txt"), full)
    else:
        with open(full, "wb") as file:
            file.write(content)
        executable = os.fsdecode(path) in EXECUTABLE
        if other_way:
            os.chmod(full, 0o710 if executable else 0o600)
        else:
            os.chmod(full, 0o755 if executable else 0o644)


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "src")


def packed(source: Path, archive_format: str, mtime: int = MTIME) -> bytes:
    staging = source.parent / f"{source.name}-{mtime}.{archive_format}"
    size, sha256 = pack(source, "top", staging, archive_format, mtime)
    data = staging.read_bytes()
    assert (size, sha256) == (len(data), hashlib.sha256(data).hexdigest())
    return data


def run(*command: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run a system tool, which must succeed without a word on stderr."""
    env = {**os.environ, "LC_ALL": "C.UTF-8"}
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, check=False)
    assert (result.returncode, result.stderr) == (0, b""), result
    return result


def test_pack_streams_a_tar_with_links_as_links(tmp_path):
    source = make_tree(tmp_path / "src")
    staging = tmp_path / "out.tar"

    size, sha256 = pack(source, "top", staging, "tar", MTIME)

    assert size == staging.stat().st_size
    assert sha256 == hashlib.sha256(staging.read_bytes()).hexdigest()
    with tarfile.open(staging, encoding="utf-8", errors="surrogateescape") as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert list(members) == [name.removesuffix("/") for name in NAMES]
    assert members["top/escape"].issym() and members["top/escape"].linkname == "/etc/shadow"
    assert members["top/tool.sh"].mode == 0o755


@pytest.mark.parametrize("archive_format", PACKED_FORMATS)
def test_the_same_content_gives_the_same_bytes_however_it_was_made(tmp_path, archive_format):
    first = make_tree(tmp_path / "one" / "src")
    time.sleep(0.01)  # another ctime too
    second = make_tree(tmp_path / "two" / "checkout", other_way=True)
    assert os.stat(second / "copy.txt").st_nlink == 2

    assert packed(first, archive_format) == packed(second, archive_format)


@pytest.mark.parametrize("archive_format", PACKED_FORMATS)
def test_the_commit_time_content_and_exec_bits_change_the_bytes(tree, archive_format):
    original = packed(tree, archive_format)
    assert packed(tree, archive_format, mtime=MTIME + 2) != original

    (tree / "sub" / "file.txt").write_bytes(b"hellO\n")
    changed = packed(tree, archive_format)
    assert changed != original

    (tree / "sub" / "file.txt").chmod(0o744)
    assert packed(tree, archive_format) != changed


def test_tar_entries_are_anonymous_sorted_dated_and_normalized(tree):
    data = packed(tree, "tar")
    assert data[257:265] == b"ustar  \0"  # GNU format,
    assert b"././@LongLink" in data  # long names in GNU longname records,
    assert b"caf\xe9.txt" in data  # and names as they were on disk

    archive = tree.parent / f"src-{MTIME}.tar"
    with tarfile.open(archive, encoding="utf-8", errors="surrogateescape") as tar:
        members = tar.getmembers()

    assert not any(member.pax_headers for member in members)
    assert [member.name for member in members] == [name.removesuffix("/") for name in NAMES]
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    assert {member.mtime for member in members} == {MTIME}
    modes = {member.name.removeprefix("top/"): (member.type, member.mode) for member in members}
    assert modes["top"] == modes["sub"] == modes["empty"] == (tarfile.DIRTYPE, 0o755)
    assert modes["tool.sh"] == (tarfile.REGTYPE, 0o755)
    assert modes["copy.txt"] == modes["sub/file.txt"] == (tarfile.REGTYPE, 0o644)
    assert modes["escape"] == (tarfile.SYMTYPE, 0o777)
    by_name = {member.name: member for member in members}
    assert by_name["top/longlink"].linkname == LONG_TARGET
    assert by_name["top/latin-link"].linkname == "caf\udce9.txt"


@pytest.mark.parametrize("archive_format", ["tar", "tar.gz"])
def test_gnu_tar_lists_and_extracts_it_all_without_a_warning(tmp_path, tree, archive_format):
    archive = tmp_path / f"out.{archive_format}"
    pack(tree, "top", archive, archive_format, MTIME)
    if archive_format == "tar.gz":
        run("gzip", "-t", archive)
        assert archive.read_bytes()[:10] == b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"

    listing = run("tar", "-tvf", archive).stdout
    assert b"0/0" in listing and b"top/caf\\351.txt" in listing
    (tmp_path / "out").mkdir()
    run("tar", "-xf", archive, cwd=tmp_path / "out")

    assert_extracted(tmp_path / "out" / "top")


def test_zip_entries_are_unix_sorted_dated_and_normalized(tree):
    data = packed(tree, "zip")

    with zipfile.ZipFile(tree.parent / f"src-{MTIME}.zip") as archive:
        assert archive.testzip() is None
        infos = archive.infolist()
        links = {i.filename: archive.read(i) for i in infos if i.external_attr >> 28 == 0o12}

    # zipfile reads a name without the UTF-8 flag as cp437: undo that to get the raw bytes.
    raw_names = [i.filename.encode("utf-8" if i.flag_bits & 0x800 else "cp437") for i in infos]
    assert raw_names == [name.encode("utf-8", "surrogateescape") for name in NAMES]
    flagged = {i.filename for i in infos if i.flag_bits & 0x800}
    assert flagged == {"top/na\u00efve.txt"}  # not ASCII but UTF-8; caf\xe9 is written as is
    assert b"top/caf\xe9.txt" in data
    assert {info.date_time for info in infos} == {time.gmtime(MTIME)[:6]}
    assert {info.create_system for info in infos} == {3}
    modes = {info.filename.removeprefix("top/"): info.external_attr for info in infos}
    assert modes[""] == modes["sub/"] == (stat.S_IFDIR | 0o755) << 16 | 0x10
    assert modes["tool.sh"] == (stat.S_IFREG | 0o755) << 16
    assert modes["copy.txt"] == (stat.S_IFREG | 0o644) << 16
    assert modes["escape"] == (stat.S_IFLNK | 0o777) << 16
    assert links == {
        "top/escape": b"/etc/shadow",
        "top/latin-link": LATIN1,
        "top/longlink": LONG_TARGET.encode(),
        "top/sub/rel": b"file.txt",
    }


def test_unzip_tests_and_extracts_it_all(tmp_path, tree):
    archive = tmp_path / "out.zip"
    pack(tree, "top", archive, "zip", MTIME)

    assert b"No errors detected" in run("unzip", "-t", archive).stdout
    run("unzip", "-q", archive, "-d", tmp_path / "out")

    assert_extracted(tmp_path / "out" / "top")


def assert_extracted(top: Path) -> None:
    """What a tool extracted is TREE, names, links and exec bits exact, dated MTIME."""
    for path, content in TREE.items():
        full = os.path.join(os.fsencode(top), os.fsencode(path))
        if content == ("dir",):
            assert os.path.isdir(full) and not os.path.islink(full)
        elif isinstance(content, tuple):
            assert os.readlink(full) == os.fsencode(content[1])
        else:
            with open(full, "rb") as file:
                assert file.read() == content
            executable = bool(os.stat(full).st_mode & 0o100)  # the rest is the umask's
            assert executable == (os.fsdecode(path) in EXECUTABLE), path
            assert os.stat(full).st_mtime == MTIME, path
    assert os.stat(top / "sub").st_mtime == MTIME


def test_zip_dates_before_1980_are_clamped_and_the_exact_time_kept_for_unzip(tmp_path, tree):
    archive = tmp_path / "old.zip"
    pack(tree, "top", archive, "zip", mtime=86_400)  # 1970-01-02

    with zipfile.ZipFile(archive) as opened:
        assert {info.date_time for info in opened.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    run("unzip", "-q", archive, "-d", tmp_path / "out")
    assert os.stat(tmp_path / "out" / "top" / "tool.sh").st_mtime == 86_400


def test_zip_dates_after_2107_are_clamped_and_no_32_bit_time_is_written(tmp_path, tree):
    archive = tmp_path / "late.zip"
    pack(tree, "top", archive, "zip", mtime=2**33)  # in 2242

    with zipfile.ZipFile(archive) as opened:
        infos = opened.infolist()
    assert {info.date_time for info in infos} == {(2107, 12, 31, 23, 59, 58)}
    assert {info.extra for info in infos} == {b""}


def test_zip64_entries_still_open(tmp_path, tree, monkeypatch):
    monkeypatch.setattr(archives, "_ZIP64_FROM", 0)  # every file, rather than a 1 GiB one
    archive = tmp_path / "big.zip"
    pack(tree, "top", archive, "zip", MTIME)

    assert b"No errors detected" in run("unzip", "-t", archive).stdout
    with zipfile.ZipFile(archive) as opened:
        assert opened.read("top/sub/file.txt") == b"hello\n"
        assert opened.getinfo("top/tool.sh").extract_version == zipfile.ZIP64_VERSION


@pytest.mark.parametrize("archive_format", PACKED_FORMATS)
def test_other_file_types_are_skipped_with_a_warning(tmp_path, tree, archive_format, caplog):
    os.mkfifo(tree / "pipe")

    assert packed(tree, archive_format) == packed(make_tree(tmp_path / "plain"), archive_format)
    assert "pipe" in caplog.text


def test_unknown_format_is_refused(tmp_path, tree):
    with pytest.raises(ValueError, match=r"'tar\.bz2'"):
        pack(tree, "top", tmp_path / "out", "tar.bz2", MTIME)


@pytest.mark.parametrize("archive_format", ["tar", "zip"])  # tar.gz: tar through GzipFile
def test_packing_streams_and_reports_progress(tmp_path, archive_format):
    source = tmp_path / "src"
    source.mkdir()
    with open(source / "zeros", "wb") as file:
        file.truncate(200 * 2**20)  # sparse: costs no disk, reads as 200 MiB
    process = psutil.Process()
    start = process.memory_info().rss
    peak, seen = start, []

    def on_progress(percent: int) -> None:
        nonlocal peak
        peak = max(peak, process.memory_info().rss)
        seen.append(percent)

    pack(source, "top", tmp_path / f"out.{archive_format}", archive_format, MTIME, on_progress)

    assert peak - start < 40 * 2**20
    assert seen == sorted(seen) and seen[-1] == 99 and len(seen) > 50


def test_store_moves_the_staged_file_into_storage(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    source = make_tree(tmp_path / "src")
    staging = tmp_path / "staging.tar"

    archive = store(source, "top", staging, "job.tar", "tar", MTIME)

    assert archive.name == "job.tar"
    assert not staging.exists()  # renamed, not copied: never a partial file under the name
    stored = default_storage.open("job.tar").read()
    assert len(stored) == archive.size
    assert hashlib.sha256(stored).hexdigest() == archive.sha256


def test_store_file_moves_a_finished_file_into_storage(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    staged = tmp_path / "job" / "repo.bundle"
    staged.parent.mkdir()
    staged.write_bytes(b"bundle bytes" * 100_000)

    archive = store_file(staged, "job.bundle")

    assert not staged.exists()
    assert archive.name == "job.bundle"
    assert archive.size == 1_200_000
    assert archive.sha256 == hashlib.sha256(b"bundle bytes" * 100_000).hexdigest()
    assert default_storage.open("job.bundle").read() == b"bundle bytes" * 100_000


def test_a_full_disk_leaves_nothing_in_storage(tmp_path, settings, monkeypatch):
    settings.MEDIA_ROOT = media = tmp_path / "media"
    media.mkdir()
    staged = tmp_path / "repo.bundle"
    staged.write_bytes(b"bundle bytes")

    def save_half(name, content, max_length=None):
        (media / name).write_bytes(b"bund")  # as a copy across filesystems stops
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(default_storage, "save", save_half)

    with pytest.raises(ArchiveFailed) as failed:
        store_file(staged, "job.bundle")

    assert str(failed.value) == (
        "The archive could not be stored: the server's disk is full. Try again later."
    )
    assert list(media.iterdir()) == []


def test_a_full_disk_while_packing_says_so(tmp_path, tree, settings, monkeypatch):
    settings.MEDIA_ROOT = tmp_path / "media"

    def full(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(archives._HashingWriter, "write", full)

    with pytest.raises(ArchiveFailed, match="could not be written: the server's disk is full"):
        store(tree, "top", tmp_path / "staging.zip", "job.zip", "zip", MTIME)
    assert not (tmp_path / "media").exists() or not any((tmp_path / "media").iterdir())


def test_a_storage_service_that_cannot_be_used_says_what_botocore_said(tmp_path, monkeypatch):
    staged = tmp_path / "repo.bundle"
    staged.write_bytes(b"bundle bytes")

    def unreachable(name, content, max_length=None):
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9")

    monkeypatch.setattr(default_storage, "save", unreachable)

    with pytest.raises(ArchiveFailed) as failed:
        store_file(staged, "job.bundle")

    assert str(failed.value) == (
        "The archive could not be stored: the storage service could not be used: "
        'Could not connect to the endpoint URL: "http://127.0.0.1:9".'
    )
