"""Git repositories built for the tests, served bare by the test git servers."""

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "Test Author",
    "GIT_AUTHOR_EMAIL": "author@example.invalid",
    "GIT_COMMITTER_NAME": "Test Author",
    "GIT_COMMITTER_EMAIL": "author@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}


def git(*args: str, cwd: Path) -> str:
    result = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


@dataclass
class ServedRepo:
    name: str  # as served: "<name>.git"
    bare: Path
    head: str  # the default branch's commit
    refs: dict[str, str] = field(default_factory=dict)  # branch or tag -> commit


def make_repo(
    served_root: Path, name: str, extra_bytes: int = 0, files: dict[str, str] | None = None
) -> ServedRepo:
    """A repository with history, a branch, an annotated tag, an executable and a symlink.

    `extra_bytes` of incompressible data are added over several commits, for big-repo tests;
    `files` (path -> text) are added to the second commit.
    """
    work = served_root.parent / "work" / name
    work.mkdir(parents=True)
    git("init", "--quiet", "--initial-branch=main", cwd=work)
    (work / "README.md").write_text(f"# {name}\n")
    (work / "docs").mkdir()
    (work / "docs" / "guide.txt").write_text("how to use it\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "first", cwd=work)
    git("tag", "-a", "v1.0", "-m", "release 1.0", cwd=work)
    tag_commit = git("rev-parse", "HEAD", cwd=work)

    script = work / "bin" / "run.sh"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\necho run\n")
    script.chmod(0o755)
    (work / "link-to-readme").symlink_to("README.md")
    (work / "link-outside").symlink_to("/etc/passwd")  # must stay a link, never be read
    for path, text in (files or {}).items():
        (work / path).write_text(text)
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "second", cwd=work)
    _add_bulk(work, extra_bytes)

    git("checkout", "--quiet", "-b", "feature", cwd=work)
    (work / "feature.txt").write_text("only on the feature branch\n")
    git("add", ".", cwd=work)
    git("commit", "--quiet", "-m", "feature", cwd=work)
    feature_commit = git("rev-parse", "HEAD", cwd=work)
    git("checkout", "--quiet", "main", cwd=work)
    head = git("rev-parse", "HEAD", cwd=work)

    bare = served_root / f"{name}.git"
    git("clone", "--quiet", "--bare", str(work), str(bare), cwd=served_root)
    return ServedRepo(
        name=f"{name}.git",
        bare=bare,
        head=head,
        refs={"main": head, "feature": feature_commit, "v1.0": tag_commit},
    )


def add_submodule(work: Path, url: str, path: str, source: Path, commit: str = "") -> None:
    """Add the repository at `source` to the work tree `work` as a submodule at `path`, recorded
    at `commit` (its HEAD if none), and named by `url` in .gitmodules: what clones fetch. Staged,
    not committed."""
    git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", str(source), path,
        cwd=work)  # fmt: skip
    if commit:
        git("checkout", "--quiet", commit, cwd=work / path)
    git("config", "-f", ".gitmodules", f"submodule.{path}.url", url, cwd=work)
    git("add", ".gitmodules", path, cwd=work)


def remove_object(repo: ServedRepo, path: str) -> str:
    """Delete the object (blob or tree) of `path` at HEAD from the served copy, as a damaged
    disk might: its refs still read, but sending the objects fails. The object's name."""
    name = git("rev-parse", f"HEAD:{path}", cwd=repo.bare)
    (repo.bare / "objects" / name[:2] / name[2:]).unlink()  # loose, as `git clone` left it
    return name


def _add_bulk(work: Path, total_bytes: int, commits: int = 5) -> None:
    for index in range(commits if total_bytes else 0):
        (work / f"blob-{index}.bin").write_bytes(os.urandom(total_bytes // commits))
        git("add", ".", cwd=work)
        git("commit", "--quiet", "-m", f"bulk {index}", cwd=work)


def make_tiny_repo(served_root: Path, name: str) -> ServedRepo:
    """A bare repository with one commit whose README names it, in one `git fast-import`: cheap
    enough to make a hundred."""
    bare = served_root / f"{name}.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=served_root)
    readme = f"# {name}\n".encode()
    stream = (
        b"commit refs/heads/main\n"
        b"committer Test Author <author@example.invalid> 1700000000 +0000\n"
        b"data 6\nfirst\n"
        b"M 100644 inline README.md\n" + f"data {len(readme)}\n".encode() + readme + b"\n"
    )
    subprocess.run(
        ["git", "fast-import", "--quiet"], input=stream, cwd=bare, env=GIT_ENV, check=True
    )
    head = git("rev-parse", "main", cwd=bare)
    return ServedRepo(name=f"{name}.git", bare=bare, head=head, refs={"main": head})


def make_wide_repo(served_root: Path, name: str, files: int) -> ServedRepo:
    """One commit of `files` small files in a hundred directories: a checkout that takes
    seconds to write and to delete, as big real projects do."""
    bare = served_root / f"{name}.git"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare), cwd=served_root)
    stream = [
        b"commit refs/heads/main\n"
        b"committer Test Author <author@example.invalid> 1700000000 +0000\n"
        b"data 5\nwide\n"
    ]
    for index in range(files):
        content = f"file {index}\n".encode()
        path = f"dir{index % 100:02d}/file{index:06d}.txt"
        stream.append(f"M 100644 inline {path}\ndata {len(content)}\n".encode() + content + b"\n")
    subprocess.run(
        ["git", "fast-import", "--quiet"], input=b"".join(stream), cwd=bare, env=GIT_ENV, check=True
    )
    head = git("rev-parse", "main", cwd=bare)
    return ServedRepo(name=f"{name}.git", bare=bare, head=head, refs={"main": head})
