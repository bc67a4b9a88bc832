"""Access tokens for private repositories, on their way from the form to one clone.

A token is never written to the database (the ORM broker's task payloads live there too), the
logs or the job page. It waits in a file readable by our uid only, under
CLONES_DATA_DIR/tokens, which both the web process and the worker see, until its clone has run;
then it is deleted.
"""

import os
from pathlib import Path
from uuid import UUID

from django.conf import settings


def _path(job_id: UUID) -> Path:
    return settings.CLONES_DATA_DIR / "tokens" / str(job_id)


def keep(job_id: UUID, token: str) -> None:
    path = _path(job_id)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    # O_EXCL and mode 0600 from the start: the token is never readable by anyone else.
    with open(path, "x", opener=_open_private) as file:
        file.write(token)


def _open_private(name: str, flags: int) -> int:
    return os.open(name, flags, 0o600)


def read(job_id: UUID) -> str:
    """The job's token, or "" if it has none (or it was already used)."""
    try:
        return _path(job_id).read_text()
    except FileNotFoundError:
        return ""


def discard(job_id: UUID) -> None:
    _path(job_id).unlink(missing_ok=True)


def waiting() -> list[Path]:
    """Every token file, named by its job's id."""
    folder = settings.CLONES_DATA_DIR / "tokens"
    return list(folder.iterdir()) if folder.exists() else []
