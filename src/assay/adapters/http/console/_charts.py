"""Charts drawn on the server as SVG: a forest plot of lifts and line charts over time.

Why server-rendered SVG rather than a charting library: the page stays small (a chart is
a few kilobytes of markup, no script), needs no JavaScript at all (so the console's
Content-Security-Policy can forbid scripts outright), prints and screenshots exactly as
served, and the numbers in a chart are the numbers in the table because one Python
function formats both. See docs/console.md.

Rules kept: every text that came from a user (variant and metric names) is escaped; the
palette is Okabe-Ito (distinguishable with the common colour-vision deficiencies), and
nothing is told by colour alone: series also differ by dash pattern and marker shape and
are labelled in text at their ends; every chart has a title and a description for screen
readers, and the page beside it carries the same numbers as a table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
DASHES = ("", "6 3", "2 3", "8 3 2 3", "1 2", "10 4", "4 4")
MARKERS = ("circle", "square", "diamond", "triangle", "circle", "square", "diamond")
INK = "#1a1a1a"
GRID = "#d0d0d0"


def _f(value: float) -> str:
    return f"{value:.1f}"


def _marker(shape: str, x: float, y: float, colour: str, size: float = 4.5) -> str:
    if shape == "square":
        return (
            f'<rect x="{_f(x - size)}" y="{_f(y - size)}" width="{_f(2 * size)}" '
            f'height="{_f(2 * size)}" fill="{colour}"/>'
        )
    if shape == "diamond":
        s = size * 1.3
        points = f"{_f(x)},{_f(y - s)} {_f(x + s)},{_f(y)} {_f(x)},{_f(y + s)} {_f(x - s)},{_f(y)}"
        return f'<polygon points="{points}" fill="{colour}"/>'
    if shape == "triangle":
        s = size * 1.3
        points = f"{_f(x)},{_f(y - s)} {_f(x + s)},{_f(y + s)} {_f(x - s)},{_f(y + s)}"
        return f'<polygon points="{points}" fill="{colour}"/>'
    return f'<circle cx="{_f(x)}" cy="{_f(y)}" r="{_f(size)}" fill="{colour}"/>'


def _open(width: int, height: int, title: str, description: str) -> list[str]:
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" class="chart" '
        f'font-family="system-ui, sans-serif" font-size="14">',
        f"<title>{escape(title)}</title><desc>{escape(description)}</desc>",
    ]


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    ticks = []
    t = first
    while t <= high + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    return ticks


@dataclass(frozen=True)
class ForestRow:
    label: str
    estimate: float
    low: float
    high: float
    text: str
    """The row's numbers as the table shows them, drawn beside the interval."""
    verdict: str


def forest_plot(rows: Sequence[ForestRow], *, title: str, axis: Callable[[float], str]) -> Markup:
    """Each comparison's lift as a marker on its interval, against a line at zero."""
    drawable = [r for r in rows if all(math.isfinite(v) for v in (r.estimate, r.low, r.high))]
    row_height, top, label_w, text_w, width = 34, 28, 190, 230, 760
    height = top + row_height * max(1, len(rows)) + 30
    plot_l, plot_r = label_w, width - text_w
    low = min([0.0, *(r.low for r in drawable)])
    high = max([0.0, *(r.high for r in drawable)])
    pad = (high - low) * 0.08 or 0.01
    low, high = low - pad, high + pad

    def x(v: float) -> float:
        return plot_l + (v - low) / (high - low) * (plot_r - plot_l)

    out = _open(
        width,
        height,
        title,
        "Each row: the lift's estimate as a marker on its "
        "95% always-valid interval; the vertical line is no difference.",
    )
    bottom = top + row_height * max(1, len(rows))
    for t in _ticks(low, high):
        out.append(
            f'<line x1="{_f(x(t))}" y1="{top - 6}" x2="{_f(x(t))}" y2="{bottom}" '
            f'stroke="{GRID}" stroke-width="1"/>'
            f'<text x="{_f(x(t))}" y="{bottom + 16}" text-anchor="middle" fill="{INK}">'
            f"{escape(axis(t))}</text>"
        )
    out.append(
        f'<line x1="{_f(x(0))}" y1="{top - 10}" x2="{_f(x(0))}" y2="{bottom}" '
        f'stroke="{INK}" stroke-width="1.5"/>'
    )
    out.append(
        f'<text x="{_f(x(0))}" y="{top - 14}" text-anchor="middle" fill="{INK}">'
        "no difference</text>"
    )
    for i, r in enumerate(rows):
        y = top + row_height * i + row_height / 2
        colour = {"better": PALETTE[0], "worse": PALETTE[1]}.get(r.verdict, "#595959")
        shape = {"better": "triangle", "worse": "square"}.get(r.verdict, "circle")
        out.append(
            f'<text x="{label_w - 8}" y="{_f(y + 4)}" text-anchor="end" fill="{INK}">'
            f"{escape(r.label)}</text>"
        )
        if r in drawable:
            out.append(
                f'<line x1="{_f(x(r.low))}" y1="{_f(y)}" x2="{_f(x(r.high))}" y2="{_f(y)}" '
                f'stroke="{colour}" stroke-width="3"/>'
            )
            out.append(_marker(shape, x(r.estimate), y, colour, 5.5))
        out.append(f'<text x="{plot_r + 10}" y="{_f(y + 4)}" fill="{INK}">{escape(r.text)}</text>')
    out.append("</svg>")
    return Markup("".join(out))


@dataclass(frozen=True)
class Series:
    label: str
    points: Sequence[tuple[datetime, float]]


def line_chart(
    series: Sequence[Series],
    *,
    title: str,
    description: str,
    axis: Callable[[float], str],
    band: Sequence[tuple[datetime, float, float]] = (),
    zero_line: bool = False,
) -> Markup:
    """Lines over time, each with its own colour, dash and marker and a label at its
    end; an optional shaded band (an interval over time) behind them."""
    width, height, left, right, top, bottom = 720, 300, 70, 150, 16, 40
    times = [t for s in series for t, _ in s.points] + [t for t, _, _ in band]
    values = [v for s in series for _, v in s.points if math.isfinite(v)]
    values += [v for _, lo, hi in band for v in (lo, hi) if math.isfinite(v)]
    if zero_line:
        values.append(0.0)
    if not times or not values:
        out = _open(width, 40, title, description)
        out.append(f'<text x="10" y="25" fill="{INK}">No data yet.</text></svg>')
        return Markup("".join(out))
    out = _open(width, height, title, description)
    t0, t1 = min(times).timestamp(), max(times).timestamp()
    if t1 == t0:  # one point: put it in the middle
        t0, t1 = t0 - 3600, t1 + 3600
    span = t1 - t0
    low, high = min(values), max(values)
    pad = (high - low) * 0.08 or abs(high) * 0.1 or 1.0
    low, high = low - pad, high + pad

    def x(t: datetime) -> float:
        return left + (t.timestamp() - t0) / span * (width - left - right)

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    for tick in _ticks(low, high):
        out.append(
            f'<line x1="{left}" y1="{_f(y(tick))}" x2="{width - right}" y2="{_f(y(tick))}" '
            f'stroke="{GRID}"/><text x="{left - 6}" y="{_f(y(tick) + 4)}" text-anchor="end" '
            f'fill="{INK}">{escape(axis(tick))}</text>'
        )
    first, last = min(times), max(times)
    ends = ((first, "start"), (last, "end")) if first != last else ((first, "middle"),)
    for t, anchor in ends:
        out.append(
            f'<text x="{_f(x(t))}" y="{height - 12}" text-anchor="{anchor}" fill="{INK}">'
            f"{escape(t.strftime('%Y-%m-%d %H:%M'))}</text>"
        )
    if band:
        upper = " ".join(f"{_f(x(t))},{_f(y(hi))}" for t, _, hi in band if math.isfinite(hi))
        lower = " ".join(
            f"{_f(x(t))},{_f(y(lo))}" for t, lo, _ in reversed(band) if math.isfinite(lo)
        )
        out.append(
            f'<polygon points="{upper} {lower}" fill="{PALETTE[5]}" fill-opacity="0.3" '
            f'stroke="{PALETTE[5]}" stroke-dasharray="3 3"/>'
        )
    if zero_line and low < 0 < high:
        out.append(
            f'<line x1="{left}" y1="{_f(y(0))}" x2="{width - right}" y2="{_f(y(0))}" '
            f'stroke="{INK}" stroke-width="1.5"/>'
        )
    for i, s in enumerate(series):
        colour, dash = PALETTE[i % len(PALETTE)], DASHES[i % len(DASHES)]
        points = [(x(t), y(v)) for t, v in s.points if math.isfinite(v)]
        if not points:
            continue
        path = " ".join(f"{_f(px)},{_f(py)}" for px, py in points)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2.5"'
            f"{dash_attr}/>"
        )
        # Every point gets its marker while there are few; otherwise only the last.
        for px, py in points if len(points) <= 40 else points[-1:]:
            out.append(_marker(MARKERS[i % len(MARKERS)], px, py, colour, 3.5))
        px, py = points[-1]
        out.append(
            f'<text x="{_f(px + 10)}" y="{_f(py + 4 + 14 * (i % 2 and 1))}" fill="{INK}">'
            f"{escape(s.label)}</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))
