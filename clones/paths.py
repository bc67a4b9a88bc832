"""Where a job's files live, as the app sees them and as the Docker engine sees them.

A bind mount is resolved on the engine's filesystem, not ours. With docker-in-docker the worker
and the engine mount one volume at different paths, so every path handed to the engine must be
translated from CLONES_DATA_DIR (ours) to CLONES_ENGINE_DATA_DIR (the engine's).
"""

import os
import shutil
from pathlib import Path, PurePosixPath
from uuid import UUID

from django.conf import settings


def jobs_root() -> Path:
    return settings.CLONES_DATA_DIR / "jobs"


def job_dir(job_id: UUID) -> Path:
    return jobs_root() / str(job_id)


def engine_path(app_path: Path) -> PurePosixPath:
    """The path at which the engine sees `app_path`, a path inside CLONES_DATA_DIR."""
    relative = Path(app_path).relative_to(settings.CLONES_DATA_DIR)
    return PurePosixPath(settings.CLONES_ENGINE_DATA_DIR) / relative


def create_job_dir(job_id: UUID, owner: tuple[int, int]) -> Path:
    """A fresh, empty directory for one job, owned by `owner` (uid, gid): the clone container's
    user, who must write in it. A leftover from a dead attempt is discarded."""
    remove_job_dir(job_id)
    path = job_dir(job_id)
    path.mkdir(parents=True, mode=0o700)
    if (os.getuid(), os.getgid()) != owner:
        os.chown(path, *owner)  # only root gets here: a non-root worker's containers are itself
    return path


def remove_job_dir(job_id: UUID) -> None:
    # Not ignore_errors: a directory we cannot delete is a leak someone must hear about.
    path = job_dir(job_id)
    if path.exists():
        shutil.rmtree(path)


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


def human_size(size: int) -> str:
    """1536 -> "1.5 KiB", 2**31 -> "2 GiB"."""
    scaled = float(size)
    for unit in ["bytes", "KiB", "MiB", "GiB"]:
        if scaled < 1024:
            return f"{round(scaled, 1):g} {unit}"
        scaled /= 1024
    return f"{round(scaled, 1):g} TiB"
