"""Paths inside a repository that a person limits an archive to (a job's `paths`): checked and
put in one spelling before anything runs, so that git is only ever given a plain relative path
(never `..`, never an option, never a pattern) and two spellings of the same paths share a
snapshot."""

import unicodedata

from django.core.exceptions import ValidationError

CONTROL = {"Cc", "Zl", "Zp"}  # control characters, line and paragraph separators
MAX_PATHS = 20
MAX_PATH_LENGTH = 4096  # PATH_MAX: no file git can check out has a longer name


def check(lines: list[str]) -> list[str]:
    """The paths in `lines` (one a line; blank lines skipped), each in its one spelling (no
    leading `./` or `/`, no trailing `/`, no repeated `/`), without duplicates, in byte order.
    ValidationError naming the first line that is not a path inside the repository."""
    paths = set()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            paths.add(_one(line))
        except ValidationError as error:
            raise ValidationError(f"Line {number}: {error.messages[0]}") from None
    if len(paths) > MAX_PATHS:
        raise ValidationError(
            f"That is {len(paths)} paths; an archive takes at most {MAX_PATHS}: give the "
            "folders that hold them."
        )
    return sorted(paths, key=lambda path: path.encode())


def _one(line: str) -> str:
    text = line.strip()  # a name that starts or ends with a space is not worth the confusion
    if len(text) > MAX_PATH_LENGTH:
        raise ValidationError(f"A path is at most {MAX_PATH_LENGTH} characters.")
    if any(unicodedata.category(char) in CONTROL for char in text):
        raise ValidationError(f"{text!r} has a control character, which no path here has.")
    parts = [part for part in text.split("/") if part and part != "."]
    if not parts:
        raise ValidationError(
            f"'{text}' is the whole repository: leave the paths empty to archive all of it."
        )
    if ".." in parts:
        raise ValidationError(f"'{text}' goes up out of the repository ('..').")
    if any(part.lower() == ".git" for part in parts):
        raise ValidationError(f"'{text}' is inside .git, which is not part of any commit.")
    return "/".join(parts)
