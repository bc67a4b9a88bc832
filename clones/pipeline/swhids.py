"""Software Heritage identifiers (SWHIDs, https://www.swhid.org) of what an archive holds, so a
person can cross-check it against the Software Heritage archive: `swh:1:rev:` (the commit),
`swh:1:dir:` (its tree) and, for a snapshot of every ref (full and mirror histories),
`swh:1:snp:`. For a SHA-1 repository a revision's and a directory's SWHID are git's own ids; a
snapshot's is the SHA-1 of Software Heritage's own object listing every branch (computed here as
swh.model computes it: tests/test_swhids.py compares the two). Software Heritage keeps no SHA-256
repositories: theirs get none.
"""

import hashlib

# git's object types -> Software Heritage's names for a branch's target.
TARGET_TYPES = {"commit": "revision", "tag": "release", "tree": "directory", "blob": "content"}


def of(commit: str, tree: str, branches: dict[str, tuple[str, str]] | None) -> dict[str, str]:
    """kind -> SWHID: rev and dir; snp when `branches` (name -> (git object type, object
    name); HEAD -> ("alias", the branch it names)) are given; {} for a SHA-256 repository."""
    if len(commit) != 40:
        return {}
    found = {"rev": f"swh:1:rev:{commit}", "dir": f"swh:1:dir:{tree}"}
    if branches:
        found["snp"] = f"swh:1:snp:{snapshot_id(branches)}"
    return found


def loaded(name: str) -> bool:
    """Whether Software Heritage's git loader keeps a ref of this name (its
    ignore_branch_name: no peeled ref, no pull request's automatic merge)."""
    automatic_merge = name.startswith("refs/pull/") and name.endswith("/merge")
    return not name.endswith("^{}") and not automatic_merge


def snapshot_id(branches: dict[str, tuple[str, str]]) -> str:
    """The id of a Software Heritage snapshot of `branches` (see of()), of those its loader
    keeps (loaded()): each, sorted by name as bytes, as `<target type> <name>NUL<length>:
    <target>`, in an object of git's form."""
    manifest = b""
    kept = ((name.encode(), value) for name, value in branches.items() if loaded(name))
    for name, (kind, target) in sorted(kept):
        if kind == "alias":
            type_name, target_bytes = b"alias", target.encode()
        else:
            type_name, target_bytes = TARGET_TYPES[kind].encode(), bytes.fromhex(target)
        manifest += b"%s %s\0%d:%s" % (type_name, name, len(target_bytes), target_bytes)
    return hashlib.sha1(b"snapshot %d\0" % len(manifest) + manifest).hexdigest()
