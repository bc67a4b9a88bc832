"""Where a job's files live, as the app sees them and as the Docker engine sees them.

A bind mount is resolved on the engine's filesystem, not ours. With docker-in-docker the worker
and the engine mount one volume at different paths, so every path handed to the engine must be
translated from CLONES_DATA_DIR (ours) to CLONES_ENGINE_DATA_DIR (the engine's).
"""

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


def create_job_dir(job_id: UUID) -> Path:
    """A fresh, empty directory for one job (a leftover from a dead attempt is discarded)."""
    remove_job_dir(job_id)
    path = job_dir(job_id)
    path.mkdir(parents=True)
    return path


def remove_job_dir(job_id: UUID) -> None:
    # Not ignore_errors: a directory we cannot delete is a leak someone must hear about.
    path = job_dir(job_id)
    if path.exists():
        shutil.rmtree(path)
