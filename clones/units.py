"""Sizes, durations and ages as people read them, and the seconds an age is counted in.

Ground floor: imports nothing of cloneshelf's, so that any layer may use it."""

from datetime import datetime

from django.utils import timezone


def seconds_since(moment: datetime | None, now: datetime | None = None) -> float | None:
    """Seconds from `moment` to `now` (by default, now), never below zero; None for no moment."""
    if moment is None:
        return None
    return max(0.0, ((now or timezone.now()) - moment).total_seconds())


def human_size(size: int) -> str:
    """1536 -> "1.5 KiB", 2**31 -> "2 GiB"."""
    scaled = float(size)
    for unit in ["bytes", "KiB", "MiB", "GiB"]:
        if scaled < 1024:
            return f"{round(scaled, 1):g} {unit}"
        scaled /= 1024
    return f"{round(scaled, 1):g} TiB"


def human_age(seconds: float | None) -> str:
    """How long ago, to the second: a tenth of a second tells nothing here."""
    return human_duration(None if seconds is None else round(seconds))


def human_duration(seconds: float | None) -> str:
    """4.25 -> "4.2 s", 4 -> "4 s", 125 -> "2 min 5 s", 7260 -> "2 h 1 min", 90000 -> "1 d 1 h"."""
    if seconds is None:
        return "—"
    if seconds < 10 and not float(seconds).is_integer():
        return f"{seconds:.1f} s"
    whole = round(seconds)
    for size, name, part, part_name in [
        (86400, "d", 3600, "h"),
        (3600, "h", 60, "min"),
        (60, "min", 1, "s"),
    ]:
        if whole >= size:
            major, rest = divmod(whole, size)
            minor = rest // part
            return f"{major} {name} {minor} {part_name}" if minor else f"{major} {name}"
    return f"{whole} s"
