"""Whether this worker's cluster has been asked to stop, as its worker processes see it.

`manage.py worker` names a file in CLONESHELF_STOP_FILE before django-q2 forks its processes,
and touches it on SIGTERM or SIGINT. django-q2 then lets running tasks finish; a clone still
running CLONES_STOP_GRACE seconds later is stopped and handed back to the queue instead, or at
once if a second signal comes.
"""

import os
import time
from pathlib import Path

from django.conf import settings

ENVIRONMENT_VARIABLE = "CLONESHELF_STOP_FILE"


def announce_at(path: Path) -> None:
    """For the processes forked from now on: the stop will be announced at `path`."""
    path.unlink(missing_ok=True)
    os.environ[ENVIRONMENT_VARIABLE] = str(path)


def announce() -> None:
    Path(os.environ[ENVIRONMENT_VARIABLE]).touch()


def hurry() -> None:
    """End the grace period now. The workers learn of the stop from the file's age alone, so a
    file dated earlier than the grace period is all it takes: their next look (about once a
    second) stops running clones and hands them back, as if the grace had run out."""
    announce()
    past_the_grace = time.time() - settings.CLONES_STOP_GRACE - 1
    os.utime(os.environ[ENVIRONMENT_VARIABLE], (past_the_grace, past_the_grace))


def forget() -> None:
    """Once the cluster has stopped: the file has served its purpose."""
    Path(os.environ[ENVIRONMENT_VARIABLE]).unlink(missing_ok=True)


def seconds_since_requested() -> float | None:
    """How long ago the stop was announced; None if it was not (or under plain qcluster)."""
    try:
        return time.time() - os.stat(os.environ[ENVIRONMENT_VARIABLE]).st_mtime
    except (KeyError, FileNotFoundError):
        return None
