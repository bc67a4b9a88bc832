"""Files of secret keys on the data volume (the credential keys, the signing keys): readable by
this user only, never seen empty or half written."""

import os
import tempfile
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path


def read(path: Path, first: Callable[[], str]) -> str:
    """The file's text; on the first use, `first()` written to it. Written whole under another
    name, then linked to its own: a reader never sees it empty or half written, and two
    processes starting at once write it once (the second link fails): the loser reads the
    winner's."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):
            _put(path, first(), os.link)
    return path.read_text()


def replace(path: Path, text: str) -> None:
    """Put `text` in the file in one step (a rename)."""
    _put(path, text, os.replace)


def _put(path: Path, text: str, put) -> None:
    """Write `text` to a private temporary file beside `path`, then `put(temporary, path)`."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-")  # mode 0600
    try:
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        put(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)
