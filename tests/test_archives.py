import hashlib
import tarfile

from django.core.files.storage import default_storage

from clones.archives import pack, store


def make_tree(root):
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "file.txt").write_text("hello\n")
    (root / "tool.sh").write_text("#!/bin/sh\n")
    (root / "tool.sh").chmod(0o755)
    (root / "escape").symlink_to("/etc/shadow")
    return root


def test_pack_streams_a_tar_with_links_as_links(tmp_path):
    source = make_tree(tmp_path / "src")
    staging = tmp_path / "out.tar"

    size, sha256 = pack(source, "top", staging)

    assert size == staging.stat().st_size
    assert sha256 == hashlib.sha256(staging.read_bytes()).hexdigest()
    with tarfile.open(staging) as tar:
        members = {member.name: member for member in tar.getmembers()}
    assert set(members) == {"top", "top/sub", "top/sub/file.txt", "top/tool.sh", "top/escape"}
    assert members["top/escape"].issym() and members["top/escape"].linkname == "/etc/shadow"
    assert members["top/tool.sh"].mode & 0o777 == 0o755
    assert {member.uid for member in members.values()} == {0}


def test_store_moves_the_staged_file_into_storage(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    source = make_tree(tmp_path / "src")
    staging = tmp_path / "staging.tar"

    archive = store(source, "top", staging, "job.tar")

    assert archive.name == "job.tar"
    assert not staging.exists()  # renamed, not copied: never a partial file under the name
    stored = default_storage.open("job.tar").read()
    assert len(stored) == archive.size
    assert hashlib.sha256(stored).hexdigest() == archive.sha256
