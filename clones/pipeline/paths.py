"""Where a job's files live, as the app sees them and as the Docker engine sees them.

A bind mount is resolved on the engine's filesystem, not ours. With docker-in-docker the worker
and the engine mount one volume at different paths, so every path handed to the engine must be
translated from CLONES_DATA_DIR (ours) to CLONES_ENGINE_DATA_DIR (the engine's).
"""

import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from uuid import UUID, uuid4

from django.conf import settings


def jobs_root() -> Path:
    return settings.CLONES_DATA_DIR / "jobs"


def job_dir(job_id: UUID) -> Path:
    return jobs_root() / str(job_id)


def engine_path(app_path: Path) -> PurePosixPath:
    """The path at which the engine sees `app_path`, a path inside CLONES_DATA_DIR."""
    relative = Path(app_path).relative_to(settings.CLONES_DATA_DIR)
    return PurePosixPath(settings.CLONES_ENGINE_DATA_DIR) / relative


@contextmanager
def private_files(
    directory: Path, contents: dict[str, str], owner: tuple[int, int]
) -> Iterator[None]:
    """Each of `contents` (name -> text) as a file in `directory` that only `owner` (uid, gid)
    can read, for as long as the context lasts: the secrets a clone container reads (a token,
    an SSH key), in files so that they show in no command line and no `docker inspect`."""
    try:
        for name, text in contents.items():
            path = directory / name
            path.touch(mode=0o600)
            os.chown(path, *owner)  # the owner's before it holds anything
            path.write_text(text)
        yield
    finally:
        for name in contents:
            (directory / name).unlink(missing_ok=True)


class Busy(Exception):
    """Someone else holds the lock."""


class JobDirBusy(Busy):
    """Someone else holds the job directory's lock."""


@contextmanager
def job_dir_lock(job_id: UUID | str, wait: bool = True) -> Iterator[None]:
    """Hold the job's directory for as long as the block runs, so that one attempt working in it
    and the reaper removing it (which takes seconds for a big checkout) never overlap. Without
    `wait`, raise JobDirBusy at once if it is held."""
    with lock_file(jobs_root() / f"{job_id}.lock", wait, busy=lambda: JobDirBusy(job_id)):
        yield


@contextmanager
def lock_file(path: Path, wait: bool = True, busy=Busy) -> Iterator[None]:
    """Hold the lock file `path` for as long as the block runs. The lock is the kernel's
    (flock): a holder that is killed lets go of it. Without `wait`, raise `busy()` at once if
    it is held."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise busy() from None
        if _names(fd, path):
            break
        os.close(fd)  # its last holder removed the file while we waited: lock the new one
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before letting go: no one can take the old file then
        os.close(fd)


def _names(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def job_ids_on_disk() -> set[str]:
    """Jobs with a directory or a lock file under jobs_root()."""
    root = jobs_root()
    names = [entry.name for entry in root.iterdir()] if root.exists() else []
    return {name.removesuffix(".lock") for name in names}


def create_job_dir(job_id: UUID, owner: tuple[int, int]) -> Path:
    """A fresh, empty directory for one job, owned by `owner` (uid, gid): the clone container's
    user, who must write in it. A leftover from a dead attempt is discarded. Call it holding
    job_dir_lock()."""
    remove_job_dir(job_id)
    path = job_dir(job_id)
    path.mkdir(parents=True, mode=0o700)
    if (os.getuid(), os.getgid()) != owner:
        os.chown(path, *owner)  # only root gets here: a non-root worker's containers are itself
    return path


def discard_job_dir(job_id: UUID) -> str:
    """Move the job's directory out of the way under a name of its own, at once (a rename), and
    return that name: remove it with remove_discarded() once the job is seen to finish.
    Removing a big checkout takes seconds that the person waiting for the job need not wait.
    Call it holding job_dir_lock(job_id). Should the worker die first, the reaper removes it as
    it would any directory no one holds."""
    name = f"{job_id}.discarded-{uuid4().hex[:8]}"
    with suppress(FileNotFoundError):  # nothing was made
        job_dir(job_id).rename(jobs_root() / name)
    return name


def remove_discarded(name: str) -> None:
    with job_dir_lock(name):  # the reaper may be at it: one rmtree at a time
        remove(jobs_root() / name)


def remove_job_dir(job_id: UUID | str) -> bool:
    """Remove the job's directory, if there is one; whether there was."""
    return remove(job_dir(job_id))


def remove(path: Path) -> bool:
    """Remove a file or a directory tree, if it is there; whether it was."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
        return True
    if not path.exists():
        return False
    # What vanishes meanwhile is fine (git, or a dead attempt's container, cleaning up after
    # itself); any other error is a leak someone must hear about, so it is raised.
    shutil.rmtree(path, onexc=_unless_gone)
    return True


def _unless_gone(function, path: str, error: BaseException) -> None:
    if not isinstance(error, FileNotFoundError):
        raise error


def usage(path: Path) -> tuple[int, int]:
    """Bytes and entries below `path`, symlinks not followed; safe while git is writing there."""
    size = count = 0
    pending = [path]
    while pending:
        try:
            entries = list(os.scandir(pending.pop()))
        except FileNotFoundError:
            continue  # git removed a temporary directory as we looked
        for entry in entries:
            count += 1
            try:
                if entry.is_dir(follow_symlinks=False):
                    pending.append(Path(entry.path))
                else:
                    size += entry.stat(follow_symlinks=False).st_size
            except FileNotFoundError:
                continue
    return size, count


def free_bytes() -> int:
    return shutil.disk_usage(settings.CLONES_DATA_DIR).free
