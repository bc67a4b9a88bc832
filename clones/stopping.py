"""Whether this worker's cluster has been asked to stop, as its worker processes see it.

`manage.py worker` names a file in CLONESHELF_STOP_FILE before django-q2 forks its processes,
and touches it on SIGTERM. django-q2 then lets running tasks finish; a clone still running
CLONES_STOP_GRACE seconds later is stopped and handed back to the queue instead.
"""

import os
import time
from pathlib import Path

ENVIRONMENT_VARIABLE = "CLONESHELF_STOP_FILE"


def announce_at(path: Path) -> None:
    """For the processes forked from now on: the stop will be announced at `path`."""
    path.unlink(missing_ok=True)
    os.environ[ENVIRONMENT_VARIABLE] = str(path)


def announce() -> None:
    Path(os.environ[ENVIRONMENT_VARIABLE]).touch()


def forget() -> None:
    """Once the cluster has stopped: the file has served its purpose."""
    Path(os.environ[ENVIRONMENT_VARIABLE]).unlink(missing_ok=True)


def seconds_since_requested() -> float | None:
    """How long ago the stop was announced; None if it was not (or under plain qcluster)."""
    try:
        return time.time() - os.stat(os.environ[ENVIRONMENT_VARIABLE]).st_mtime
    except (KeyError, FileNotFoundError):
        return None
