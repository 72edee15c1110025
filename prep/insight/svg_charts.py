"""Charts as inline SVG text, drawn by prep itself: the histograms of ``prep report``.

No plotting library is needed and nothing is fetched: each chart is one ``<svg>`` element of
paths and lines, to be placed in an HTML page as it is. Every text that reaches a chart (a
file's label, a channel's name) goes through :func:`html.escape`, so a label cannot become
markup.

:func:`histogram_chart` draws one channel of one or more files as ``prep plot`` does: each
file's 256-bin histogram as the fraction of its pixels at each level (bin ``v`` centred on
``v / 255``), its mean (solid line), mean ± 1 std (dashed), its percentiles (dotted) and its
min..max range (a bar under the axis, one row per file). The chart holds the histogram twice,
on a linear and on a logarithmic axis (groups of class ``scale-linear`` and ``scale-log``),
so the page switches between them with CSS alone. :func:`distribution_chart` draws a plain
histogram of values (the images' brightness) with marked positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

WIDTH, HEIGHT = 640, 230  # the viewBox; the page scales the chart to its column
LEFT, RIGHT, TOP = 56, 14, 10
AXIS_GAP = 8  # from the x axis to the first min..max bar
BAR_STEP = 6  # between the bars of consecutive files
LABEL_ROOM = 34  # under the bars: tick labels and the axis title


@dataclass(frozen=True)
class Series:
    """One file's histogram and marks on one channel (unit scale)."""

    label: str
    colour: str
    fractions: np.ndarray | None  # the fraction of pixels per level (256 values); None: no histogram
    mean: float
    std: float
    minimum: float
    maximum: float
    percentiles: Sequence[tuple[float, float]] = field(default_factory=tuple)  # (q, value)


def _f(value: float) -> str:
    """A coordinate: one decimal, no ``-0.0``."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _attr(text: object) -> str:
    return escape(str(text), quote=True)


def _nice_step(span: float, ticks: int = 4) -> float:
    """A round step (1, 2, 2.5 or 5 times a power of ten) giving about ``ticks`` ticks over ``span``."""
    if not span > 0 or not math.isfinite(span):
        return 1.0
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * power >= raw:
            return m * power
    return 10 * power


def _ticks(lo: float, hi: float, ticks: int = 4) -> list[float]:
    step = _nice_step(hi - lo, ticks)
    first = math.ceil(lo / step - 1e-9) * step
    out, k = [], 0
    while first + k * step <= hi + 1e-9 * step and k < 50:
        out.append(first + k * step)
        k += 1
    return out


def _decimals(step: float) -> int:
    """The decimals that show every multiple of ``step`` exactly (at most 8)."""
    for d in range(9):
        if abs(round(step, d) - step) <= 1e-9 * max(1.0, abs(step)):
            return d
    return 8


def _tick_label(value: float, step: float) -> str:
    return f"{value:.{_decimals(step)}f}"


class _Frame:
    """The plot area of a chart and its x scale."""

    def __init__(self, x_lo: float, x_hi: float, rows: int) -> None:
        self.x_lo, self.x_hi = x_lo, x_hi
        self.bottom = HEIGHT - LABEL_ROOM - AXIS_GAP - BAR_STEP * max(rows, 1)
        self.height = HEIGHT
        self.left, self.right, self.top = LEFT, WIDTH - RIGHT, TOP

    def x(self, value: float) -> float:
        span = self.x_hi - self.x_lo
        return self.left + (value - self.x_lo) / span * (self.right - self.left)

    def y(self, share: float) -> float:
        """``share`` in 0..1 of the plot's height, from the bottom."""
        return self.bottom - share * (self.bottom - self.top)

    def inside(self, value: float) -> bool:
        return self.x_lo <= value <= self.x_hi


def _x_domain(series: Sequence[Series]) -> tuple[float, float]:
    lo = min(s.minimum for s in series)
    hi = max(s.maximum for s in series)
    if lo >= 0.0 and hi <= 1.0:
        return -0.02, 1.02
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return -0.02, 1.02
    if hi <= lo:
        return lo - 0.5, hi + 0.5
    pad = 0.02 * (hi - lo)
    return lo - pad, hi + pad


def _x_axis(frame: _Frame, title: str) -> list[str]:
    parts = [
        f'<line class="axis" x1="{frame.left}" y1="{_f(frame.bottom)}" x2="{frame.right}" y2="{_f(frame.bottom)}"/>'
    ]
    ticks = _ticks(frame.x_lo, frame.x_hi, 5)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    label_y = frame.height - LABEL_ROOM + 12
    for t in ticks:
        x = _f(frame.x(t))
        parts.append(f'<line class="tick" x1="{x}" y1="{_f(frame.bottom)}" x2="{x}" y2="{_f(frame.bottom + 3)}"/>')
        parts.append(
            f'<text class="tick-label" x="{x}" y="{label_y}" text-anchor="middle">{_tick_label(t, step)}</text>'
        )
    parts.append(
        f'<text class="axis-title" x="{(frame.left + frame.right) / 2:.0f}" y="{frame.height - 4}" '
        f'text-anchor="middle">{escape(title)}</text>'
    )
    return parts


def _y_axis(frame: _Frame, ticks: Sequence[tuple[float, str]], title: str) -> list[str]:
    """Ticks at ``(share of the height, label)`` and the axis title."""
    parts = [f'<line class="axis" x1="{frame.left}" y1="{frame.top}" x2="{frame.left}" y2="{_f(frame.bottom)}"/>']
    for share, label in ticks:
        y = _f(frame.y(share))
        parts.append(f'<line class="grid" x1="{frame.left}" y1="{y}" x2="{frame.right}" y2="{y}"/>')
        parts.append(
            f'<text class="tick-label" x="{frame.left - 4}" y="{y}" dy="0.32em" text-anchor="end">{label}</text>'
        )
    mid = (frame.top + frame.bottom) / 2
    parts.append(
        f'<text class="axis-title" transform="translate(12 {mid:.0f}) rotate(-90)" text-anchor="middle">'
        f"{escape(title)}</text>"
    )
    return parts


def _stairs(frame: _Frame, heights: np.ndarray | Sequence[float], edges: np.ndarray | Sequence[float]) -> str:
    """A closed step outline: ``heights[k]`` (shares of the plot height) over ``[edges[k], edges[k+1]]``."""
    base = _f(frame.bottom)
    d = [f"M{_f(frame.x(edges[0]))},{base}"]
    for k, h in enumerate(heights):
        d.append(f"V{_f(frame.y(h))}H{_f(frame.x(edges[k + 1]))}")
    d.append(f"V{base}Z")
    return "".join(d)


def _linear_ticks(top: float) -> list[tuple[float, str]]:
    step = _nice_step(top, 4)
    out = []
    k = 0
    while k * step <= top * (1 + 1e-9) and k < 20:
        value = k * step
        out.append((value / top, _tick_label(value, step)))
        k += 1
    return out


def _log_label(decade: int) -> str:
    return f"1e{decade}" if decade < -3 else f"{10.0**decade:g}"


def histogram_chart(
    channel: str, series: Sequence[Series], log_levels: tuple[int, int] | None = None, ident: str | None = None
) -> str:
    """One channel's chart (``<svg class="chart histogram">``): every series' histogram on a linear
    and on a log axis, and every series' marks. ``log_levels``: the decades ``(low, high)`` of the
    log axis (:func:`log_decades` of every channel, so the charts of one page share it); None:
    this channel's own. ``ident``: what makes the chart's clip path id unique in its page (default:
    the channel)."""
    clip = f"clip-{ident if ident is not None else channel}"
    frame = _Frame(*_x_domain(series), len(series))
    edges = (np.arange(257) - 0.5) / 255
    with_histogram = [s for s in series if s.fractions is not None]
    parts = [
        f'<svg class="chart histogram" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'data-channel="{_attr(channel)}" data-series="{len(series)}">',
        f"<title>channel {escape(channel)}: "
        + ("histogram" if with_histogram else "summary marks (no histogram)")
        + " of "
        + escape(", ".join(s.label for s in series))
        + "</title>",
        f'<clipPath id="{_attr(clip)}"><rect x="{frame.left}" y="0" width="{frame.right - frame.left}" '
        f'height="{_f(frame.bottom)}"/></clipPath>',
    ]
    alpha = 0.35 if len(series) > 1 else 0.5
    if with_histogram:
        top = max(float(np.max(np.asarray(s.fractions))) for s in with_histogram) * 1.05 or 1.0
        parts.append('<g class="scale-linear">')
        parts += _y_axis(frame, _linear_ticks(top), "fraction of pixels")
        for i, s in enumerate(series):
            if s.fractions is not None:
                heights = np.asarray(s.fractions, np.float64) / top
                parts.append(_series_path(frame, heights, edges, s, i, alpha, clip))
        parts.append("</g>")
        lo, hi = log_levels or log_decades([s.fractions for s in with_histogram])
        parts.append('<g class="scale-log">')
        log_ticks = [((d - lo) / (hi - lo), _log_label(d)) for d in range(lo, hi + 1)]
        parts += _y_axis(frame, log_ticks, "fraction of pixels (log)")
        for i, s in enumerate(series):
            if s.fractions is not None:
                f = np.asarray(s.fractions, np.float64)
                with np.errstate(divide="ignore"):
                    heights = np.where(f > 0, (np.log10(np.maximum(f, 1e-300)) - lo) / (hi - lo), 0.0)
                parts.append(_series_path(frame, np.clip(heights, 0.0, 1.0), edges, s, i, alpha, clip))
        parts.append("</g>")
    else:
        parts.append(
            f'<text class="note" x="{(frame.left + frame.right) / 2:.0f}" y="{frame.top + 14}" '
            'text-anchor="middle">no histogram (16-bit or float data): summary marks only</text>'
        )
    parts += _x_axis(frame, "value (unit scale)")
    for i, s in enumerate(series):
        parts += _marks(frame, s, i, channel)
    parts.append("</svg>")
    return "".join(parts)


def log_decades(fractions: Sequence[np.ndarray | None]) -> tuple[int, int]:
    """The decades ``(low, high)`` a log axis spans for these histograms' positive fractions."""
    positive = [float(np.min(f[f > 0])) for f in fractions if f is not None and np.any(f > 0)]
    highest = [float(np.max(f)) for f in fractions if f is not None and np.any(f > 0)]
    if not positive:
        return -3, 0
    lo = max(math.floor(math.log10(min(positive))), -12)
    hi = min(math.ceil(math.log10(max(highest))), 0)
    return (lo, hi) if hi > lo else (hi - 1, hi)


def _series_path(frame: _Frame, heights, edges, s: Series, row: int, alpha: float, clip: str) -> str:
    return (
        f'<path class="series" data-file="{row}" clip-path="url(#{_attr(clip)})" fill="{_attr(s.colour)}" '
        f'fill-opacity="{alpha}" stroke="{_attr(s.colour)}" stroke-width="0.6" d="{_stairs(frame, heights, edges)}">'
        f"<title>{escape(s.label)}</title></path>"
    )


def _vline(frame: _Frame, value: float, cls: str, colour: str, row: int, title: str, dash: str | None = None) -> str:
    if not (math.isfinite(value) and frame.inside(value)):
        return ""
    x = _f(frame.x(value))
    dashed = f' stroke-dasharray="{dash}"' if dash else ""
    return (
        f'<line class="mark {cls}" data-file="{row}" x1="{x}" y1="{frame.top}" x2="{x}" y2="{_f(frame.bottom)}" '
        f'stroke="{_attr(colour)}"{dashed}><title>{escape(title)}</title></line>'
    )


def _marks(frame: _Frame, s: Series, row: int, channel: str) -> list[str]:
    """Mean (solid), mean ± 1 std (dashed), percentiles (dotted), min..max (a bar under the axis)."""
    who = f"{s.label}, channel {channel}"
    parts = [
        _vline(frame, s.mean, "mark-mean", s.colour, row, f"{who}: mean {s.mean:.6f}"),
        _vline(frame, s.mean - s.std, "mark-std", s.colour, row, f"{who}: mean - std {s.mean - s.std:.6f}", "5 3"),
        _vline(frame, s.mean + s.std, "mark-std", s.colour, row, f"{who}: mean + std {s.mean + s.std:.6f}", "5 3"),
    ]
    for q, value in s.percentiles:
        parts.append(
            _vline(frame, value, "mark-percentile", s.colour, row, f"{who}: percentile {q:g} = {value:.6f}", "1.5 2.5")
        )
    y = _f(frame.bottom + AXIS_GAP + BAR_STEP * row)
    lo, hi = max(s.minimum, frame.x_lo), min(s.maximum, frame.x_hi)
    parts.append(
        f'<line class="mark mark-range" data-file="{row}" x1="{_f(frame.x(lo))}" y1="{y}" x2="{_f(frame.x(hi))}" '
        f'y2="{y}" stroke="{_attr(s.colour)}"><title>{escape(who)}: min..max {s.minimum:.6f}..{s.maximum:.6f}'
        "</title></line>"
    )
    return [p for p in parts if p]


def distribution_chart(
    values: np.ndarray,
    marks: Sequence[tuple[float, str, str]],
    title: str,
    x_title: str,
    bins: int = 50,
    colour: str = "#1f77b4",
) -> str:
    """A histogram of ``values`` (``<svg class="chart distribution">``): the count per bin over
    their range, widened to take in the vertical lines at ``marks`` ``(value, class, title)``."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if len(values) else (0.0, 1.0)
    marked = [v for v, _, _ in marks if math.isfinite(v)]
    lo, hi = min([lo, *marked]), max([hi, *marked])  # every mark inside the chart
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    pad = 0.02 * (hi - lo)
    frame = _Frame(lo - pad, hi + pad, 0)
    top = max(int(counts.max()) if len(counts) else 1, 1) * 1.05
    step = _nice_step(top, 4)
    ticks = [(k * step / top, f"{k * step:g}") for k in range(int(top // step) + 1)]
    parts = [
        f'<svg class="chart distribution" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" data-values="{len(values)}">',
        f"<title>{escape(title)}</title>",
        *_y_axis(frame, ticks, "images"),
        f'<path class="series" data-file="0" fill="{_attr(colour)}" fill-opacity="0.5" stroke="{_attr(colour)}" '
        f'stroke-width="0.6" d="{_stairs(frame, counts / top, edges)}"/>',
        *_x_axis(frame, x_title),
    ]
    for value, cls, label in marks:
        parts.append(_vline(frame, value, cls, "#444", 0, label, "5 3" if "threshold" in cls else None))
    parts.append("</svg>")
    return "".join(parts)
