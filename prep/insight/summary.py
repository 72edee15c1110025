"""What prep shows a person: the summary table of a stats file and the progress bar of a pass."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from prep.errors import printable
from prep.stats.validate import FILE_SOURCE_KINDS

if TYPE_CHECKING:
    from prep.stats.file import Stats


SKIPPED_SHOWN = 10  # skipped files listed by `prep show`; the count says how many more


DECODER_NOTES = {  # prep.decode.decoders: how the recorded decoder is described in the summary
    "pil": "pil (PIL's convert, as ImageFolder)",
    "auto": "auto (PIL's pixels: by torchvision.io where it gives them, else by PIL)",
    "torchvision": "torchvision (torchvision.io's pixels for JPEGs)",
    "torchvision-cuda": "torchvision-cuda (nvjpeg on the GPU; may differ from PIL by rounding)",
    "bands": "bands (every band as stored: tifffile for TIFFs, PIL unconverted otherwise)",
}


def format_summary(stats: Stats, details: bool = False) -> str:
    """A human-readable table of a Stats object, ending with the Normalize line to paste.

    ``details`` adds when and by which prep the file was made, and the skipped files. Text from
    the file (paths, names, descriptions: an edited stats file may hold anything) is printed
    through :func:`prep.errors.printable`, so it cannot carry terminal escape sequences.
    """
    s = stats.summary
    src = stats.source

    def row(label: str, values, fmt: str = "{:>10.6f}") -> str:
        return f"{label:<22}" + "".join(fmt.format(v) for v in values)

    lines = [
        f"source                {printable(src.get('kind'))} {printable(src.get('path') or '')}".rstrip()
        + (f"  split={printable(src['split'])}" if src.get("split") else "")
        + f"  mode={stats.mode}",
        f"images                {s.images}"
        + (f"  (skipped {stats.skipped_count} files)" if stats.skipped_count else ""),
        f"fingerprint           {_fingerprint(stats.fingerprint)}",
        *([f"measured after        {printable(stats.transform)}"] if stats.transform else []),
        *(
            [f"decoded by            {printable(DECODER_NOTES.get(stats.decoder, stats.decoder))}"]
            if stats.decoder
            else []
        ),
        (
            f"raw max               {s.pixel_max:g}  (multiply unit-scale values by it for raw units)"
            if stats.units == "unit"
            else "units                 raw: the data's own values (ToDtype(float32, scale=False), then Normalize)"
        ),
        *([f"nodata                {_nodata(stats.nodata)}  (left out of each band)"] if stats.nodata else []),
    ]
    lines += _band_table(stats) if stats.channels > WIDE_TABLE else _channel_columns(stats, row, details)
    lines.extend(_outlier_lines(stats))
    lines.extend(class_lines(stats))
    if details:
        lines.insert(1, f"created               {printable(stats.created)} by prep {printable(stats.prep_version)}")
        lines.extend(_skipped_lines(stats))
    lines.append(stats.normalize_line())
    return "\n".join(lines)


def _channel_columns(stats: Stats, row, details: bool) -> list[str]:
    """The per-channel numbers as columns, one channel each (up to :data:`WIDE_TABLE` of them)."""
    s = stats.summary
    names = stats.channel_names
    lines = [
        row("channel", names, "{:>10}"),
        row("pixels", s.count, "{:>10d}"),
        *([row("valid fraction", stats.valid_fraction)] if any(stats.nodata_count) else []),
        *_estimate_rows(stats, s, row),
        row("min", s.min),
        row("max", s.max),
        row("per-image std mean", s.per_image_std_mean) + "   (mean of per-image stds; not for Normalize)",
    ]
    if any(s.nonfinite):
        lines.append(row("NaN/inf left out", s.nonfinite, "{:>10d}"))
    percentiles = stats.percentiles
    if percentiles is not None:
        for i, q in enumerate(percentiles["q"]):
            lines.append(row(f"percentile {q:g}", [channel[i] for channel in percentiles["values"]]))
    pca = stats.pca
    if pca is not None and stats.channels > 1:  # one channel has no principal axes: its variance is std**2
        if details:
            for name, row_values in zip(names, stats.covariance or []):
                lines.append(row(f"covariance {name}", row_values))
        imagenet = "   (ImageNet's pasted eigval: 0.2175 0.0188 0.0045)" if stats.channels == 3 else ""
        lines.append(row("pca eigval", pca["eigval"]) + imagenet)
    return lines


WIDE_TABLE = 4  # more channels than this: one row per band instead of one column


def _nodata(values) -> str:
    distinct = sorted({f"{v:g}" for v in values})
    return distinct[0] if len(distinct) == 1 else ", ".join(f"{v:g}" for v in values)


def _band_table(stats: Stats) -> list[str]:
    """The per-channel numbers as rows, one band each (13 Sentinel-2 bands, 200 hyperspectral ones)."""
    s = stats.summary
    percentiles = stats.percentiles
    q_cols: list[tuple[str, int]] = []
    if percentiles is not None:
        qs = percentiles["q"]
        q_cols = [(f"p{qs[i]:g}", i) for i in sorted({0, len(qs) - 1})]
    header = f"{'band':<10}{'valid':>8}{'mean':>14}{'std':>14}{'min':>12}{'max':>12}" + "".join(
        f"{name:>12}" for name, _ in q_cols
    )
    lines = [header]
    for c, name in enumerate(stats.channel_names):
        line = (
            f"{printable(name)[:9]:<10}{stats.valid_fraction[c]:>8.1%}{s.mean[c]:>14.6g}{s.std[c]:>14.6g}"
            f"{s.min[c]:>12.6g}{s.max[c]:>12.6g}"
        )
        if percentiles is not None:
            line += "".join(f"{percentiles['values'][c][i]:>12.6g}" for _, i in q_cols)
        lines.append(line)
    return lines


def _estimate_rows(stats: Stats, s, row) -> list[str]:
    """``mean`` and ``std`` rows; for a sample, with their 95% intervals (``0.4914 ± 0.0006``)."""
    ci95 = (stats.sample or {}).get("ci95")
    if not ci95:
        return [row("mean", s.mean), row("std", s.std)]

    def with_ci(values, halves) -> list[str]:
        return [f"{v:.4f} ± {h:.4f}" if h is not None else f"{v:.4f}" for v, h in zip(values, halves)]

    sample = stats.sample or {}
    of = "image files" if stats.source.get("kind") in FILE_SOURCE_KINDS else "images"
    note = f"   (95%; {sample['images']} images measured, a sample of {sample['of']} {of}, seed {sample['seed']})"
    return [
        row("mean", with_ci(s.mean, ci95["mean"]), "{:>18}") + note,
        row("std", with_ci(s.std, ci95["std"]), "{:>18}"),
    ]


CLASSES_LISTED = 12  # classes the table lists; with more, the CLASS_EXTREMES darkest and brightest
CLASS_EXTREMES = 5
CLASSES_NAMED = 3  # much darker (or brighter) classes named on one line; the count says how many more
# a class is much darker or brighter than the rest when its brightness (the mean of its channel
# means) lies more than this many of the rest's pixel stds (the mean of its channel stds) from the
# rest's brightness: after the dataset's Normalize its average pixel sits over one std off centre
CLASS_SHIFT = 1.0


@dataclass(frozen=True)
class ClassBrightness:
    """A class's brightness (the mean of its channel means, unit scale) beside the rest's, and
    the gap in the rest's pixel stds."""

    name: str
    brightness: float
    rest: float
    shift: float  # (brightness - rest) / the rest's pixel std (the mean of its channel stds)


def class_brightness(stats: Stats) -> list[ClassBrightness]:
    """Each measured class against the rest of the data (the whole minus the class, from the
    moments: ``n_rest * m_rest = N M - n m`` and the same for the second moments), in ``ImageFolder``'s
    order; empty with fewer than two classes measured."""
    per_class = stats.per_class or {}
    if len(per_class) < 2:
        return []
    whole = stats.summary
    out = []
    for name, part in per_class.items():
        s = part.summary
        rest_means, rest_stds = [], []
        for c in range(stats.channels):
            n_all, n = whole.count[c], s.count[c]
            if n_all <= n:
                break
            mean = (n_all * whole.mean[c] - n * s.mean[c]) / (n_all - n)
            second = (n_all * (whole.std[c] ** 2 + whole.mean[c] ** 2) - n * (s.std[c] ** 2 + s.mean[c] ** 2)) / (
                n_all - n
            )
            rest_means.append(mean)
            rest_stds.append(math.sqrt(max(second - mean * mean, 0.0)))
        if len(rest_means) < stats.channels:
            continue
        brightness, rest = sum(s.mean) / len(s.mean), sum(rest_means) / len(rest_means)
        spread = sum(rest_stds) / len(rest_stds)
        shift = (brightness - rest) / spread if spread > 0 else (0.0 if brightness == rest else math.inf)
        out.append(ClassBrightness(name, brightness, rest, math.copysign(abs(shift), brightness - rest)))
    return out


def class_lines(stats: Stats) -> list[str]:
    """The per-class table (images, mean and std per channel; with many classes only the darkest
    and brightest), the classes much darker or brighter than the rest (:data:`CLASS_SHIFT`), and
    the classes without a measured image."""
    per_class = stats.per_class
    if per_class is None:
        return []
    names = stats.channel_names
    labels = bool((getattr(stats, "volume", None) or {}).get("per_label"))  # label values of volumes
    word = "label" if labels else "class"
    what = "by value); per label: volumes" if labels else "ImageFolder's order); per class: images"
    number = "{:>9.4f}" if stats.units == "unit" else "{:>9.4g}"  # raw units: HU, reflectances
    lines = [
        f"{word + 'es' if word == 'class' else word + 's':<22}{len(stats.classes or ())} ({what}, mean, std",
        f"{word:<22}{'images':>8}"
        + "".join(f"{'mean ' + n:>9}" for n in names)
        + "".join(f"{'std ' + n:>9}" for n in names),
    ]

    def table_row(name: str) -> str:
        part = per_class[name]
        values = "".join(number.format(v) for v in (*part.mean, *part.std))
        label = printable(name)
        return f"{label if len(label) <= 21 else label[:20] + '~':<22}{part.images:>8d}{values}"

    bright = class_brightness(stats)
    if len(per_class) <= CLASSES_LISTED:
        lines += [table_row(name) for name in per_class]
    else:
        ordered = sorted(per_class, key=lambda name: sum(per_class[name].mean))
        lines += [table_row(name) for name in ordered[:CLASS_EXTREMES]]
        lines.append(f"  ... {len(ordered) - 2 * CLASS_EXTREMES} classes between the darkest and the brightest")
        lines += [table_row(name) for name in ordered[-CLASS_EXTREMES:]]
    kind = word
    for word, sign in (("darker", -1), ("brighter", 1)):
        far = sorted((b for b in bright if sign * b.shift > CLASS_SHIFT), key=lambda b: -sign * b.shift)
        if not far:
            continue
        named = "; ".join(f"'{printable(b.name)}' {b.brightness:.2f} vs {b.rest:.2f}" for b in far[:CLASSES_NAMED])
        more = f"; and {len(far) - CLASSES_NAMED} more" if len(far) > CLASSES_NAMED else ""
        if len(far) == 1:
            lines.append(
                f"{kind} '{printable(far[0].name)}' is much {word} than the rest: mean {far[0].brightness:.2f} vs "
                f"{far[0].rest:.2f} ({abs(far[0].shift):.1f} of the rest's pixel stds)"
            )
        else:
            lines.append(f"{len(far)} classes are much {word} than the rest (mean vs the rest's): {named}{more}")
    empty = [name for name in stats.classes or () if name not in per_class]
    if empty:
        shown = ", ".join(printable(name) for name in empty[:CLASSES_NAMED])
        more = f", and {len(empty) - CLASSES_NAMED} more" if len(empty) > CLASSES_NAMED else ""
        lines.append(f"no measured image in {len(empty)} class(es): {shown}{more}")
    return lines


def _outlier_lines(stats: Stats) -> list[str]:
    """One line per kind of suspicious image found by a per-image report."""
    lines = []
    for kind, entry in (stats.outliers or {}).items():
        if not entry["count"]:
            continue
        pairs = kind == "duplicates"
        if pairs:
            named = [f"{printable(a)} = {printable(b)}" for a, b in entry["images"]]
        else:
            named = [printable(name) for name in entry["images"]]
        more = entry["count"] - len(named)
        label = kind.replace("_", " ") + (f" (beyond {entry['k']:g} stds)" if kind == "brightness" else "")
        lines.append(
            f"suspicious            {entry['count']} {label}: {', '.join(named)}"
            + (f", and {more} more" if more else "")
        )
    return lines


def _fingerprint(fp) -> str:
    """The fingerprint in a few words, for each shape prep writes."""
    if not fp:
        return "none (Python dataset without dataset_id)"
    if "dataset_id" in fp:
        return f"dataset_id {printable(fp['dataset_id'])}, {fp['images']} images"
    text = f"{fp['files']} files, {fp['bytes']} bytes, sha256 {fp['sha256'][:16]}"
    return text + (f", contents sha256 {fp['checksum'][:16]}" if fp.get("checksum") else "")


def _skipped_lines(stats: Stats) -> list[str]:
    """The totals per reason, the first :data:`SKIPPED_SHOWN` skipped files, and how many more."""
    if not stats.skipped_count:
        return []
    reasons = ", ".join(f"{n} {printable(category)}" for category, n in (stats.skipped_reasons or {}).items())
    lines = [f"skipped               {stats.skipped_count} files: {reasons}"]
    shown = list(stats.skipped)[:SKIPPED_SHOWN]
    lines += [f"skipped               {printable(x['path'])}: {printable(x['reason'])}" for x in shown]
    more = stats.skipped_count - len(shown)
    if more:
        listed = len(stats.skipped)
        where = "see the file" if listed == stats.skipped_count else f"the file lists the first {listed}"
        lines.append(f"skipped               ... and {more} more ({where})")
    return lines


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(progress: bool | Callable[..., Any], total: int | None, label: str):
    """A context-managed bar with ``update(n)``: tqdm on stderr for True, ``progress(...)`` for a
    factory, a bar that shows nothing for False."""
    if not progress:
        return _NullBar()
    if progress is True:
        from tqdm.auto import tqdm

        factory: Callable[..., Any] = tqdm
    else:
        factory = progress
    return factory(total=total, desc=f"prep stats {label}", unit="img", dynamic_ncols=True)
