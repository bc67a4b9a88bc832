"""Sizes, durations and ages in words, and the seconds an age is counted in (pure units)."""

from datetime import UTC, datetime, timedelta

import pytest

from clones import units

NOON = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1536, "1.5 KiB"),
        (2**31, "2 GiB"),
        (3 * 2**40, "3 TiB"),
    ],
)
def test_sizes_in_words(size, shown):
    assert units.human_size(size) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(None, "—"), (4.25, "4.2 s"), (59.6, "1 min"), (125, "2 min 5 s"), (7260, "2 h 1 min")],
)
def test_durations_in_words(seconds, shown):
    assert units.human_duration(seconds) == shown


def test_an_age_is_told_to_the_second():
    assert units.human_age(4.25) == "4 s"
    assert units.human_age(None) == "—"


def test_seconds_since_a_moment_never_below_zero():
    assert units.seconds_since(NOON - timedelta(seconds=90), NOON) == 90
    assert units.seconds_since(NOON + timedelta(seconds=5), NOON) == 0
    assert units.seconds_since(None, NOON) is None


def test_seconds_since_counts_to_now_by_default():
    assert 3600 <= units.seconds_since(datetime.now(UTC) - timedelta(hours=1)) < 3600 + 60
