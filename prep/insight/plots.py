"""Per-channel histograms of one or two stats files, for a visual check of train/test shift.

:func:`plot_stats` draws one panel per channel. For 8-bit data each file's stored 256-bin
histogram is drawn as the fraction of its pixels at each level (bin ``v`` centred on ``v / 255``,
unit scale), so files of different sizes overlay. On it, per file: the mean (solid line), mean
± 1 std (dashed), the stored percentiles (dotted) and the min..max range (a bar under the
axis). 16-bit and float data have no histogram in the stats file (prep stores no
approximation); for them the panel shows the same summary marks without bars, and the legend
says "no histogram". Two files are drawn in two colours, the second over the first.

matplotlib is optional (``pip install 'prep[plot]'``); the figure is drawn without pyplot (no
global state, no display needed) and written atomically: a temporary file in the target's
directory, then ``os.replace`` (a replaced file keeps its mode, a new one gets ``0666 & ~umask``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from prep.errors import MismatchError, OptionError, PrepError, os_reason
from prep.files import output_target, write_atomic

MISSING_MATPLOTLIB = "matplotlib is needed for plots: pip install 'prep[plot]'"
COLOURS = ("tab:blue", "tab:orange", "tab:green", "tab:red")
SMALL_MULTIPLES = 4  # more channels than this: panels in a grid of up to 4 columns
FORMATS = ("png", "pdf", "svg")


def _figure_class():
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise PrepError(MISSING_MATPLOTLIB) from None
    return Figure, FigureCanvasAgg


def plot_stats(
    stats_list: Sequence[Any],
    out_path: str | os.PathLike,
    labels: Sequence[str] | None = None,
    log: bool | None = None,
) -> Path:
    """Draw the per-channel histograms of ``stats_list`` (one or more :class:`~prep.stats.file.Stats`
    with the same channel count) into ``out_path`` (``.png``, ``.pdf`` or ``.svg``), written
    atomically; returns the path. ``labels`` name the files in the legend (default: each one's
    source). ``log``: a logarithmic count axis; None (the default) chooses it when one level
    holds more than :data:`LOG_SHARE` of a channel's pixels (MNIST's black background), and the
    axis label says so. Raises :class:`~prep.errors.PrepError` when matplotlib is missing."""
    _figure_class()
    shown = os.fspath(out_path)
    fmt = Path(shown).suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise OptionError(f"-o/--out: {shown}: the plot's name must end in .png, .pdf or .svg")
    target = output_target(out_path, "plot")
    fig = build_figure(stats_list, labels, log)
    _save_atomic(fig, target, fmt, shown)
    return Path(shown)


LOG_SHARE = 0.5  # one level holding more than this share of a channel's pixels: a log axis by default


def wants_log(stats_list: Sequence[Any]) -> bool:
    """True when one level holds more than :data:`LOG_SHARE` of some channel's pixels."""
    for stats in stats_list:
        binned = stats.binned_histogram()
        hist = None if binned is None else binned[0]
        if hist is not None and np.any(hist.max(axis=1) > LOG_SHARE * np.maximum(hist.sum(axis=1), 1)):
            return True
    return False


def build_figure(stats_list: Sequence[Any], labels: Sequence[str] | None = None, log: bool | None = None) -> Any:
    """The matplotlib ``Figure`` :func:`plot_stats` saves: one panel per channel, in order."""
    Figure, Canvas = _figure_class()
    stats_list = list(stats_list)
    if not stats_list:
        raise OptionError("plot: give at least one stats file")
    if len(stats_list) > len(COLOURS):
        raise OptionError(f"plot: at most {len(COLOURS)} stats files overlay legibly; got {len(stats_list)}")
    channels = {s.channels for s in stats_list}
    if len(channels) > 1:
        raise MismatchError(f"plot: the stats files have different channel counts ({sorted(channels)})")
    labels = list(labels) if labels is not None else [_label(s) for s in stats_list]
    if len(labels) != len(stats_list):
        raise OptionError(f"plot: {len(labels)} labels for {len(stats_list)} stats files")
    (n_channels,) = channels
    columns = 1 if n_channels <= SMALL_MULTIPLES else min(4, n_channels)  # many bands: a grid of small panels
    rows = -(-n_channels // columns)
    fig = Figure(figsize=(6.4 if columns == 1 else 3.6 * columns, 2.6 * rows), layout="constrained")
    Canvas(fig)
    grid = fig.subplots(rows, columns, squeeze=False).ravel()
    for spare in grid[n_channels:]:
        spare.set_visible(False)
    axes = grid[:n_channels]
    names = stats_list[0].channel_names
    any_histogram = any(st.binned_histogram() is not None for st in stats_list)
    log = wants_log(stats_list) if log is None else bool(log)
    for c, ax in enumerate(axes):
        for i, (stats, label) in enumerate(zip(stats_list, labels)):
            _draw_channel(ax, stats, c, label, COLOURS[i], len(stats_list), i)
        ax.set_title(f"channel {names[c]}", loc="left", fontsize="medium")
        if any_histogram:
            ax.set_ylabel("fraction of pixels (log)" if log else "fraction of pixels")
            if log:
                ax.set_yscale("log")
        else:  # summary marks only: the height means nothing
            ax.set_ylim(0, 1)
            ax.set_yticks([])
        if all(_in_unit_range(s) for s in stats_list):
            ax.set_xlim(-0.02, 1.02)
        ax.legend(fontsize="small", loc="upper right")
        ax.tick_params(axis="x", pad=4 + 5 * len(stats_list))  # room for the min..max bars
    for ax in axes[-columns:]:
        ax.set_xlabel("value (unit scale)" if stats_list[0].units == "unit" else "value (the data's own)")
    fig.suptitle(_KEY + _percentile_note(stats_list), fontsize="small")
    return fig


_KEY = "solid: mean, dashed: mean ± 1 std, bar under the axis: min..max"


def _percentile_note(stats_list: Sequence[Any]) -> str:
    qs = {tuple(s.percentiles["q"]) for s in stats_list if s.percentiles is not None}
    if not qs:
        return ""
    return "\ndotted: percentiles" + (f" (q = {', '.join(f'{q:g}' for q in next(iter(qs)))})" if len(qs) == 1 else "")


def _label(stats: Any) -> str:
    source = stats.source
    where = source.get("path") or source.get("kind") or "stats"
    split = f" ({source['split']})" if source.get("split") else ""
    return f"{Path(str(where)).name}{split}"


def _in_unit_range(stats: Any) -> bool:
    return min(stats.min) >= 0.0 and max(stats.max) <= 1.0


def _draw_channel(ax: Any, stats: Any, c: int, label: str, colour: str, n_files: int, row: int) -> None:
    """One file's histogram and marks on channel ``c``'s panel; each artist's ``gid`` says what it
    is and for which file (``histogram:0``, ``mean:0``, ``std:0``, ``percentile:0``, ``range:0``)."""
    binned = stats.binned_histogram()
    alpha = 0.55 if n_files > 1 else 0.8
    if binned is not None:
        counts, edges = binned[0][c].astype(np.float64), binned[1][c]
        ax.stairs(
            counts / counts.sum(),
            edges,
            fill=True,
            alpha=alpha * 0.6,
            color=colour,
            label=label,
            gid=f"histogram:{row}",
        )
    else:
        ax.plot([], [], color=colour, label=f"{label}: no histogram (data of several kinds or units)")
    mean, std = stats.mean[c], stats.std[c]
    ax.axvline(mean, color=colour, lw=1.6, gid=f"mean:{row}")
    for x in (mean - std, mean + std):
        ax.axvline(x, color=colour, lw=1.0, ls="--", gid=f"std:{row}")
    percentiles = stats.percentiles
    if percentiles is not None:
        for value in percentiles["values"][c]:
            ax.axvline(value, color=colour, lw=0.8, ls=":", gid=f"percentile:{row}")
    # the min..max range: a bar under the axis (one row per file), vertically in axes coordinates
    y = -0.03 - 0.035 * row
    bar = dict(color=colour, lw=3, clip_on=False, transform=ax.get_xaxis_transform(), gid=f"range:{row}")
    ax.plot([stats.min[c], stats.max[c]], [y, y], **bar)


def _save_atomic(fig: Any, target: Path, fmt: str, shown: str) -> None:
    """``fig`` written to ``target`` atomically (:func:`prep.files.write_atomic`): never half a file."""
    try:
        write_atomic(target, lambda f: fig.savefig(f, format=fmt, dpi=110))
    except OSError as exc:
        raise PrepError(f"{shown}: cannot write the plot ({os_reason(exc)})") from None
