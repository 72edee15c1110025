"""The stats file: the contract between the statistics pass and training/test code.

:class:`Stats` holds what was measured, on what, and how; ``save`` writes it atomically as
JSON (schema documented in the README) and :func:`load_stats` validates every field against
the state it is derived from, raising :class:`~prep.errors.StatsFileError` that names the field
at fault in one line. Files passed over are kept bounded (:class:`SkippedFiles`): the first
:data:`SKIPPED_LISTED` by name, all of them in the count and the per-reason totals.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

from prep._version import __version__
from prep.errors import OptionError, OutputError, StaleStatsError, StatsFileError, os_reason
from prep.fields import (
    INT64_MAX,
    check_shape,
    field_name,
    parse_json,
    read_count,
    read_field,
    refuse_unknown_keys,
    short_repr,
)
from prep.files import read_bytes_bounded, write_json_atomic
from prep.options import MAX_PERCENTILES
from prep.pixels import CHANNELS, EIGHT_BIT_MAX, MODES
from prep.stats.histogram import DEFAULT_PERCENTILES, check_percentiles
from prep.stats.histogram import percentiles as histogram_percentiles
from prep.stats.moments import ChannelMoments, ChannelSummary, exact_moments

SCHEMA_VERSION = 1
DECODERS_RECORDED = ("pil", "auto", "torchvision", "torchvision-cuda")  # options.decoder: prep.decode.decoders
FILE_SOURCE_KINDS = ("folder", "sample", "archive", "webdataset")  # sources of image files, which a decoder reads
_PIXELS_OF = {"auto": "pil"}  # decoders whose pixels are another's by construction (prep.decode.decoders)


def pixels_of(decoder: str | None) -> str | None:
    """Whose pixels ``decoder`` gives: ``auto`` gives PIL's; every other decoder its own."""
    return _PIXELS_OF.get(decoder, decoder)


def same_pixels(a: str | None, b: str | None) -> bool:
    """True when files decoded by ``a`` and by ``b`` have the same pixels (``auto`` is ``pil``)."""
    return pixels_of(a) == pixels_of(b)


REL_TOL = 1e-9  # summary numbers, and float64 moments next to exact sums, must agree with the state this closely
SKIPPED_LISTED = 1000  # skipped files a stats file or checkpoint names; its count and per-reason totals cover all
TOP_LEVEL_FIELDS = (
    "schema_version",
    "prep_version",
    "created",
    "source",
    "fingerprint",
    "options",
    "channels",
    "pixel_max",
    "percentiles",
    "covariance",
    "pca",
    "sample",
    "outliers",
    "count",
    "mean",
    "std",
    "min",
    "max",
    "per_image_std_mean",
    "nonfinite",
    "skipped",
    "state",
)
# what a fingerprint holds, by key, and the shapes prep writes (required keys, optional keys):
# folders hash their listing and idx/CIFAR files their decoded images ({files, bytes, sha256}; a
# folder measured with checksum=True adds "checksum", a SHA-256 of the files' contents); a Python
# dataset given a dataset_id is fingerprinted by it and its length (null for an iterable without one)
FINGERPRINT_FIELDS = {
    "files": "count",
    "bytes": "count",
    "sha256": "sha256",
    "checksum": "sha256",
    "dataset_id": "text",
    "images": "count or null",
}
FINGERPRINT_SHAPES = (
    (("files", "bytes", "sha256"), ("checksum",)),
    (("dataset_id", "images"), ()),
)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def reason_category(reason: str) -> str:
    """The short category of a skip reason, its text before the first ``:`` (``cannot decode``,
    ``symlink loop``, ``not an image file extension``): what the per-reason totals count."""
    return reason.partition(":")[0]


@dataclass
class SkippedFiles:
    """Files passed over, kept bounded: the first :data:`SKIPPED_LISTED` ``(path, reason)`` pairs in
    the order they came, how many there were in all, and how many per :func:`reason_category`.

    A pass ``extend``s it as it finds them; iterating gives the listed pairs.
    """

    listed: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> None:
        self.count += 1
        category = reason_category(reason)
        self.reasons[category] = self.reasons.get(category, 0) + 1
        if len(self.listed) < SKIPPED_LISTED:
            self.listed.append((path, reason))

    def extend(self, pairs: Iterable[tuple[str, str]]) -> None:
        for path, reason in pairs:
            self.add(path, reason)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.listed)

    def __bool__(self) -> bool:
        return self.count > 0

    def to_json(self) -> dict[str, Any]:
        """``{"count", "reasons", "files"}``: the total, the total per reason, the listed files."""
        return {
            "count": self.count,
            "reasons": dict(sorted(self.reasons.items())),
            "files": [{"path": p, "reason": r} for p, r in self.listed],
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "skipped") -> SkippedFiles:
        """Validate what :meth:`to_json` wrote; errors name the field (``skipped.count``, ...).

        A file written before the per-reason totals existed (no ``reasons``) lists every file.
        """
        if not isinstance(value, dict):
            raise StatsFileError(f"field '{where}': expected an object; got {short_repr(value)}")
        refuse_unknown_keys(value, ("count", "reasons", "files"), where)
        count = read_count(value, "count", where)
        files = read_field(value, "files", list, where)
        if not all(isinstance(x, dict) and set(x) == {"path", "reason"} for x in files) or not all(
            isinstance(x["path"], str) and isinstance(x["reason"], str) for x in files
        ):
            raise StatsFileError(f"field '{where}.files': expected a list of {{path, reason}} objects")
        listed = cls()
        listed.extend((x["path"], x["reason"]) for x in files)
        if "reasons" not in value:  # written by prep 0.2: every skipped file is listed
            if count != len(files):
                raise StatsFileError(f"missing field '{where}.reasons'")
            return listed
        _check_listing(count, len(files), where)
        reasons = read_field(value, "reasons", dict, where)
        for category, n in reasons.items():
            counted = isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= INT64_MAX
            if not isinstance(category, str) or not counted:
                label = field_name(f"{where}.reasons", category)
                raise StatsFileError(f"field '{label}': expected a positive integer count; got {short_repr(n)}")
        if sum(reasons.values()) != count:
            raise StatsFileError(
                f"field '{where}.reasons': the totals add up to {sum(reasons.values())}; '{where}.count' is {count}"
            )
        for category, n in listed.reasons.items():
            if reasons.get(category, 0) < n:
                raise StatsFileError(
                    f"field '{where}.reasons': {n} listed file(s) skipped for {short_repr(category)}; "
                    f"the total for it is {reasons.get(category, 0)}"
                )
        return cls(listed.listed, count, dict(reasons))


def _check_listing(count: int, listed: int, where: str) -> None:
    """A skipped list names the first :data:`SKIPPED_LISTED` files: all of them when there are no more."""
    if listed > SKIPPED_LISTED:
        raise StatsFileError(f"field '{where}.files': lists {listed} files; at most {SKIPPED_LISTED} are listed")
    if listed != min(count, SKIPPED_LISTED):
        raise StatsFileError(
            f"field '{where}.count': {count} skipped, but {listed} listed "
            f"(prep lists every skipped file up to {SKIPPED_LISTED}, else the first {SKIPPED_LISTED})"
        )


@dataclass(frozen=True)
class Stats:
    """Per-channel statistics of a dataset in unit scale, and where they came from.

    ``mean``/``std``/``min``/``max`` are what ``ToDtype(torch.float32, scale=True)`` (or
    ``ToTensor``) values have; multiply by ``pixel_max`` (255 or 65535) for raw units.
    ``std`` is the population std over all pixels pooled (ddof=0), which is what
    ``transforms.Normalize`` assumes; ``per_image_std_mean`` is the mean over images of each
    image's own std, shown for comparison only.

    ``skipped`` is given as every ``{path, reason}`` passed over (or a :class:`SkippedFiles`);
    only the first :data:`SKIPPED_LISTED` are kept, as a tuple, and ``skipped_count`` and
    ``skipped_reasons`` (per :func:`reason_category`) count them all. A stats file gives
    ``skipped_count`` and ``skipped_reasons`` with the files it lists.
    """

    source: Mapping[str, Any]
    fingerprint: Mapping[str, Any] | None
    mode: str
    state: ChannelMoments
    skipped: Sequence[Mapping[str, str]] | SkippedFiles = ()
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    prep_version: str = __version__
    skipped_count: int | None = None
    skipped_reasons: Mapping[str, int] | None = None
    transform: str | None = None  # the repr of the transform applied before measuring (prep.transforms.measurement)
    decoder: str | None = None  # what decoded image files (DECODERS_RECORDED); None: no files decoded
    percentiles_q: tuple[float, ...] = DEFAULT_PERCENTILES  # the percentiles the file lists
    sample: Mapping[str, Any] | None = None  # a sampled pass: its size, seed and 95% intervals
    outliers: Mapping[str, Any] | None = None  # suspicious images, from a per-image report

    def __post_init__(self) -> None:
        tally = _tally_skipped(self.skipped, self.skipped_count, self.skipped_reasons)
        object.__setattr__(self, "skipped", tuple({"path": p, "reason": r} for p, r in tally.listed))
        object.__setattr__(self, "skipped_count", tally.count)
        object.__setattr__(self, "skipped_reasons", dict(sorted(tally.reasons.items())))

    def __repr__(self) -> str:
        where = self.source.get("path") or self.source.get("kind")
        split = f", split={self.source['split']!r}" if self.source.get("split") else ""
        return (
            f"Stats(source={where!r}{split}, mode={self.mode!r}, images={self.images}, "
            f"mean={_fmt(self.mean)}, std={_fmt(self.std)})"
        )

    # -------------------------------------------------------------- derived numbers
    @property
    def channels(self) -> int:
        return self.state.channels

    @cached_property
    def summary(self) -> ChannelSummary:
        return self.state.compute()

    @property
    def mean(self) -> tuple[float, ...]:
        return self.summary.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.summary.std

    @property
    def min(self) -> tuple[float, ...]:
        return self.summary.min

    @property
    def max(self) -> tuple[float, ...]:
        return self.summary.max

    @property
    def count(self) -> tuple[int, ...]:
        return self.summary.count

    @property
    def per_image_std_mean(self) -> tuple[float, ...]:
        return self.summary.per_image_std_mean

    @property
    def pixel_max(self) -> float:
        return self.summary.pixel_max

    @property
    def images(self) -> int:
        return self.summary.images

    @property
    def options(self) -> dict[str, Any]:
        """The options that change the numbers (batch size and workers do not; the device only
        through the decoder: ``torchvision-cuda`` is nvjpeg's rounding)."""
        return {"mode": self.mode, "transform": self.transform, "decoder": self.decoder}

    # -------------------------------------------------------------- transforms
    def normalize(self, eps: float | None = None):
        """``Compose``: pixel conversion, float32 unit scale, ``Normalize(mean, std)``."""
        from prep.transforms.normalize import normalize_pipeline

        return normalize_pipeline(self.mean, self.std, self.mode, eps=eps)

    def minmax(
        self,
        feature_range: tuple[float, float] = (0.0, 1.0),
        eps: float | None = None,
        percentiles: tuple[float, float] | None = None,
        clip: bool = False,
    ):
        """``Compose`` mapping each channel's dataset ``[min, max]`` onto ``feature_range``.

        With ``percentiles=(lo, hi)``, robust scaling: each channel's ``lo``-th and ``hi``-th
        percentiles (exact, from the histogram; 8-bit data) map onto the range instead, and
        ``clip=True`` clamps what falls outside it.
        """
        from prep.transforms.normalize import minmax_pipeline

        low, high = self.min, self.max
        if percentiles is not None:
            q_low, q_high = percentiles
            if not q_low < q_high:
                raise OptionError(f"percentiles must be (low, high) with low < high; got {percentiles}")
            low, high = self.percentile(q_low), self.percentile(q_high)
        return minmax_pipeline(
            low, high, self.mode, feature_range=feature_range, eps=eps, pixel_max=self.pixel_max, clip=clip
        )

    # -------------------------------------------------------------- histograms
    @property
    def histogram(self) -> np.ndarray | None:
        """Per channel, the counts of each raw 8-bit value ``(C, 256)``; None for other data."""
        return None if self.state.histogram is None else self.state.histogram.copy()

    # -------------------------------------------------------------- colour covariance
    @cached_property
    def covariance(self) -> list[list[float]] | None:
        """The ``C x C`` covariance of the channels over all pixels (ddof=0, unit scale squared),
        when measured with ``covariance=True`` (integer data); else None.

        ``cov_ij = (n sum(x_i x_j) - S_i S_j) / (n * pixel_max)**2`` from the exact raw sums: for
        8-bit data an exact fraction rounded once; for 16-bit data in float64.
        """
        cross, state = self.state.cross, self.state
        if cross is None:
            return None
        c, n, scale = self.channels, int(state.count[0]), state.pixel_max
        if state.exact_sum is not None:
            s = state.exact_sum
            return [
                [float(Fraction(n * cross[i][j] - s[i] * s[j], n * n * int(scale) ** 2)) for j in range(c)]
                for i in range(c)
            ]
        mean = state.mean
        return [[cross[i][j] / n / scale**2 - mean[i] * mean[j] for j in range(c)] for i in range(c)]

    @cached_property
    def pca(self) -> dict[str, list] | None:
        """``{"eigval": [...], "eigvec": [[...]]}`` of :attr:`covariance`: eigenvalues (variances
        along the principal axes, unit scale squared) by decreasing size, and the eigenvectors as
        the *columns* of ``eigvec`` (AlexNet's and fb.resnet.torch's layout), each signed so that
        its largest-magnitude component is positive."""
        cov = self.covariance
        if cov is None:
            return None
        values, vectors = np.linalg.eigh(np.array(cov))
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        for k in range(vectors.shape[1]):
            if vectors[np.argmax(np.abs(vectors[:, k])), k] < 0:
                vectors[:, k] = -vectors[:, k]
        return {"eigval": [max(float(v), 0.0) for v in values], "eigvec": vectors.tolist()}

    def lighting(self, alphastd: float = 0.1):
        """AlexNet-style PCA lighting noise as a torchvision v2 transform, for float images in unit
        scale (after ``ToDtype(scale=True)``): each call draws ``alpha ~ N(0, alphastd)`` per
        principal axis and adds ``eigvec @ (alpha * eigval)`` to every pixel."""
        from prep.transforms.normalize import Lighting

        pca = self.pca
        if pca is None:
            raise StatsFileError("lighting needs the covariance: measure with covariance=True (--covariance)")
        return Lighting(pca["eigval"], pca["eigvec"], alphastd)

    def percentile(self, q: float) -> tuple[float, ...]:
        """Each channel's ``q``-th percentile in unit scale, exactly ``numpy.percentile(pixels /
        255, q)`` (linear method) of the measured pixels; 8-bit data only (from the histogram)."""
        (q,) = check_percentiles([q])
        if self.state.histogram is None:
            raise StatsFileError("percentiles need the 8-bit histogram; these statistics include 16-bit or float data")
        return tuple(row[0] for row in histogram_percentiles(self.state.histogram, [q], EIGHT_BIT_MAX))

    @cached_property
    def percentiles(self) -> dict[str, Any] | None:
        """``{"q": [...], "values": [[...] per channel]}`` for :attr:`percentiles_q`; None without
        a histogram."""
        if self.state.histogram is None:
            return None
        q = list(self.percentiles_q)
        return {"q": q, "values": histogram_percentiles(self.state.histogram, q, EIGHT_BIT_MAX)}

    def denormalize(self, eps: float | None = None):
        """The inverse of :meth:`normalize` on float tensors: ``x * std + mean``, unit scale."""
        from prep.transforms.normalize import denormalize_pipeline

        return denormalize_pipeline(self.mean, self.std, eps=eps)

    def normalize_line(self) -> str:
        """The ``transforms.Normalize(...)`` line to paste into training code."""
        return f"transforms.Normalize(mean={_fmt(self.mean)}, std={_fmt(self.std)})"

    def export(self, target: str, units: str | None = None) -> dict[str, Any]:
        """This file's mean and std for another library (torchvision, albumentations, hf, timm, kornia,
        monai, dali, ffcv, keras) in its own units and field names: :func:`prep.insight.exports.export`."""
        from prep.insight.exports import export

        return export(self, target, units=units)

    # -------------------------------------------------------------- JSON
    def to_dict(self) -> dict[str, Any]:
        s = self.summary
        return {
            "schema_version": SCHEMA_VERSION,
            "prep_version": self.prep_version,
            "created": self.created,
            "source": {**self.source, "mode": self.mode, "images": s.images},
            "fingerprint": None if self.fingerprint is None else dict(self.fingerprint),
            "options": self.options,
            "channels": self.channels,
            "pixel_max": s.pixel_max,
            "count": list(s.count),
            "mean": list(s.mean),
            "std": list(s.std),
            "min": list(s.min),
            "max": list(s.max),
            "per_image_std_mean": list(s.per_image_std_mean),
            "nonfinite": list(s.nonfinite),
            "percentiles": self.percentiles,
            "covariance": self.covariance,
            "pca": self.pca,
            "sample": None if self.sample is None else dict(self.sample),
            "outliers": None if self.outliers is None else dict(self.outliers),
            "skipped": self.skipped_files().to_json(),
            "state": self.state.state_dict(),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the stats file atomically (temp file, fsync, rename)."""
        try:
            write_json_atomic(path, self.to_dict())
        except OSError as exc:
            raise OutputError(f"{os.fspath(path)}: cannot write stats file ({os_reason(exc)})") from None

    @classmethod
    def from_dict(cls, data: Any) -> Stats:
        return _parse(data)

    def skipped_files(self) -> SkippedFiles:
        """The files passed over, as listed (the first :data:`SKIPPED_LISTED`) and counted."""
        listed = [(x["path"], x["reason"]) for x in self.skipped]
        return SkippedFiles(listed, self.skipped_count, dict(self.skipped_reasons))

    # -------------------------------------------------------------- freshness
    def stale_reason(
        self,
        source: Mapping[str, Any],
        fingerprint: Mapping[str, Any] | None,
        mode: str,
        transform: str | None = None,
        decoder: str | None = None,
    ) -> str | None:
        """Why these stats do not describe ``source`` as it is now (in ``mode``, after the
        transform described by ``transform``, decoded by ``decoder``), or None when they do."""
        for key in ("kind", "split", "shard", "sample"):
            if self.source.get(key) != source.get(key):
                return f"source {key} changed ({self.source.get(key)} -> {source.get(key)})"
        if self.mode != mode:
            return f"mode changed ({self.mode} -> {mode})"
        if self.transform != transform:
            return f"transform changed ({self.transform} -> {transform})"
        if not same_pixels(self.decoder, decoder):
            return f"decoder changed ({self.decoder} -> {decoder})"
        if fingerprint is None or self.fingerprint is None:
            return "the source has no fingerprint"
        old, new = dict(self.fingerprint), dict(fingerprint)
        if "checksum" in old and "checksum" not in new:
            old.pop("checksum")  # the file was checked more strictly than this run asks
        if "checksum" in new and "checksum" not in old:
            new.pop("checksum")
            if old == new:
                return "written without --checksum (file contents never hashed)"
        if old != new:
            if old.get("files") != new.get("files"):
                return f"data changed ({old.get('files')} -> {new.get('files')} files)"
            return "data changed (contents, sizes or modification times differ)"
        return None


def _fmt(values: Sequence[float]) -> str:
    inner = ", ".join(f"{v:.4f}" for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"


def _tally_skipped(skipped: Any, count: int | None, reasons: Mapping[str, int] | None) -> SkippedFiles:
    """What :class:`Stats` keeps of ``skipped``: a :class:`SkippedFiles` as it is; ``{path, reason}``
    entries counted one by one, or, with ``count`` and ``reasons`` given, the first listed only."""
    if (count is None) != (reasons is None):
        raise ValueError("give skipped_count and skipped_reasons together, or neither")
    if isinstance(skipped, SkippedFiles):
        if count is not None:
            raise ValueError("a SkippedFiles carries its own count and reasons")
        return SkippedFiles(list(skipped.listed), skipped.count, dict(skipped.reasons))
    pairs = ((entry["path"], entry["reason"]) for entry in skipped)
    if count is None:
        tally = SkippedFiles()
        tally.extend(pairs)
        return tally
    return SkippedFiles(list(itertools.islice(pairs, SKIPPED_LISTED)), count, dict(reasons))


def load_stats(
    path: str | os.PathLike,
    verify_against: Any = None,
    *,
    root: str | os.PathLike = "data",
    split: str | None = None,
    **source_options: Any,
) -> Stats:
    """Load and validate a stats file.

    With ``verify_against`` (a path, dataset name, Source or Dataset, resolved as in
    :func:`prep.compute_stats`, with ``source_options`` such as ``key``, ``layout`` or
    ``archives``), raise :class:`~prep.errors.StaleStatsError` when the data's fingerprint or
    the source no longer match the file.
    """
    path = os.fspath(path)
    try:
        text = read_bytes_bounded(path, "stats file").decode("utf-8")
    except UnicodeDecodeError:
        raise StatsFileError(f"{path}: not a stats file (not UTF-8 text)") from None
    try:
        data = parse_json(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and nesting deeper than Python recurses
        raise StatsFileError(f"{path}: not valid JSON ({exc})") from None
    try:
        stats = _parse(data)
    except StatsFileError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    if verify_against is not None:
        from prep.sources.resolve import resolve_source

        source = resolve_source(
            verify_against,
            **{
                "root": root,
                "split": split or stats.source.get("split"),
                "checksum": "checksum" in (stats.fingerprint or {}),  # the identity the file was written with
                **source_options,
            },
        )
        reason = stats.stale_reason(source.describe(), source.fingerprint(), stats.mode, stats.transform, stats.decoder)
        if reason:
            raise StaleStatsError(f"{path}: stale: {reason}")
    return stats


# ------------------------------------------------------------------ validation
def _vector(data: Mapping[str, Any], name: str, channels: int) -> list[float]:
    values = read_field(data, name, list)
    if len(values) != channels:
        raise StatsFileError(f"field '{name}': expected {channels} values (one per channel); got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise StatsFileError(f"field '{name}': expected finite numbers; got {short_repr(v)}")
    return values


def _int_vector(data: Mapping[str, Any], name: str, channels: int) -> list[int]:
    values = read_field(data, name, list)
    if len(values) != channels:
        raise StatsFileError(f"field '{name}': expected {channels} values (one per channel); got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= INT64_MAX:
            raise StatsFileError(f"field '{name}': expected integers from 0 to 2**63-1; got {short_repr(v)}")
    return values


def _source(data: Mapping[str, Any]) -> dict[str, Any]:
    """``source``: ``kind`` and ``mode`` strings, ``path`` and ``split`` strings or null, the
    ``images`` count; any other key a source describes itself with must hold a plain value."""
    source = read_field(data, "source", dict)
    for key in ("kind", "mode"):
        if not isinstance(source.get(key), str) or not source[key]:
            raise StatsFileError(f"field 'source.{key}': expected a non-empty string")
    if source["mode"] not in MODES:
        raise StatsFileError(
            f"field 'source.mode': expected one of {', '.join(MODES)}; got {short_repr(source['mode'])}"
        )
    for key in ("path", "split"):
        read_field(source, key, (str, type(None)), "source")
        if not isinstance(source.get(key), str | None):
            raise StatsFileError(f"field 'source.{key}': expected a string or null; got {short_repr(source[key])}")
    read_count(source, "images", "source")
    for key, value in source.items():
        plain = isinstance(value, str | bool | type(None)) or (
            isinstance(value, int | float) and math.isfinite(value) and abs(value) <= INT64_MAX
        )
        if not plain:
            raise StatsFileError(f"field '{field_name('source', key)}': expected a string, number or null")
    return source


def _fingerprint(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """``fingerprint``: null, or an object of one of the shapes prep writes (:data:`FINGERPRINT_SHAPES`)."""
    fingerprint = read_field(data, "fingerprint", (dict, type(None)))
    if fingerprint is None:
        return None
    refuse_unknown_keys(fingerprint, FINGERPRINT_FIELDS, "fingerprint")
    shape = next((req for req, opt in FINGERPRINT_SHAPES if set(fingerprint) <= {*req, *opt}), None)
    if shape is None:
        raise StatsFileError(
            f"field 'fingerprint': mixes the keys of different fingerprints ({', '.join(fingerprint)})"
        )
    for key in shape:
        if key not in fingerprint:
            raise StatsFileError(f"missing field 'fingerprint.{key}'")
    for key, value in fingerprint.items():
        kind = FINGERPRINT_FIELDS[key]
        if kind == "count" or (kind == "count or null" and value is not None):
            read_count(fingerprint, key, "fingerprint")
        elif kind == "sha256" and not (isinstance(value, str) and _SHA256.fullmatch(value)):
            raise StatsFileError(
                f"field 'fingerprint.{key}': expected a SHA-256 (64 lowercase hex digits); got {short_repr(value)}"
            )
        elif kind == "text" and not (isinstance(value, str) and value):
            raise StatsFileError(f"field 'fingerprint.{key}': expected a non-empty string; got {short_repr(value)}")
    return fingerprint


def _options(data: Mapping[str, Any], mode: str) -> tuple[str | None, str | None]:
    """``options``: ``mode`` (as ``source.mode``), ``transform`` (a description, or null) and
    ``decoder`` (one of :data:`DECODERS_RECORDED`, or null); returns the transform and the
    decoder. ``mode`` and ``transform`` are required: a file without its transform could be
    reused for data measured without one. ``decoder`` is absent from files of prep 0.2.0 and
    earlier, when PIL decoded every image file: read as ``pil`` for sources of image files."""
    options = read_field(data, "options", dict)
    read_field(options, "transform", (str, type(None)), "options")
    refuse_unknown_keys(options, ("mode", "transform", "decoder"), "options")
    decoder = options.get("decoder")
    if "decoder" not in options and data["source"].get("kind") in FILE_SOURCE_KINDS:
        decoder = "pil"
    if decoder is not None and decoder not in DECODERS_RECORDED:
        raise StatsFileError(
            f"field 'options.decoder': expected one of {', '.join(DECODERS_RECORDED)} or null; "
            f"got {short_repr(decoder)}"
        )
    if options.get("mode") != mode:
        raise StatsFileError(
            f"field 'options.mode': expected {mode!r} (as source.mode); got {short_repr(options.get('mode'))}"
        )
    transform = options.get("transform")
    if not isinstance(transform, str | None):
        raise StatsFileError(f"field 'options.transform': expected a string or null; got {short_repr(transform)}")
    return transform, decoder


def _created(data: Mapping[str, Any]) -> str:
    created = read_field(data, "created", str)
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise StatsFileError(f"field 'created': expected an ISO 8601 time; got {short_repr(created)}") from None
    return created


def _state(data: Mapping[str, Any], channels: int) -> ChannelMoments:
    """``state``: the accumulator, checked by :meth:`ChannelMoments.from_state_dict` and
    :func:`check_state`, with a pixel in every channel and the file's channel count."""
    try:
        state = ChannelMoments.from_state_dict(read_field(data, "state", dict))
    except ValueError as exc:  # its messages repr values: an int of over 4300 digits (check_shape refuses those)
        raise StatsFileError(f"field 'state': cannot be read ({type(exc).__name__})") from None
    if state.channels != channels:
        raise StatsFileError(f"field 'state.channels': expected {channels}; got {state.channels}")
    check_state(state)
    if min(state.count) == 0:
        raise StatsFileError("field 'state.count': every channel needs at least one pixel")
    if state.pixel_max <= 0:
        raise StatsFileError(f"field 'state.pixel_max': must be positive; got {state.pixel_max}")
    return state


def check_state(state: ChannelMoments) -> None:
    """What :meth:`ChannelMoments.from_state_dict` cannot check alone (stats files and checkpoints):
    no more per-image stds than images, and with exact 8-bit sums kept, ``pixel_max`` 255 and
    float64 ``mean``/``m2`` that agree with the sums (Chan's float64 merges drift from them by
    about 1e-12 relative after millions of merges; :data:`REL_TOL` allows 1e-9)."""
    if max(state.image_std_count) > state.images:
        raise StatsFileError(f"field 'state.images': {state.images} is fewer than state.image_std_count")
    present = state.count > 0
    slack = 1e-12 * np.maximum(1.0, np.abs(state.mean))
    if np.any(present & ((state.mean < state.min - slack) | (state.mean > state.max + slack))):
        raise StatsFileError("field 'state.mean': outside state.min..state.max")
    if state.exact_sum is not None and np.any(present & ((state.min < 0) | (state.max > 1))):
        raise StatsFileError("field 'state.min': 8-bit data lies in 0..1 in unit scale")
    if state.exact_sum is None:
        return
    if max(state.count) > 0 and state.pixel_max != EIGHT_BIT_MAX:
        raise StatsFileError(
            f"field 'state.pixel_max': exact 8-bit sums are kept, so it must be {EIGHT_BIT_MAX}; got {state.pixel_max}"
        )
    _, means, m2s = exact_moments(state.count.tolist(), state.exact_sum, state.exact_sumsq, EIGHT_BIT_MAX)
    for name, stored, exact in (("mean", state.mean, means), ("m2", state.m2, m2s)):
        if not all(math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0) for a, b in zip(stored, exact)):
            raise StatsFileError(
                f"field 'state.{name}': {stored.tolist()} does not match state.exact_sum and state.exact_sumsq "
                f"({exact.tolist()}); was the file edited?"
            )


def _matches(name: str, value: Any, want: Any, exact: bool = False) -> None:
    """The top-level field ``name`` (a number, or one per channel) is what the stored state gives."""
    pairs = zip(value, want) if isinstance(value, list) else [(value, want)]
    same = all(
        got == expected if exact else math.isclose(got, expected, rel_tol=REL_TOL, abs_tol=1e-15)
        for got, expected in pairs
    )
    if not same:
        expected = list(want) if isinstance(value, list) else want
        raise StatsFileError(
            f"field '{name}': {value} does not match the stored state ({expected}); was the file edited?"
        )


def _sample(data: Mapping[str, Any], state: ChannelMoments) -> dict[str, Any] | None:
    """``sample``: null, or ``{"images", "of", "seed", "ci95"}`` whose intervals are those the
    state's ``image_moments`` give (recomputed, so an edit is refused)."""
    from prep.stats.intervals import sample_intervals

    sample = read_field(data, "sample", (dict, type(None))) if "sample" in data else None
    if sample is None:
        return None
    refuse_unknown_keys(sample, ("images", "of", "seed", "ci95"), "sample")
    images, total, seed = (read_count(sample, key, "sample") for key in ("images", "of", "seed"))
    if images != state.images or images > total:
        raise StatsFileError(f"field 'sample.images': {images} is not state.images ({state.images}) or exceeds 'of'")
    ci95 = sample.get("ci95")
    expected = None
    if state.image_moments is not None:
        expected = sample_intervals(state.image_moments, images, total, state.pixel_max)
        expected = {k: [v if v == v else None for v in values] for k, values in expected.items()}
    if ci95 != expected:
        raise StatsFileError("field 'sample.ci95': does not match state.image_moments; was the file edited?")
    return {"images": images, "of": total, "seed": seed, "ci95": ci95}


OUTLIER_KINDS = ("constant", "near_black", "near_white", "brightness", "duplicates")


def _outliers(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """``outliers``: null, or per kind ``{"count", "images"}`` (``brightness`` also ``k``;
    ``duplicates`` names pairs), with at most 10 images named and no more named than counted."""
    outliers = read_field(data, "outliers", (dict, type(None))) if "outliers" in data else None
    if outliers is None:
        return None
    refuse_unknown_keys(outliers, OUTLIER_KINDS, "outliers")
    for kind in OUTLIER_KINDS:
        entry = read_field(outliers, kind, dict, "outliers")
        where = f"outliers.{kind}"
        refuse_unknown_keys(entry, ("count", "images", "k"), where)
        count = read_count(entry, "count", where)
        images = read_field(entry, "images", list, where)
        pair = kind == "duplicates"
        if len(images) > min(count, 10) or not all(
            (isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x)) if pair else isinstance(x, str)
            for x in images
        ):
            raise StatsFileError(
                f"field '{where}.images': expected at most min(count, 10) "
                + ("[name, first] pairs" if pair else "names")
            )
        if kind == "brightness":
            k = read_field(entry, "k", (int, float), where)
            if not (math.isfinite(k) and k > 0):
                raise StatsFileError(f"field '{where}.k': expected a positive number; got {short_repr(k)}")
    return dict(outliers)


def _check_pca(data: Mapping[str, Any], stats: Stats) -> None:
    """``covariance`` (exact from ``state.cross``) and ``pca`` (an eigen decomposition, equal to
    1e-9: LAPACK builds differ in the last bits) must be what the state gives; null without it."""
    if data.get("covariance") != stats.covariance:
        raise StatsFileError("field 'covariance': does not match state.cross; was the file edited?")
    pca, want = data.get("pca"), stats.pca
    if (pca is None) != (want is None):
        raise StatsFileError("field 'pca': must be null exactly when covariance is")
    if pca is None:
        return
    if not isinstance(pca, dict) or set(pca) != {"eigval", "eigvec"}:
        raise StatsFileError("field 'pca': expected an object with eigval and eigvec")
    try:
        same = all(np.allclose(np.array(pca[k], np.float64), np.array(want[k]), rtol=1e-9, atol=1e-12) for k in want)
    except (TypeError, ValueError):
        same = False
    if not same:
        raise StatsFileError("field 'pca': not the eigen decomposition of the covariance; was the file edited?")


def _percentiles_q(data: Mapping[str, Any], state: ChannelMoments) -> tuple[float, ...]:
    """``percentiles``: null exactly when the state has no histogram, else ``{"q": [...], "values":
    [...]}`` with up to :data:`MAX_PERCENTILES` values of q in [0, 100]; returns q (the values are
    checked against the histogram by the caller)."""
    percentiles = read_field(data, "percentiles", (dict, type(None)))
    if (percentiles is None) != (state.histogram is None):
        raise StatsFileError(
            "field 'percentiles': must be "
            + ("null without state.histogram" if state.histogram is None else "an object when state.histogram is set")
        )
    if percentiles is None:
        return DEFAULT_PERCENTILES
    refuse_unknown_keys(percentiles, ("q", "values"), "percentiles")
    q = read_field(percentiles, "q", list, "percentiles")
    read_field(percentiles, "values", list, "percentiles")
    if len(q) > MAX_PERCENTILES:
        raise StatsFileError(f"field 'percentiles.q': at most {MAX_PERCENTILES} values; got {len(q)}")
    try:
        return check_percentiles(q)
    except ValueError as exc:
        raise StatsFileError(f"field 'percentiles.q': {exc}") from None


def _parse(data: Any) -> Stats:
    if not isinstance(data, dict):
        raise StatsFileError("expected a JSON object at the top level")
    check_shape(data)
    version = read_field(data, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise StatsFileError(
            f"field 'schema_version': unknown schema version {short_repr(version)} "
            f"(this prep {__version__} reads version {SCHEMA_VERSION})"
        )
    refuse_unknown_keys(data, TOP_LEVEL_FIELDS)
    prep_version = read_field(data, "prep_version", str)
    created = _created(data)
    source = _source(data)
    mode = source["mode"]
    fingerprint = _fingerprint(data)
    transform, decoder = _options(data, mode)
    channels = read_field(data, "channels", int)
    if channels != CHANNELS[mode]:
        raise StatsFileError(f"field 'channels': mode {mode} has {CHANNELS[mode]} channels; got {short_repr(channels)}")
    names = ("mean", "std", "min", "max", "per_image_std_mean")
    vectors = {name: _vector(data, name, channels) for name in names}
    if any(v < 0 for v in vectors["std"]):
        raise StatsFileError(f"field 'std': must be non-negative; got {vectors['std']}")
    if any(lo > hi for lo, hi in zip(vectors["min"], vectors["max"])):
        raise StatsFileError("field 'min': exceeds 'max'")
    integers = {name: _int_vector(data, name, channels) for name in ("count", "nonfinite")}
    pixel_max = read_field(data, "pixel_max", (int, float))
    skipped = SkippedFiles.from_json(read_field(data, "skipped", dict))
    state = _state(data, channels)
    percentiles_q = _percentiles_q(data, state)
    stats = Stats(
        source={k: v for k, v in source.items() if k not in ("mode", "images")},
        fingerprint=fingerprint,
        mode=mode,
        state=state,
        skipped=skipped,
        created=created,
        prep_version=prep_version,
        transform=transform,
        decoder=decoder,
        percentiles_q=percentiles_q,
        sample=_sample(data, state),
        outliers=_outliers(data),
    )
    if data["percentiles"] != stats.percentiles:
        raise StatsFileError("field 'percentiles': does not match state.histogram; was the file edited?")
    _check_pca(data, stats)
    measured = stats.summary
    for name, values in vectors.items():
        _matches(name, values, getattr(measured, name))
    for name, values in integers.items():
        _matches(name, values, getattr(measured, name), exact=True)
    _matches("pixel_max", pixel_max, measured.pixel_max, exact=True)
    _matches("source.images", source["images"], measured.images, exact=True)
    return stats
