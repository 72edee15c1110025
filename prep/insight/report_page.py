"""``prep report``: one self-contained HTML page of one or more stats files.

:func:`report` writes the page atomically; :func:`build_report` returns its text. The page needs
nothing beside it and asks the network for nothing: its style sheet and its one script are
inline, its charts are SVG drawn by :mod:`prep.insight.svg_charts`, its thumbnails ``data:``
URIs (:mod:`prep.insight.thumbnails`), and a ``Content-Security-Policy`` in the page itself
(``default-src 'none'``, images from ``data:`` only, the one script admitted by its SHA-256)
blocks any request and any script that is not prep's.

The page is a Jinja2 template (``templates/report.html.j2``) rendered with autoescaping: every
value from a stats file (paths, file names, reasons, class names, labels) is escaped where it
is placed, so it shows as text and never becomes markup. Jinja2 comes with torch (a
dependency of torch itself), so it costs an install nothing.

Sections appear when the file has their data: the source and how it was measured; the skipped
files; the per-channel table; the ``Normalize`` line and the other libraries' exports (each
with a copy button); the histograms (linear and log); with two or more files, ``prep
compare``'s verdict of each against the first and the histograms overlaid; the covariance and
PCA beside ImageNet's lighting constants; the suspicious images of a per-image report (as
thumbnails); the images' brightness (from the per-image CSV); per-class statistics.
"""

from __future__ import annotations

import base64
import csv
import functools
import hashlib
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from prep._version import __version__
from prep.errors import MismatchError, OptionError, OutputError, PrepError, os_reason
from prep.files import output_target, refuse_foreign, write_text_atomic
from prep.insight.checks import DEFAULT_MAX_SHIFT, DEFAULT_MAX_STD_RATIO, compare_stats
from prep.insight.svg_charts import Series, distribution_chart, histogram_chart, log_decades
from prep.insight.thumbnails import LIMIT, Budget, Thumbnail, Thumbnails
from prep.pixels import channel_names
from prep.stats.file import Stats, load_stats

GENERATOR = "prep report"  # the page's <meta name="generator">: what marks a file as a report -o may replace
COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
MAX_FILES = len(COLOURS)  # files one page overlays legibly
SKIPPED_SHOWN = 20  # skipped files the page names; the count says how many more
TEMPLATES = Path(__file__).resolve().parent / "templates"
OUTLIER_LABELS = {
    "constant": "Constant images (one colour)",
    "near_black": "Near-black images",
    "near_white": "Near-white images",
    "brightness": "Brightness far from the others",
    "duplicates": "Byte-identical duplicates",
}
CLASS_FIELDS = ("per_class",)  # where a Stats holds per-class statistics (Stats.per_class; --per-class)


def report(
    stats: Any,
    out: str | os.PathLike,
    *,
    labels: Sequence[str] | None = None,
    thumbnails: bool = True,
    per_image: Sequence[str | os.PathLike | None] | None = None,
    max_shift: float = DEFAULT_MAX_SHIFT,
    max_std_ratio: float = DEFAULT_MAX_STD_RATIO,
) -> Path:
    """Write the HTML report of ``stats`` (a stats file's path or a :class:`~prep.stats.file.Stats`,
    or a list of up to :data:`MAX_FILES` of them, compared with the first) to ``out``, atomically;
    returns its path.

    ``labels`` name the files (default: each one's source); ``thumbnails=False`` leaves out the
    thumbnails of suspicious images (their names stay); ``per_image`` gives each file's
    per-image CSV (``prep stats --per-image``, or None), for the distribution of the images'
    brightness; ``max_shift`` and ``max_std_ratio`` are ``prep compare``'s limits. An existing
    ``out`` that is not a prep report is never replaced (:class:`~prep.errors.OutputError`).
    """
    shown = os.fspath(out)
    target = output_target(shown, "report")  # refused before any work
    refuse_foreign(
        shown, target, lambda head: f'<meta name="generator" content="{GENERATOR}'.encode() in head, "prep report"
    )
    page = build_report(
        stats,
        labels=labels,
        thumbnails=thumbnails,
        per_image=per_image,
        max_shift=max_shift,
        max_std_ratio=max_std_ratio,
    )
    try:
        write_text_atomic(shown, page)
    except OSError as exc:
        raise OutputError(f"{shown}: cannot write the report ({os_reason(exc)})") from None
    return Path(shown)


def build_report(
    stats: Any,
    *,
    labels: Sequence[str] | None = None,
    thumbnails: bool = True,
    per_image: Sequence[str | os.PathLike | None] | None = None,
    max_shift: float = DEFAULT_MAX_SHIFT,
    max_std_ratio: float = DEFAULT_MAX_STD_RATIO,
) -> str:
    """The report's HTML text (what :func:`report` writes)."""
    loaded = _load(stats)
    names = _labels(loaded, labels)
    csvs = _per_image(per_image, len(loaded))
    comparisons = [
        _comparison(loaded[0][0], s, names[0], names[i], i, max_shift, max_std_ratio)
        for i, (s, _) in enumerate(loaded)
        if i > 0
    ]
    budget = Budget(LIMIT if thumbnails else 0)
    files = [
        _file_context(s, path, names[i], COLOURS[i], budget if thumbnails else None, csvs[i])
        for i, (s, path) in enumerate(loaded)
    ]
    script = (TEMPLATES / "report.js").read_text("utf-8")
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    title = f"prep report: {names[0]}" if len(names) == 1 else f"prep report: {' vs '.join(names)}"
    from markupsafe import Markup

    return _template().render(
        title=title,
        version=__version__,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        files=files,
        comparisons=comparisons,
        limits={
            "max_shift": f"{max_shift:g}",
            "max_std_ratio": f"{max_std_ratio:g}",
            "low_ratio": f"{1 / max_std_ratio:.3f}",
        },
        hist=_histograms([s for s, _ in loaded], names),
        script=Markup(script),
        script_hash=f"sha256-{digest}",
    )


@functools.cache
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every value escaped where it is placed; charts come as Markup
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    return env.get_template("report.html.j2")


# ------------------------------------------------------------------ inputs
def _load(stats: Any) -> list[tuple[Stats, str | None]]:
    items = [stats] if isinstance(stats, str | os.PathLike | Stats) else list(stats)
    if not items:
        raise OptionError("report: give at least one stats file")
    if len(items) > MAX_FILES:
        raise OptionError(f"report: at most {MAX_FILES} stats files overlay legibly; got {len(items)}")
    loaded = [(x, None) if isinstance(x, Stats) else (load_stats(x), os.fspath(x)) for x in items]
    channels = {s.channels for s, _ in loaded}
    if len(channels) > 1:
        raise MismatchError(f"report: the stats files have different channel counts ({sorted(channels)})")
    return loaded


def _labels(loaded: list[tuple[Stats, str | None]], labels: Sequence[str] | None) -> list[str]:
    if labels is not None:
        labels = [str(x) for x in labels]
        if len(labels) != len(loaded):
            raise OptionError(f"report: {len(labels)} labels for {len(loaded)} stats files")
        return labels
    names = [_source_label(s) for s, _ in loaded]
    for i, (name, (_, path)) in enumerate(zip(list(names), loaded)):
        if names.count(name) > 1:
            names[i] = f"{name} [{os.path.basename(path) if path else i + 1}]"
    return names


def _source_label(stats: Stats) -> str:
    source = stats.source
    where = source.get("path") or source.get("kind") or "stats"
    split = f" ({source['split']})" if source.get("split") else ""
    return f"{Path(str(where)).name or where}{split}"


def _per_image(per_image: Sequence[Any] | None, n: int) -> list[str | None]:
    if per_image is None:
        return [None] * n
    given = [None if p is None else os.fspath(p) for p in per_image]
    if len(given) != n:
        raise OptionError(f"report: {len(given)} per-image reports for {n} stats files; give one per file")
    return given


# ------------------------------------------------------------------ numbers as the page shows them
def _cell(value: Any, fmt: str = "{:.6f}") -> dict[str, Any]:
    """A table cell: ``value`` (the exact number, ``repr``) in ``data-value``, and its text."""
    if value is None:
        return {"value": None, "text": "n/a"}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"value": str(value), "text": f"{value:,}"}
    value = float(value)
    text = fmt.format(value) if math.isfinite(value) else str(value)
    return {"value": repr(value), "text": text}


def _row(label: str, field: str, values: Sequence[Any], note: str = "", fmt: str = "{:.6f}") -> dict[str, Any]:
    return {"label": label, "field": field, "cells": [_cell(v, fmt) for v in values], "note": note}


# ------------------------------------------------------------------ one file's sections
def _file_context(
    stats: Stats, path: str | None, label: str, colour: str, budget: Budget | None, csv_path: str | None
) -> dict[str, Any]:
    source = stats.source
    outliers, any_outliers = _outliers(stats, path, budget)
    return {
        "label": label,
        "colour": colour,
        "path": path,
        "source_text": " ".join(str(x) for x in (source.get("kind"), source.get("path") or "") if x),
        "images": stats.images,
        "mode": stats.mode,
        "overview": _overview(stats, path),
        "fingerprint": _fingerprint(stats.fingerprint),
        "skipped": _skipped(stats),
        "table": _channel_table(stats),
        "normalize": stats.normalize_line(),
        "exports": _exports(stats),
        "covariance": _covariance(stats),
        "outliers": outliers,
        "any_outliers": any_outliers,
        "k": f"{((stats.outliers or {}).get('brightness') or {}).get('k', 4):g}",
        "brightness": _brightness(stats, csv_path),
        "classes": _classes(stats),
    }


def _kv(key: str, value: Any, code: bool = False) -> dict[str, Any]:
    return {"key": key, "value": "" if value is None else str(value), "code": code}


def _overview(stats: Stats, path: str | None) -> list[dict[str, Any]]:
    from prep.insight.summary import DECODER_NOTES

    source = stats.source
    rows = []
    if path:
        rows.append(_kv("stats file", path, code=True))
    rows.append(_kv("source", source.get("kind")))
    if source.get("path"):
        rows.append(_kv("path", source.get("path"), code=True))
    for key in ("split", "shard"):
        if source.get(key):
            rows.append(_kv(key, source.get(key)))
    images = f"{stats.images:,}"
    sample = stats.sample
    if sample:
        images += f" (a sample of {sample.get('of')}, seed {sample.get('seed')})"
    rows.append(_kv("images measured", images))
    rows.append(_kv("mode", f"{stats.mode} ({stats.channels} channel{'s' if stats.channels > 1 else ''})"))
    rows.append(_kv("raw max", f"{stats.pixel_max:g} (multiply unit-scale values by it for raw units)"))
    rows.append(_kv("measured after", stats.transform or "nothing (the images as decoded)", code=bool(stats.transform)))
    if stats.decoder:
        rows.append(_kv("decoder", DECODER_NOTES.get(stats.decoder, stats.decoder)))
    rows.append(_kv("written", f"{stats.created} by prep {stats.prep_version}"))
    if stats.skipped_count:
        rows.append(_kv("skipped", f"{stats.skipped_count:,} files"))
    return rows


def _fingerprint(fp: Mapping[str, Any] | None) -> list[dict[str, Any]] | None:
    if not fp:
        return [_kv("fingerprint", "none (a Python dataset without dataset_id)")] if fp is None else None
    return [_kv(key, value, code=isinstance(value, str)) for key, value in fp.items()]


def _skipped(stats: Stats) -> dict[str, Any] | None:
    if not stats.skipped_count:
        return None
    listed = list(stats.skipped)
    shown = listed[:SKIPPED_SHOWN]
    return {
        "count": f"{stats.skipped_count:,}",
        "reasons": [(reason, f"{n:,}") for reason, n in (stats.skipped_reasons or {}).items()],
        "files": [(x["path"], x["reason"]) for x in shown],
        "more": stats.skipped_count - len(shown),
        "listed": len(listed),
    }


def _channel_table(stats: Stats) -> dict[str, Any]:
    s = stats.summary
    rows = [
        _row("pixels", "count", list(s.count)),
        _row("mean", "mean", s.mean),
        _row("std", "std", s.std, "pooled over all pixels (ddof=0): what Normalize needs"),
    ]
    ci95 = (stats.sample or {}).get("ci95")
    if ci95:
        rows.append(_row("mean ± (95%)", "ci95_mean", ci95["mean"], "half-width of the sample's 95% interval"))
        rows.append(_row("std ± (95%)", "ci95_std", ci95["std"], "half-width of the sample's 95% interval"))
    rows += [
        _row("min", "min", s.min),
        _row("max", "max", s.max),
        _row(
            "per-image std mean",
            "per_image_std_mean",
            s.per_image_std_mean,
            "mean of per-image stds; not for Normalize",
        ),
    ]
    if any(s.nonfinite):
        rows.append(_row("NaN/inf left out", "nonfinite", list(s.nonfinite)))
    percentiles = stats.percentiles
    if percentiles is not None:
        for i, q in enumerate(percentiles["q"]):
            values = [channel[i] for channel in percentiles["values"]]
            note = _percentile_note(stats) if i == 0 else ""
            rows.append(_row(f"percentile {q:g}", f"percentile_{q:g}", values, note))
    return {"names": stats.channel_names, "rows": rows}


def _exports(stats: Stats) -> list[dict[str, str]]:
    """Every export target this file's numbers make sense for (nnU-Net's block needs percentiles,
    for one: data of several kinds has none, and the page leaves that target out)."""
    from prep.insight.exports import TARGETS, export, render

    out = []
    for target in TARGETS:
        try:
            out.append({"target": target, "text": render(export(stats, target))})
        except PrepError:
            continue
    return out


def _covariance(stats: Stats) -> dict[str, Any] | None:
    cov = stats.covariance
    if cov is None:
        return None
    names = stats.channel_names
    context: dict[str, Any] = {
        "names": names,
        "matrix": [(name, [_cell(v, "{:.6g}") for v in row]) for name, row in zip(names, cov)],
        "pca": None,
        "imagenet": None,
    }
    pca = stats.pca
    if pca is None or stats.channels < 2:  # one channel has no principal axes: its variance is std**2
        return context
    eigval = pca["eigval"]
    total = sum(eigval)
    axes = [f"axis {k + 1}" for k in range(len(eigval))]
    rows = [
        {"label": "eigenvalue", "field": "eigval", "cells": [_cell(v, "{:.6g}") for v in eigval]},
        {
            "label": "share of the variance",
            "field": "share",
            "cells": [_cell(v / total if total > 0 else None, "{:.1%}") for v in eigval],
        },
    ]
    for c, name in enumerate(names):
        rows.append(
            {
                "label": f"eigenvector {name}",
                "field": f"eigvec_{name}",
                "cells": [_cell(pca["eigvec"][c][k], "{:.4f}") for k in range(len(eigval))],
            }
        )
    context["pca"] = {"axes": axes, "rows": rows}
    if stats.channels == 3 and stats.mode == "RGB":
        from prep.insight.known import IMAGENET_LIGHTING as known

        known_total = sum(known.eigval)
        imagenet = [
            [_cell(v, "{:.4f}") for v in known.eigval],
            [_cell(v / known_total, "{:.1%}") for v in known.eigval],
            *([_cell(v, "{:.4f}") for v in row] for row in known.eigvec),
        ]
        for row, cells in zip(rows, imagenet):
            row["imagenet"] = cells
        context["imagenet"] = {"origin": f"ImageNet: {known.origin}"}
    return context


def _outliers(stats: Stats, path: str | None, budget: Budget | None) -> tuple[list[dict[str, Any]] | None, bool]:
    """The suspicious images per kind, with thumbnails when ``budget`` is given."""
    outliers = stats.outliers
    if outliers is None:
        return None, False
    base = os.path.dirname(os.path.abspath(path)) if path else None
    kinds = []
    with Thumbnails(stats.source, budget or Budget(0), base) as reader:

        def thumb(name: str) -> Thumbnail:
            return reader.get(name) if budget is not None else Thumbnail(name)

        for kind, entry in outliers.items():
            count = int(entry.get("count") or 0)
            if not count:
                continue
            images = list(entry.get("images") or [])
            item: dict[str, Any] = {
                "kind": kind,
                "label": OUTLIER_LABELS.get(kind, kind.replace("_", " "))
                + (f" (beyond {entry['k']:g} stds)" if kind == "brightness" and "k" in entry else ""),
                "count": f"{count:,}",
                "more": count - len(images),
                "images": [],
                "pairs": [],
            }
            if kind == "duplicates":
                item["pairs"] = [(thumb(str(a)), thumb(str(b))) for a, b in images]
            else:
                item["images"] = [thumb(str(name)) for name in images]
            kinds.append(item)
    return kinds, bool(kinds)


def _brightness(stats: Stats, csv_path: str | None) -> dict[str, Any] | None:
    """The distribution of the images' brightness (the mean of their channel means), from the
    per-image CSV, with the mean and the ``k``-std limits the outliers were found with."""
    if csv_path is None:
        return None
    values = read_brightness(csv_path, stats.channels)
    if len(values) == 0:
        return None
    mean, std = float(values.mean()), float(values.std())
    k = float(((stats.outliers or {}).get("brightness") or {}).get("k", 4.0))
    marks = [(mean, "mark-mean", f"mean brightness {mean:.4f}")]
    if std > 0:
        marks += [
            (mean - k * std, "mark-threshold", f"mean - {k:g} std = {mean - k * std:.4f}"),
            (mean + k * std, "mark-threshold", f"mean + {k:g} std = {mean + k * std:.4f}"),
        ]
    beyond = int(np.sum(np.abs(values - mean) > k * std)) if std > 0 else 0
    from markupsafe import Markup

    svg = distribution_chart(values, marks, "brightness of the images", "brightness (mean of the channel means)")
    caption = (
        f"{len(values):,} images from {os.path.basename(csv_path)}: mean {mean:.4f}, std {std:.4f}; "
        f"{beyond} beyond {k:g} stds (dashed)"
    )
    return {"svg": Markup(svg), "caption": caption}


def read_brightness(path: str | os.PathLike, channels: int) -> np.ndarray:
    """Each image's brightness (the mean of its channel means) from a per-image CSV
    (:mod:`prep.insight.per_image_report`), read as a stream; a file that is not one is a
    :class:`~prep.errors.PrepError` naming it."""
    text = os.fspath(path)
    names = channel_names(channels)
    values: list[float] = []
    try:
        with open(text, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            wanted = [f"mean_{c}" for c in names]
            if header is None or not all(w in header for w in wanted):
                raise PrepError(
                    f"{text}: not a prep per-image report of {channels}-channel data (no {', '.join(wanted)} columns)"
                )
            columns = [header.index(w) for w in wanted]
            for line, row in enumerate(reader, start=2):
                try:
                    values.append(sum(float(row[c]) for c in columns) / len(columns))
                except (ValueError, IndexError):
                    raise PrepError(f"{text}: line {line}: not a per-image report row") from None
    except OSError as exc:
        raise PrepError(f"{text}: cannot read the per-image report ({os_reason(exc)})") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise PrepError(f"{text}: not a prep per-image report ({exc})") from None
    return np.array(values, np.float64)


def _classes(stats: Stats) -> list[dict[str, Any]] | None:
    """Per-class statistics, when the stats object holds them (``per_class``: a mapping of class
    name to a :class:`Stats`, or any object or mapping with ``mean``, ``std`` and ``images``)."""
    found = next((getattr(stats, name, None) for name in CLASS_FIELDS if getattr(stats, name, None)), None)
    if not found:
        return None
    entries = found.items() if isinstance(found, Mapping) else enumerate(found)
    rows = []
    for name, entry in entries:

        def get(key: str, entry: Any = entry) -> Any:
            return entry.get(key) if isinstance(entry, Mapping) else getattr(entry, key, None)

        mean, std = get("mean"), get("std")
        if not (_numbers(mean, stats.channels) and _numbers(std, stats.channels)):
            continue
        images = get("images")
        label = get("name") if not isinstance(found, Mapping) and get("name") is not None else name
        rows.append(
            {
                "name": str(label),
                "images": f"{images:,}" if isinstance(images, int) else "",
                "mean": [_cell(float(v)) for v in mean],
                "std": [_cell(float(v)) for v in std],
            }
        )
    return rows or None


def _numbers(values: Any, n: int) -> bool:
    return (
        isinstance(values, Sequence)
        and not isinstance(values, str)
        and len(values) == n
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
    )


# ------------------------------------------------------------------ across files
def _comparison(
    a: Stats, b: Stats, label_a: str, label_b: str, index: int, max_shift: float, max_std_ratio: float
) -> dict[str, Any]:
    result = compare_stats(a, b, max_shift=max_shift, max_std_ratio=max_std_ratio)
    names = a.channel_names
    rows, failing = [], []
    for c, name in enumerate(names):
        shift, ratio = result.mean_shift[c], result.std_ratio[c]
        fail_shift = not abs(shift) <= result.max_shift
        fail_ratio = not 1 / result.max_std_ratio <= ratio <= result.max_std_ratio
        if fail_shift or fail_ratio:
            failing.append(name)
        rows.append(
            {
                "index": c,
                "name": name,
                "mean_shift": _cell(shift, "{:+.4f}"),
                "std_ratio": _cell(ratio, "{:.4f}"),
                "wasserstein": None if result.wasserstein is None else _cell(result.wasserstein[c], "{:.6f}"),
                "ks": None if result.ks is None else _cell(result.ks[c], "{:.6f}"),
                "range_a": "{:.3f}..{:.3f}".format(*result.range_a[c]),
                "range_b": "{:.3f}..{:.3f}".format(*result.range_b[c]),
                "fail_shift": fail_shift,
                "fail_ratio": fail_ratio,
                "fail": fail_shift or fail_ratio,
            }
        )
    return {
        "a": label_a,
        "b": label_b,
        "a_index": 0,
        "b_index": index,
        "ok": result.ok,
        "failing": failing,
        "rows": rows,
        "has_histograms": result.wasserstein is not None,
    }


_KEY = (
    "Solid: mean; dashed: mean ± 1 std; dotted: percentiles{q}; bar under the axis: min..max (as prep plot draws them)."
)


def _histograms(stats_list: list[Stats], labels: list[str]) -> dict[str, Any]:
    """One chart per channel, every file's series overlaid, and the legend."""
    from markupsafe import Markup

    from prep.insight.plots import wants_log

    names = stats_list[0].channel_names
    fractions: list[np.ndarray | None] = []
    for stats in stats_list:
        hist = stats.histogram
        if hist is None:
            fractions.append(None)
        else:
            counts = hist.astype(np.float64)
            fractions.append(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1))
    levels = log_decades([row for f in fractions if f is not None for row in f])
    charts = []
    for c, name in enumerate(names):
        series = []
        for i, stats in enumerate(stats_list):
            percentiles = stats.percentiles
            marks = [] if percentiles is None else list(zip(percentiles["q"], percentiles["values"][c]))
            of_file = fractions[i]
            series.append(
                Series(
                    label=labels[i],
                    colour=COLOURS[i],
                    fractions=None if of_file is None else of_file[c],
                    mean=stats.mean[c],
                    std=stats.std[c],
                    minimum=stats.min[c],
                    maximum=stats.max[c],
                    percentiles=marks,
                )
            )
        charts.append({"channel": name, "svg": Markup(histogram_chart(name, series, levels, ident=f"h{c}"))})
    qs = {tuple(s.percentiles["q"]) for s in stats_list if s.percentiles is not None}
    q = f" (q = {', '.join(f'{v:g}' for v in next(iter(qs)))})" if len(qs) == 1 else ""
    return {
        "charts": charts,
        "log": wants_log(stats_list),
        "key": _KEY.format(q=q),
        "legend": [
            {
                "label": label,
                "colour": COLOURS[i],
                "note": None
                if s.histogram is not None
                else "no bars: data beyond 8 bits (percentiles marked)"
                if s.percentiles is not None
                else "no histogram: data of several kinds or units",
            }
            for i, (s, label) in enumerate(zip(stats_list, labels))
        ],
    }


def _percentile_note(stats) -> str:
    """How exact a stats file's percentiles are."""
    if stats.histogram is not None:
        return "exact, from the 8-bit histogram"
    if "bounds" in stats.percentiles:
        return "float data: within 2**-7 relative (bounds in the stats file)"
    return "exact, from the 16-bit histogram"
