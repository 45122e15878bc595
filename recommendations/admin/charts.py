"""Server-side SVG charts for the admin: no JavaScript, no dependencies, nothing fetched from anywhere.

A chart is one inline <svg> string: axes with ticks, a legend, one colour per series and a <title> per point or bar
(the browser shows it as a tooltip). It is an image to assistive technology (role="img" with an aria-label and a
<desc> summary). Every piece of text goes through format_html, so a placement named "<script>" is shown, not run.
Series are {name: [value or None per x label]}; None is a gap (no line is drawn across it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

Series = Mapping[str, Sequence[float | None]]
Formatter = Callable[[float], str]

# Okabe & Ito's palette (distinguishable with the common colour-vision deficiencies), without its yellow, which
# vanishes on white; after eight series the colours repeat.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#999999")
FONT = "11"
CHAR_WIDTH = 6.2  # rough width of one character at FONT px, to lay out labels without measuring them
LEGEND_ROW = 18
MAX_X_LABELS = 10


def number(value: float) -> str:
    """A compact tick or tooltip number: 1,250 / 12 / 0.25 / 0.0312."""
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.3g}"


def percent(value: float) -> str:
    """A share as a percentage: 0.0312 -> 3.1%."""
    text = f"{value * 100:.1f}"
    return (text[:-2] if text.endswith(".0") else text) + "%"


def rate(value: float | None) -> str:
    """A table's rate cell: a percentage, or "-" when there was nothing to divide by."""
    return "-" if value is None else percent(value)


def day_label(day: date) -> str:
    """A chart's label of a day: "Dec 7"."""
    return f"{day:%b} {day.day}"


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """About `count` round tick values (steps of 1, 2, 2.5 or 5 times a power of ten) covering low..high."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        high = low + 1
    raw = (high - low) / max(1, count)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = [first]
    while ticks[-1] < high - 1e-9 * step:
        ticks.append(first + len(ticks) * step)
    return [round(t, 10) for t in ticks]


@dataclass(frozen=True)
class _Frame:
    """Where the plot area sits in the SVG, the y range it maps, and the width each x label gets."""

    left: float
    top: float
    right: float
    bottom: float
    low: float
    high: float
    slot: float

    def y(self, value: float) -> float:
        return self.bottom - (value - self.low) / (self.high - self.low) * (self.bottom - self.top)

    def bar(self, left: float, width: float, lower: float, upper: float, colour: str, tooltip: str) -> SafeString:
        """A bar from `lower` to `upper` on the y scale, at least half a pixel tall so a tiny value still shows."""
        y_top, y_bottom = self.y(max(lower, upper)), self.y(min(lower, upper))
        return format_html(
            '<rect x="{}" y="{}" width="{}" height="{}" fill="{}"><title>{}</title></rect>',
            _n(left),
            _n(y_top),
            _n(width),
            _n(max(y_bottom - y_top, 0.5)),
            colour,
            tooltip,
        )


@dataclass(frozen=True)
class _Look:
    """What every chart kind is given besides its data: the words around it, its size and how y values read."""

    title: str
    y_label: str
    width: int
    height: int
    y_format: Formatter


def _values(series: Series) -> list[float]:
    return [float(v) for values in series.values() for v in values if v is not None and math.isfinite(float(v))]


def _legend_rows(names: Sequence[str], width: float, left: float) -> list[list[tuple[str, float]]]:
    """Legend entries laid out left to right, wrapping to a new row when the width runs out."""
    rows: list[list[tuple[str, float]]] = [[]]
    x = left
    for name in names:
        entry = 16 + CHAR_WIDTH * len(name) + 14
        if rows[-1] and x + entry > width - 8:
            rows.append([])
            x = left
        rows[-1].append((name, x))
        x += entry
    return rows if rows[0] else []


def _chart(
    series: Series,
    x_labels: Sequence[str],
    look: _Look,
    draw: Callable[[_Frame, list[float]], list[SafeString]],
    *,
    stacked: bool = False,
    also_covers: Sequence[float] = (),
) -> SafeString:
    """The frame every chart shares (title, legend, axes, grid, labels), with `draw` filling the plot area.

    `also_covers` are values the y axis must reach besides the series' (the ends of interval whiskers)."""
    title, y_label, width, height, y_format = look.title, look.y_label, look.width, look.height, look.y_format
    names = list(series)
    values = _values(series)
    has_data = bool(x_labels) and bool(values)
    if stacked:
        # The bars' tops and bottoms: every running sum, so the axis covers the tallest stack.
        values = [
            sum(_finite(series[n], i) for n in names[: k + 1]) for i in range(len(x_labels)) for k in range(len(names))
        ]
    values += [float(v) for v in also_covers if math.isfinite(float(v))]
    low = min([0.0, *values])
    high = max([0.0, *values])
    ticks = nice_ticks(low, high if high > low else low + 1)
    tick_labels = [y_format(t) for t in ticks]

    left = 14 + (16 if y_label else 0) + CHAR_WIDTH * max(len(label) for label in tick_labels)
    legend = _legend_rows(names, width, left)
    top = 34.0
    bottom = height - 28.0 - LEGEND_ROW * len(legend)
    right = width - 12.0
    frame = _Frame(left, top, right, max(bottom, top + 40), ticks[0], ticks[-1], (right - left) / max(1, len(x_labels)))

    parts: list[SafeString] = [
        format_html("<title>{}</title>", title),
        format_html("<desc>{}</desc>", _description(names, x_labels, y_label)),
        format_html(
            '<text x="{}" y="18" font-size="13" font-weight="bold" fill="#222">{}</text>', _n(frame.left), title
        ),
        format_html(
            '<rect class="plot-area" x="{}" y="{}" width="{}" height="{}" fill="#fff"/>',
            _n(frame.left),
            _n(frame.top),
            _n(frame.right - frame.left),
            _n(frame.bottom - frame.top),
        ),
    ]
    for tick, label in zip(ticks, tick_labels, strict=True):
        y = frame.y(tick)
        parts.append(
            format_html(
                '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#e3e3e3"/>'
                '<text x="{}" y="{}" text-anchor="end" fill="#555">{}</text>',
                _n(frame.left),
                _n(y),
                _n(frame.right),
                _n(y),
                _n(frame.left - 6),
                _n(y + 4),
                label,
            )
        )
    if y_label:
        middle = (frame.top + frame.bottom) / 2
        parts.append(
            format_html(
                '<text x="12" y="{}" transform="rotate(-90 12 {})" text-anchor="middle" fill="#555">{}</text>',
                _n(middle),
                _n(middle),
                y_label,
            )
        )
    # As many x labels as fit side by side (and at most MAX_X_LABELS), evenly spaced.
    widest = CHAR_WIDTH * max((len(label) for label in x_labels), default=1) + 12
    fit = max(1, min(MAX_X_LABELS, int((frame.right - frame.left) // widest)))
    every = max(1, math.ceil(len(x_labels) / fit))
    for i, label in enumerate(x_labels):
        if i % every == 0:
            parts.append(
                format_html(
                    '<text x="{}" y="{}" text-anchor="middle" fill="#555">{}</text>',
                    _n(frame.left + frame.slot * (i + 0.5)),
                    _n(frame.bottom + 16),
                    label,
                )
            )
    parts.append(
        format_html(
            '<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#888"/>',
            _n(frame.left),
            _n(frame.bottom),
            _n(frame.right),
            _n(frame.bottom),
        )
    )
    if has_data:
        parts.extend(draw(frame, [frame.left + frame.slot * (i + 0.5) for i in range(len(x_labels))]))
    else:
        parts.append(
            format_html(
                '<text x="{}" y="{}" text-anchor="middle" fill="#888">No data for this period</text>',
                _n((frame.left + frame.right) / 2),
                _n((frame.top + frame.bottom) / 2),
            )
        )
    for r, row in enumerate(legend):
        y = frame.bottom + 34 + LEGEND_ROW * r
        for name, x in row:
            parts.append(
                format_html(
                    '<rect x="{}" y="{}" width="12" height="12" rx="2" fill="{}"/><text x="{}" y="{}" fill="#222">{}'
                    "</text>",
                    _n(x),
                    _n(y - 10),
                    _colour(names.index(name)),
                    _n(x + 16),
                    _n(y),
                    name,
                )
            )
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="rec-chart" role="img" aria-label="{}" width="{}" height="{}" '
        'viewBox="0 0 {} {}" font-family="-apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif" '
        'font-size="{}" style="max-width:100%;height:auto">{}</svg>',
        title,
        width,
        height,
        width,
        height,
        FONT,
        format_html_join("", "{}", ((part,) for part in parts)),
    )


def _finite(values: Sequence[float | None], i: int) -> float:
    """values[i] as a float, 0 when it is missing, None or not finite (a bar of nothing)."""
    value = values[i] if i < len(values) else None
    if value is None or not math.isfinite(float(value)):
        return 0.0
    return float(value)


def _n(value: float) -> str:
    """A coordinate, short: 12.5 rather than 12.500000001."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _description(names: Sequence[str], x_labels: Sequence[str], y_label: str) -> str:
    if not x_labels:
        return _("No data.")
    span = (
        _("%(first)s to %(last)s") % {"first": x_labels[0], "last": x_labels[-1]} if len(x_labels) > 1 else x_labels[0]
    )
    values = {"what": y_label, "series": ", ".join(names) or _("no series"), "span": span}
    return (_("%(what)s for %(series)s, %(span)s.") if y_label else _("for %(series)s, %(span)s.")) % values


def line_chart(
    series: Series,
    x_labels: Sequence[str],
    *,
    title: str,
    y_label: str = "",
    width: int = 720,
    height: int = 260,
    y_format: Formatter = number,
) -> SafeString:
    """One line per series over the x labels; a None breaks the line, a lone point between gaps shows as a dot."""

    def draw(frame: _Frame, xs: list[float]) -> list[SafeString]:
        out: list[SafeString] = []
        for s, (name, values) in enumerate(series.items()):
            colour = _colour(s)
            segment: list[str] = []
            points: list[SafeString] = []
            segments: list[list[str]] = [segment]
            for i, value in enumerate(list(values)[: len(xs)]):
                if value is None or not math.isfinite(float(value)):
                    segment = []
                    segments.append(segment)
                    continue
                x, y = xs[i], frame.y(float(value))
                segment.append(f"{_n(x)},{_n(y)}")
                points.append(
                    format_html(
                        '<circle cx="{}" cy="{}" r="3" fill="{}" stroke="#fff" stroke-width="1">'
                        "<title>{} · {}: {}</title></circle>",
                        _n(x),
                        _n(y),
                        colour,
                        name,
                        x_labels[i],
                        y_format(float(value)),
                    )
                )
            for line in segments:
                if len(line) > 1:
                    out.append(
                        format_html(
                            '<polyline points="{}" fill="none" stroke="{}" stroke-width="2" stroke-linejoin="round"/>',
                            " ".join(line),
                            colour,
                        )
                    )
            out.extend(points)
        return out

    return _chart(series, x_labels, _Look(title, y_label, width, height, y_format), draw)


def bar_chart(
    series: Series,
    x_labels: Sequence[str],
    *,
    title: str,
    y_label: str = "",
    width: int = 720,
    height: int = 260,
    y_format: Formatter = number,
    stacked: bool = True,
) -> SafeString:
    """Bars per x label: stacked (the total reads off the top) or side by side; None counts as nothing."""

    def draw(frame: _Frame, xs: list[float]) -> list[SafeString]:
        out: list[SafeString] = []
        names = list(series)
        inner = frame.slot * 0.8
        bar = inner if stacked else inner / max(1, len(names))
        for i, x in enumerate(xs):
            base = 0.0
            for s, name in enumerate(names):
                value = _finite(series[name], i)
                lower, upper = (base, base + value) if stacked else (0.0, value)
                if stacked:
                    base += value
                if value == 0:
                    continue
                left = x - inner / 2 + (0 if stacked else bar * s)
                tooltip = format_html("{} · {}: {}", name, x_labels[i], y_format(value))
                out.append(frame.bar(left, max(bar - 1, 1), lower, upper, _colour(s), tooltip))
        return out

    return _chart(series, x_labels, _Look(title, y_label, width, height, y_format), draw, stacked=stacked)


def interval_bar_chart(
    values: Mapping[str, float | None],
    intervals: Mapping[str, tuple[float, float] | None],
    *,
    title: str,
    series_name: str,
    y_label: str = "",
    width: int = 460,
    height: int = 240,
    y_format: Formatter = number,
) -> SafeString:
    """One bar per label (an experiment's arms) with a whisker over each bar's interval (a 95 % confidence interval);
    a None value draws no bar, a None interval no whisker."""
    labels = list(values)
    series = {series_name: [values[label] for label in labels]}
    ends = [end for label in labels if (interval := intervals.get(label)) for end in interval]

    def draw(frame: _Frame, xs: list[float]) -> list[SafeString]:
        out: list[SafeString] = []
        bar = frame.slot * 0.5
        for x, label in zip(xs, labels, strict=True):
            value = values[label]
            interval = intervals.get(label)
            span = f" (95% CI {y_format(interval[0])} to {y_format(interval[1])})" if interval else ""
            if value is not None and math.isfinite(float(value)):
                tooltip = format_html("{}: {}{}", label, y_format(float(value)), span)
                out.append(frame.bar(x - bar / 2, bar, 0.0, float(value), _colour(0), tooltip))
            if interval:
                low, high = frame.y(interval[0]), frame.y(interval[1])
                cap = bar / 4
                out.append(
                    format_html(
                        '<g class="whisker" stroke="#222" stroke-width="1.5"><title>{}{}</title>'
                        '<line x1="{}" y1="{}" x2="{}" y2="{}"/><line x1="{}" y1="{}" x2="{}" y2="{}"/>'
                        '<line x1="{}" y1="{}" x2="{}" y2="{}"/></g>',
                        label,
                        span,
                        _n(x),
                        _n(low),
                        _n(x),
                        _n(high),
                        _n(x - cap),
                        _n(low),
                        _n(x + cap),
                        _n(low),
                        _n(x - cap),
                        _n(high),
                        _n(x + cap),
                        _n(high),
                    )
                )
        return out

    return _chart(series, labels, _Look(title, y_label, width, height, y_format), draw, also_covers=ends)
