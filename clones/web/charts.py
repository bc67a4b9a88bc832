"""Charts as inline SVG, made on the server: no script, no asset, nothing from a CDN.

Pure functions from numbers per day to markup. Each chart is an image to assistive technology
(role="img"), named by its <title> and summarised in words by its <desc>, which these functions
write from the data itself; the page puts the same numbers in a table beside it. Colours are
at least 5:1 against the white background, stacked segments are parted by white gaps, and the
two lines of a line chart differ in dash and marker as well as in colour. The drawing scales
with its viewBox, from a phone's width to a desktop's.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 560, 300
FONT_SIZE = 16
# The plot area inside the drawing: room above for the legend, left for the y axis and its
# title, below for the dates and the x axis's title, right for half of the last date.
LEFT, RIGHT, TOP, BOTTOM = 72, WIDTH - 28, 44, HEIGHT - 62
Y_TICKS = 4
# A date under every 7th bar, counted back from the last (today's), so they never overlap.
DATE_EVERY = 7
# The share of its slot a bar fills; the rest parts it from its neighbours.
BAR_SHARE = 0.7
GAP = "#ffffff"
AXIS = "#5b6570"
GRID = "#e3e6ea"
TEXT = "#1d232a"
# The second line of a line chart, told apart by more than its colour.
DASHES = ' stroke-dasharray="7 4"'


@dataclass(frozen=True)
class Series:
    label: str
    colour: str
    values: Sequence[float | None]  # one per day; None: nothing to show that day


@dataclass(frozen=True)
class Unit:
    """How values are shown: `name` on the axis and in words; a raw value is divided by `scale`
    (seconds by 60 for minutes). `whole`: only whole numbers make sense (jobs)."""

    name: str
    scale: float = 1
    whole: bool = False

    def show(self, value: float) -> str:
        scaled = value / self.scale
        if self.whole or abs(scaled) >= 100:
            return f"{scaled:,.0f}"
        return f"{scaled:.2f}".rstrip("0").rstrip(".")


JOBS = Unit("jobs", whole=True)


def time_unit(largest_seconds: float) -> Unit:
    """Seconds, minutes or hours, whichever keeps the axis's numbers short."""
    if largest_seconds >= 2 * 3600:
        return Unit("hours", 3600)
    if largest_seconds >= 2 * 60:
        return Unit("minutes", 60)
    return Unit("seconds")


def size_unit(largest_bytes: float) -> Unit:
    """Bytes, or kibi-, mebi- or gibibytes (powers of 1024, as the site's sizes), whichever
    keeps the axis's numbers short. Named in words: the axis's title is capitalized."""
    for name, power in (("gibibytes", 3), ("mebibytes", 2), ("kibibytes", 1)):
        if largest_bytes >= 2 * 1024**power:
            return Unit(name, 1024**power)
    return Unit("bytes", whole=True)


@dataclass(frozen=True)
class Chart:
    """What a chart shows: one value (or None) a day of each series, in `unit`, under `title`;
    `chart_id` names its SVG for the page, `days_are` heads the table of its days."""

    chart_id: str
    title: str
    days: Sequence[date]
    series: Sequence[Series]
    unit: Unit
    days_are: str = "Day"


def stacked_bars(chart: Chart) -> SafeString:
    """One bar a day, made of one segment per series, the first at the bottom."""
    days, series, unit = chart.days, chart.series, chart.unit
    totals = [sum(s.values[index] or 0 for s in series) for index in range(len(days))]
    top = nice_top(max(totals, default=0), unit)
    y = vertical_scale(top)
    slot = (RIGHT - LEFT) / len(days)
    segments = []
    for index, day in enumerate(days):
        floor = 0.0
        for s in series:
            value = s.values[index] or 0
            if value:
                tip = f"{short_date(day)}: {unit.show(value)} {s.label.lower()}"
                left = LEFT + slot * (index + (1 - BAR_SHARE) / 2)
                segments.append(
                    _segment(left, slot * BAR_SHARE, y(floor + value), y(floor), s.colour, tip)
                )
                floor += value
    description = f"{_span(days)}. {_totals_sentence(days, series, totals, unit)}"
    parts = [_legend(series, as_lines=False), _y_axis(top, y, unit), _x_axis(days, chart.days_are)]
    parts.extend(segments)
    return _svg(chart.chart_id, chart.title, description, parts)


def lines(chart: Chart) -> SafeString:
    """One line per series across the days, broken where a day has no value. Every value is
    also a marker, so that a lone day still shows; the second series is dashed, with squares."""
    days, series, unit = chart.days, chart.series, chart.unit
    shown = [value for s in series for value in s.values if value is not None]
    top = nice_top(max(shown, default=0), unit)
    y = vertical_scale(top)
    slot = (RIGHT - LEFT) / len(days)
    x = [LEFT + slot * (index + 0.5) for index in range(len(days))]
    drawn = [_line(s, x, y, days, unit, second=number == 1) for number, s in enumerate(series)]
    description = f"{_span(days)}. " + " ".join(_range_sentence(s, unit) for s in series)
    parts = [_legend(series, as_lines=True), _y_axis(top, y, unit), _x_axis(days, chart.days_are)]
    parts.extend(drawn)
    return _svg(chart.chart_id, chart.title, description, parts)


# --- Scales --------------------------------------------------------------------------------------


def nice_top(largest: float, unit: Unit) -> float:
    """The top of the y axis, at least `largest`: Y_TICKS times the smallest step of 1, 2 or
    5 times a power of ten (in `unit`) that reaches it, so that every tick is a round number."""
    step = largest / unit.scale / Y_TICKS
    if unit.whole:
        step = max(step, 1)
    if step <= 0:
        return Y_TICKS * unit.scale
    magnitude = 10 ** math.floor(math.log10(step))
    nice = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= step)
    return nice * Y_TICKS * unit.scale


def vertical_scale(top: float) -> Callable[[float], float]:
    return lambda value: BOTTOM - (BOTTOM - TOP) * value / top


# --- Pieces --------------------------------------------------------------------------------------


def _svg(chart_id: str, title: str, description: str, parts: list[str]) -> SafeString:
    return mark_safe(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-title {chart_id}-desc" font-family="system-ui, sans-serif" '
        f'font-size="{FONT_SIZE}" fill="{TEXT}">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
        f'<desc id="{chart_id}-desc">{escape(description)}</desc>' + "".join(parts) + "</svg>"
    )


def _legend(series: Sequence[Series], as_lines: bool) -> str:
    items, x = [], LEFT
    for number, s in enumerate(series):
        key_width = 28 if as_lines else 16
        if as_lines:
            key = _line_key(x, key_width, s.colour, second=number == 1)
        else:
            key = f'<rect x="{x}" y="6" width="16" height="16" fill="{s.colour}"/>'
        items.append(f'{key}<text x="{x + key_width + 6}" y="20">{escape(s.label)}</text>')
        # The label's rough width: system-ui's letters average about 0.55 em.
        x += key_width + 6 + round(len(s.label) * FONT_SIZE * 0.55) + 18
    return "".join(items)


def _line_key(x: float, width: float, colour: str, second: bool) -> str:
    middle = x + width / 2
    return (
        f'<line x1="{x}" y1="14" x2="{x + width}" y2="14" stroke="{colour}" stroke-width="2.5"'
        f"{DASHES if second else ''}/>" + _marker(middle, 14, colour, square=second, tip="")
    )


def _y_axis(top: float, y: Callable[[float], float], unit: Unit) -> str:
    parts = []
    for tick in range(Y_TICKS + 1):
        value = top * tick / Y_TICKS
        height, baseline = _n(y(value)), _n(y(value) + 5)
        parts.append(
            f'<line x1="{LEFT}" y1="{height}" x2="{RIGHT}" y2="{height}" stroke="{GRID}"/>'
            f'<text x="{LEFT - 8}" y="{baseline}" text-anchor="end">{unit.show(value)}</text>'
        )
    middle = _n((TOP + BOTTOM) / 2)
    parts.append(
        f'<text x="18" y="{middle}" text-anchor="middle" transform="rotate(-90 18 {middle})">'
        f"{escape(unit.name.capitalize())}</text>"
    )
    return "".join(parts)


def _x_axis(days: Sequence[date], title: str) -> str:
    slot = (RIGHT - LEFT) / len(days)
    parts = [f'<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}" stroke="{AXIS}"/>']
    for index in range(len(days) - 1, -1, -DATE_EVERY):
        x = _n(LEFT + slot * (index + 0.5))
        parts.append(
            f'<line x1="{x}" y1="{BOTTOM}" x2="{x}" y2="{BOTTOM + 5}" stroke="{AXIS}"/>'
            f'<text x="{x}" y="{BOTTOM + 22}" text-anchor="middle">{short_date(days[index])}</text>'
        )
    parts.append(
        f'<text x="{_n((LEFT + RIGHT) / 2)}" y="{HEIGHT - 8}" text-anchor="middle">'
        f"{escape(title)}</text>"
    )
    return "".join(parts)


def _segment(left: float, width: float, upper: float, lower: float, colour: str, tip: str) -> str:
    # The white outline parts each segment from the next, whatever their colours.
    return (
        f'<rect x="{_n(left)}" y="{_n(upper)}" width="{_n(width)}" height="{_n(lower - upper)}" '
        f'fill="{colour}" stroke="{GAP}" stroke-width="1.5"><title>{escape(tip)}</title></rect>'
    )


def _line(
    s: Series,
    x: list[float],
    y: Callable[[float], float],
    days: Sequence[date],
    unit: Unit,
    second: bool,
) -> str:
    path, markers, pen_down = [], [], False
    for index, value in enumerate(s.values):
        if value is None:
            pen_down = False
            continue
        path.append(f"{'L' if pen_down else 'M'}{_n(x[index])} {_n(y(value))}")
        pen_down = True
        tip = f"{short_date(days[index])}: {s.label} {unit.show(value)} {unit.name}"
        markers.append(_marker(x[index], y(value), s.colour, square=second, tip=tip))
    if not path:
        return ""
    line = (
        f'<path d="{" ".join(path)}" fill="none" stroke="{s.colour}" stroke-width="2.5"'
        f"{DASHES if second else ''}/>"
    )
    return line + "".join(markers)


def _marker(x: float, y: float, colour: str, square: bool, tip: str) -> str:
    title = f"<title>{escape(tip)}</title>" if tip else ""
    if square:
        return (
            f'<rect x="{_n(x - 4)}" y="{_n(y - 4)}" width="8" height="8" fill="{colour}">'
            f"{title}</rect>"
        )
    return f'<circle cx="{_n(x)}" cy="{_n(y)}" r="4.5" fill="{colour}">{title}</circle>'


# --- Words ---------------------------------------------------------------------------------------


def short_date(day: date) -> str:
    return f"{day.day} {day:%b}"


def _span(days: Sequence[date]) -> str:
    return f"{short_date(days[0])} {days[0].year} to {short_date(days[-1])} {days[-1].year}"


def _totals_sentence(
    days: Sequence[date], series: Sequence[Series], totals: list[float], unit: Unit
) -> str:
    parts = [f"{unit.show(sum(v or 0 for v in s.values))} {s.label.lower()}" for s in series]
    busiest = max(range(len(days)), key=lambda index: totals[index])
    return (
        f"In all {unit.show(sum(totals))} {unit.name}: {', '.join(parts)}. Most in one day: "
        f"{unit.show(totals[busiest])}, on {short_date(days[busiest])}."
    )


def _range_sentence(s: Series, unit: Unit) -> str:
    shown = [v for v in s.values if v is not None]
    if not shown:
        return f"{s.label}: no days with a value."
    return (
        f"{s.label}: from {unit.show(min(shown))} to {unit.show(max(shown))} {unit.name} "
        f"over {len(shown)} day{'s' if len(shown) != 1 else ''}."
    )


def _n(number: float) -> str:
    """Coordinates to a tenth of a unit: enough for any screen, and short markup."""
    return f"{number:.1f}".removesuffix(".0")
