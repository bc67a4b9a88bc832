"""A corpus of real-world git histories, each a bare repository under the served root.

Generated test repositories made by a well-behaved git pass everything; real ones do not. These
builders write the odd objects that real histories carry byte by byte (`git hash-object
--literally` takes what no porcelain would write), so each case is exactly the quirk it names.
Every builder takes the served root and a unique name and returns a ServedRepo; they take well
under a second each, except the big file's.
"""

import random
import subprocess
from pathlib import Path

from .gitservers import free_port
from .repos import GIT_ENV, ServedRepo, git

TREE = "40000"
FILE = "100644"
EXECUTABLE = "100755"
SYMLINK = "120000"
GITLINK = "160000"
IDENT = b"A U Thor <author@example.invalid> 1700000000 +0000"
BIG_FILE_BYTES = 100 * 1024 * 1024
LONG_NAME = 255  # bytes: the longest file name ext4, xfs and overlayfs take
TOO_LONG_NAME = 300

# A path: bytes (for names that are not UTF-8) or str. What is there: a file's bytes (mode
# 100644), (mode, bytes or str) for an executable or a symlink (its target), or (GITLINK, the
# id of a commit in another repository).
Entry = bytes | tuple[str, bytes | str]


class Bare:
    """A bare repository written with plumbing only, so that no porcelain check stands between
    the test and the bytes real histories contain."""

    def __init__(self, served_root: Path, name: str, branch: str = "main", sha256: bool = False):
        self.name = f"{name}.git"
        self.path = served_root / self.name
        formats = ["--object-format=sha256"] if sha256 else []
        init = ["init", "--quiet", "--bare", f"--initial-branch={branch}", *formats]
        git(*init, str(self.path), cwd=served_root)
        self.branch = branch

    def write(self, kind: str, data: bytes) -> str:
        """Store any object as given, however git's own checks would judge it."""
        result = subprocess.run(
            ["git", "hash-object", "-w", "--literally", "-t", kind, "--stdin"],
            input=data,
            cwd=self.path,
            env=GIT_ENV,
            capture_output=True,
            check=True,
        )
        return result.stdout.decode().strip()

    def tree(self, entries: dict[bytes | str, tuple[str, str]]) -> str:
        """A tree of name -> (mode as written, object id), in git's order: a subtree sorts as if
        its name ended in "/". The mode is written verbatim, zero padding included."""

        def order(item: tuple[bytes, tuple[str, str]]) -> bytes:
            name, (mode, _) = item
            return name + b"/" if mode.lstrip("0") == TREE else name

        body = b"".join(
            mode.encode() + b" " + name + b"\0" + bytes.fromhex(oid)
            for name, (mode, oid) in sorted(((_bytes(n), e) for n, e in entries.items()), key=order)
        )
        return self.write("tree", body)

    def files(self, files: dict[bytes | str, Entry], tree_mode: str = TREE) -> str:
        """The tree of `files` (path -> Entry), subtrees made from the paths' directories."""
        top: dict[bytes, tuple[str, str]] = {}
        subtrees: dict[bytes, dict[bytes, Entry]] = {}
        for path, entry in files.items():
            first, slash, rest = _bytes(path).partition(b"/")
            if slash:
                subtrees.setdefault(first, {})[rest] = entry
            elif isinstance(entry, bytes):
                top[first] = (FILE, self.write("blob", entry))
            elif entry[0] == GITLINK:
                top[first] = entry
            else:
                top[first] = (entry[0], self.write("blob", _bytes(entry[1])))
        for name, below in subtrees.items():
            top[name] = (tree_mode, self.files(below, tree_mode))
        return self.tree(top)

    def commit(
        self,
        tree: str,
        parents: tuple[str, ...] = (),
        message: bytes = b"a change\n",
        author: bytes = IDENT,
        committer: bytes = IDENT,
    ) -> str:
        """A commit with its author and committer lines exactly as given (an `author` with a
        newline in it makes two lines)."""
        lines = [b"tree " + tree.encode(), *(b"parent " + p.encode() for p in parents)]
        lines += [b"author " + author, b"committer " + committer]
        return self.write("commit", b"\n".join(lines) + b"\n\n" + message)

    def set_refs(self, refs: dict[str, str]) -> None:
        """Point every ref at its object in one transaction (10,000 tags take a moment)."""
        stdin = "".join(f"update {ref} {oid}\n" for ref, oid in refs.items())
        command = ["git", "update-ref", "--stdin"]
        subprocess.run(command, input=stdin.encode(), cwd=self.path, env=GIT_ENV, check=True)

    def served(self, head: str, refs: dict[str, str] | None = None) -> ServedRepo:
        """Publish `head` as the default branch (plus `refs`) and describe the repository."""
        if head:
            self.set_refs({f"refs/heads/{self.branch}": head, **(refs or {})})
        return ServedRepo(name=self.name, bare=self.path, head=head, refs={self.branch: head})


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


def _ordinary(repo: Bare) -> str:
    """A commit real histories would start with: the quirk comes on top of it."""
    return repo.commit(repo.files({"README.md": b"# project\n", "src/main.py": b"print(1)\n"}))


def _with_quirky_commit(repo: Bare, **commit) -> ServedRepo:
    parent = _ordinary(repo)
    tree = repo.files({"README.md": b"# project\n", "src/main.py": b"print(2)\n"})
    return repo.served(repo.commit(tree, (parent,), **commit))


# -- Legacy objects that git's fsck complains about, but plain `git clone` takes -----------------


def zero_padded_modes(served_root: Path, name: str) -> ServedRepo:
    """pallets/flask: trees whose subtree mode is written "040000" instead of "40000" (old git
    and some libraries did). fsck: zeroPaddedFilemode, an error under transfer.fsckObjects."""
    repo = Bare(served_root, name)
    parent = _ordinary(repo)
    tree = repo.files(
        {"README.md": b"# flask\n", "flask/__init__.py": b"", "flask/app/core.py": b"app = 1\n"},
        tree_mode="040000",
    )
    return repo.served(repo.commit(tree, (parent,)))


def bad_time_zone(served_root: Path, name: str) -> ServedRepo:
    """psf/requests: a commit whose author time zone has five digits ("-07000"). fsck:
    badTimezone."""
    return _with_quirky_commit(
        Bare(served_root, name), author=b"Kenneth <me@example.invalid> 1313584730 -07000"
    )


def missing_space_before_date(served_root: Path, name: str) -> ServedRepo:
    """An author line with no space between the e-mail and the date, as some converters wrote.
    fsck: missingSpaceBeforeDate."""
    return _with_quirky_commit(Bare(served_root, name), author=b"A <a@b>1234567890 +0000")


def group_writable_modes(served_root: Path, name: str) -> ServedRepo:
    """Files with mode 100664, which git before 2005 recorded for group-writable files (git/git
    itself has them). fsck: badFilemode, which is only "info"."""
    repo = Bare(served_root, name)
    parent = _ordinary(repo)
    tree = repo.tree(
        {
            "Makefile": ("100664", repo.write("blob", b"all:\n\ttrue\n")),
            "README": (FILE, repo.write("blob", b"readme\n")),
        }
    )
    return repo.served(repo.commit(tree, (parent,)))


# Each of git's legacy author-line findings, one per commit, as CVS, SVN and hg importers and
# early git wrote them; the fsck message id each one raises.
ODD_AUTHOR_LINES = {
    "missingEmail": b"Jane Doe 1234567890 +0000",
    "badDate": b"Jane Doe <jane@example.invalid> yesterday +0000",
    "zeroPaddedDate": b"Jane Doe <jane@example.invalid> 01234567890 +0000",
    "badDateOverflow": b"Jane Doe <jane@example.invalid> 99999999999999999999 +0000",
    "missingNameBeforeEmail": b"<jane@example.invalid> 1234567890 +0000",
    "missingSpaceBeforeEmail": b"Jane Doe<jane@example.invalid> 1234567890 +0000",
    "badEmail": b"Jane Doe <jane@exa<mple.invalid> 1234567890 +0000",
    "badName": b"Jane> Doe <jane@example.invalid> 1234567890 +0000",
}


def odd_author_lines(served_root: Path, name: str) -> ServedRepo:
    """A history in which every commit carries another legacy author-line oddity (missing
    e-mail, unparsable or overflowing date, ...), plus one with two author lines and one with a
    NUL byte in its message: what imported histories are made of. fsck: the ids in
    ODD_AUTHOR_LINES, multipleAuthors, nulInCommit."""
    repo = Bare(served_root, name)
    head = _ordinary(repo)
    for index, author in enumerate(ODD_AUTHOR_LINES.values()):
        tree = repo.files({"README.md": b"# project\n", "log.txt": f"{index}\n".encode()})
        head = repo.commit(tree, (head,), author=author)
    tree = repo.files({"README.md": b"# project\n", "log.txt": b"two authors\n"})
    head = repo.commit(tree, (head,), author=IDENT + b"\nauthor " + IDENT)
    tree = repo.files({"README.md": b"# project\n", "log.txt": b"nul\n"})
    head = repo.commit(tree, (head,), message=b"a NUL \0 in the message\n")
    return repo.served(head)


# -- Working trees that stretch the file system and the tar format ---------------------------


def awkward_file_names(served_root: Path, name: str) -> ServedRepo:
    """Names that are not UTF-8 (latin-1, as old Windows and Mac repositories have), a name of
    255 bytes, and a path of about 3,000 bytes (deep generated trees): tar must carry them."""
    deep = "/".join(f"{level:02d}" + "d" * 198 for level in range(15)) + "/leaf.txt"
    files: dict[bytes | str, Entry] = {
        b"caf\xe9.txt": b"latin-1 name\n",
        b"dir-\xe4\xf6\xfc/r\xe9sum\xe9.txt": b"latin-1 directory\n",
        "x" * (LONG_NAME - 4) + ".txt": b"255 bytes\n",
        deep: b"deep\n",
        "unicode-ñ-日本.txt": b"utf-8 name\n",
    }
    repo = Bare(served_root, name)
    return repo.served(repo.commit(repo.files(files), (_ordinary(repo),)))


def case_colliding_paths(served_root: Path, name: str) -> ServedRepo:
    """README and readme side by side (and Docs/docs directories), as repositories made on
    Linux have; fine on a case-sensitive file system, and both must be in the archive."""
    repo = Bare(served_root, name)
    files = {
        "README": b"upper\n",
        "readme": b"lower\n",
        "Docs/a.txt": b"upper dir\n",
        "docs/a.txt": b"lower dir\n",
    }
    return repo.served(repo.commit(repo.files(files)))


def line_endings(served_root: Path, name: str) -> ServedRepo:
    """`* text=auto` with a file marked `eol=crlf` (converted on checkout), and a blob committed
    with CRLF before the attribute came (real repositories have many: git leaves them alone)."""
    repo = Bare(served_root, name)
    files = {
        ".gitattributes": b"* text=auto\n*.bat text eol=crlf\n*.bin binary\n",
        "unix.txt": b"one\ntwo\n",
        "run.bat": b"@echo off\necho run\n",
        "windows.txt": b"committed\r\nwith crlf\r\n",
        "mixed.txt": b"mixed\r\nline\nendings\r\n",
        "data.bin": b"\r\n\0\r\n",
    }
    return repo.served(repo.commit(repo.files(files)))


def export_ignore(served_root: Path, name: str) -> ServedRepo:
    """`export-ignore` and `export-subst` attributes, which only `git archive` honours: a clone
    keeps the files, and keeps "$Format:...$" as it is."""
    repo = Bare(served_root, name)
    files = {
        ".gitattributes": b"tests/ export-ignore\n.github export-ignore\nsecret.txt export-ignore\n"
        b"*.md export-subst\n",
        "NOTES.md": b"$Format:%H$\n",
        ".github/workflows/ci.yml": b"on: push\n",
        "tests/test_it.py": b"assert True\n",
        "secret.txt": b"still cloned\n",
        "src/lib.py": b"x = 1\n",
    }
    return repo.served(repo.commit(repo.files(files)))


def links_and_modes(served_root: Path, name: str) -> ServedRepo:
    """Symlinks within the tree, to /etc/passwd, dangling, and to a directory; executables."""
    repo = Bare(served_root, name)
    files: dict[bytes | str, Entry] = {
        "README.md": b"# links\n",
        "bin/tool": (EXECUTABLE, b"#!/bin/sh\necho tool\n"),
        "bin/plain": b"not executable\n",
        "link-to-readme": (SYMLINK, "README.md"),
        "link-outside": (SYMLINK, "/etc/passwd"),
        "link-dangling": (SYMLINK, "no/such/file"),
        "link-to-dir": (SYMLINK, "bin"),
        "link-up": (SYMLINK, "../../../../etc/shadow"),
    }
    return repo.served(repo.commit(repo.files(files)))


def submodule(served_root: Path, name: str) -> ServedRepo:
    """A gitlink (mode 160000) to a commit this repository does not have, and a .gitmodules
    pointing at a port where nothing listens, as vendored dependencies look: a clone must not
    recurse (it would fail to connect) and must leave the directory empty."""
    repo = Bare(served_root, name)
    url = f"http://127.0.0.1:{free_port()}/x"
    files: dict[bytes | str, Entry] = {
        ".gitmodules": f'[submodule "vendor/lib"]\n\tpath = vendor/lib\n\turl = {url}\n'.encode(),
        "vendor/lib": (GITLINK, "1234567890abcdef1234567890abcdef12345678"),
        "main.c": b"int main(void) { return 0; }\n",
    }
    return repo.served(repo.commit(repo.files(files)))


# -- Refs -----------------------------------------------------------------------------------------

MANY_TAGS = 10_000
ANNOTATED_TAGS = 200
MANY_BRANCHES = 300


def many_refs(served_root: Path, name: str) -> ServedRepo:
    """10,000 tags (200 of them annotated) and 300 branches, as long-lived projects with a tag
    per nightly build have: the ref advertisement alone is hundreds of KiB."""
    repo = Bare(served_root, name)
    commits = [_ordinary(repo)]
    for index in range(1, 20):
        tree = repo.files({"README.md": b"# project\n", "version": f"{index}\n".encode()})
        commits.append(repo.commit(tree, (commits[-1],)))
    refs = {f"refs/heads/branch-{i:03d}": commits[i % len(commits)] for i in range(MANY_BRANCHES)}
    refs |= {f"refs/tags/nightly-{i:05d}": commits[i % len(commits)] for i in range(MANY_TAGS)}
    for index in range(ANNOTATED_TAGS):
        tag = f"v{index}.0"
        body = (
            f"object {commits[index % len(commits)]}\ntype commit\ntag {tag}\n".encode()
            + b"tagger "
            + IDENT
            + f"\n\nrelease {tag}\n".encode()
        )
        refs[f"refs/tags/{tag}"] = repo.write("tag", body)
    repo.set_refs(refs)
    git("pack-refs", "--all", cwd=repo.path)  # as a server keeps them; 10,000 loose files are not
    return repo.served(commits[-1])


def unusual_default_branch(served_root: Path, name: str) -> ServedRepo:
    """HEAD -> refs/heads/trunk, with main and master present but older: the clone must follow
    the server's HEAD, not guess."""
    repo = Bare(served_root, name, branch="trunk")
    first = _ordinary(repo)
    trunk = repo.commit(repo.files({"README.md": b"# on trunk\n"}), (first,))
    return repo.served(trunk, {"refs/heads/main": first, "refs/heads/master": first})


def default_branch_deleted(served_root: Path, name: str) -> ServedRepo:
    """HEAD still names "main", which was deleted after "release" was pushed: the repository has
    history, but no default branch to check out."""
    repo = Bare(served_root, name)
    repo.set_refs({"refs/heads/release": _ordinary(repo)})
    return ServedRepo(name=repo.name, bare=repo.path, head="", refs={})


def empty(served_root: Path, name: str) -> ServedRepo:
    """A repository created and never pushed to: no refs, no objects."""
    return Bare(served_root, name).served("")


def sha256_objects(served_root: Path, name: str) -> ServedRepo:
    """A repository in SHA-256 object format (`git init --object-format=sha256`), with a
    subtree, an executable and a symlink, so the object names of every kind are 64 digits."""
    repo = Bare(served_root, name, sha256=True)
    first = repo.commit(repo.files({"README.md": b"# sha256\n"}))
    files: dict[bytes | str, Entry] = {
        "README.md": b"# sha256\n",
        "src/lib.c": b"int x;\n",
        "run.sh": (EXECUTABLE, b"#!/bin/sh\n"),
        "link": (SYMLINK, "README.md"),
    }
    head = repo.commit(repo.files(files), (first,))
    tag = repo.write(
        "tag", f"object {first}\ntype commit\ntag v1\ntagger ".encode() + IDENT + b"\n\nv1\n"
    )
    return repo.served(head, {"refs/tags/v1": tag})


def big_file(served_root: Path, name: str) -> ServedRepo:
    """One 100 MiB file of random bytes (a model, a video, a dump someone committed): really
    100 MiB in the pack, well below the size cap. Written by fast-import uncompressed, as
    random bytes do not compress anyway, so it is built in a second or two."""
    repo = Bare(served_root, name)
    data = random.Random(name).randbytes(BIG_FILE_BYTES)
    stream = b"".join(
        [
            b"blob\nmark :1\n",
            f"data {len(data)}\n".encode(),
            data,
            b"\ncommit refs/heads/main\ncommitter " + IDENT + b"\ndata 9\nbig file\n",
            b"M 100644 :1 model.bin\nM 100644 inline README.md\ndata 6\n# big\n\n",
        ]
    )
    command = ["git", "-c", "core.compression=0", "fast-import", "--quiet"]
    subprocess.run(command, input=stream, cwd=repo.path, env=GIT_ENV, check=True)
    return repo.served(git("rev-parse", "refs/heads/main", cwd=repo.path))


# -- Histories a clone must refuse or cannot check out -------------------------------------------


def dotgit_in_tree(served_root: Path, name: str) -> ServedRepo:
    """A tree with a ".git" directory holding a hook, the shape of CVE-2014-9390 and its kin:
    checked out, it would plant a hook. fsck: hasDotgit, which CLONES_FSCK=standard keeps an
    error; plain git (no fsck) fetches it and then refuses to check the path out."""
    repo = Bare(served_root, name)
    hook = (EXECUTABLE, b"#!/bin/sh\necho pwned > /tmp/pwned\n")
    tree = repo.files({"README.md": b"# innocent\n", ".git/hooks/post-checkout": hook})
    return repo.served(repo.commit(tree, (_ordinary(repo),)))


def name_too_long(served_root: Path, name: str) -> ServedRepo:
    """A file name of 300 bytes, more than Linux file systems take (255): git has it, but no
    checkout can write it."""
    repo = Bare(served_root, name)
    tree = repo.files({"README.md": b"# long\n", "n" * TOO_LONG_NAME: b"too long\n"})
    return repo.served(repo.commit(tree, (_ordinary(repo),)))
