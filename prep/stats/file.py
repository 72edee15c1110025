"""The stats file: the contract between the statistics pass and training/test code.

:class:`Stats` holds what was measured, on what, and how; every number it gives is derived from
its state (a :class:`~prep.stats.moments.ChannelMoments`). ``save`` writes it atomically as
JSON (schema documented in the README) and :func:`load_stats` reads it back, validated by
:mod:`prep.stats.validate` (a :class:`~prep.errors.StatsFileError` naming the field at fault in
one line), and says when it is stale (:meth:`Stats.stale_reason`). Files passed over are kept
bounded (:mod:`prep.stats.skipped`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from functools import cached_property
from typing import Any

import numpy as np

from prep._version import __version__
from prep.errors import OptionError, OutputError, StaleStatsError, StatsFileError, os_reason
from prep.fields import INT64_MAX, check_shape, parse_json, short_repr
from prep.files import read_bytes_bounded, write_json_atomic
from prep.pixels import EIGHT_BIT_MAX, channel_names, units_of
from prep.stats.histogram import DEFAULT_PERCENTILES, check_percentiles, float_percentile
from prep.stats.histogram import percentiles as histogram_percentiles
from prep.stats.moments import ChannelMoments, ChannelSummary
from prep.stats.reductions import WIDE_OFFSETS, float_key_bounds
from prep.stats.skipped import SkippedFiles, tally_skipped
from prep.stats.validate import SCHEMA_VERSION, check_derived, check_state, stats_fields

# INT64_MAX, SkippedFiles, check_shape, check_state, parse_json and short_repr: imported from here
# by prep.engine.checkpoint, which validates checkpoints as it validates stats files
__all__ = [
    "INT64_MAX",
    "SCHEMA_VERSION",
    "SkippedFiles",
    "Stats",
    "check_shape",
    "check_state",
    "format_values",
    "load_stats",
    "parse_json",
    "pixels_of",
    "same_pixels",
    "short_repr",
]

CLASSES_NAMED = 5  # classes an error about an unknown class names
_PIXELS_OF = {"auto": "pil"}  # decoders whose pixels are another's by construction (prep.decode.decoders)


def pixels_of(decoder: str | None) -> str | None:
    """Whose pixels ``decoder`` gives: ``auto`` gives PIL's; every other decoder its own."""
    return decoder if decoder is None else _PIXELS_OF.get(decoder, decoder)


def same_pixels(a: str | None, b: str | None) -> bool:
    """True when files decoded by ``a`` and by ``b`` have the same pixels (``auto`` is ``pil``)."""
    return pixels_of(a) == pixels_of(b)


@dataclass(frozen=True)
class Stats:
    """Per-channel statistics of a dataset in unit scale, and where they came from.

    ``mean``/``std``/``min``/``max`` are what ``ToDtype(torch.float32, scale=True)`` (or
    ``ToTensor``) values have; multiply by ``pixel_max`` (255 or 65535) for raw units.
    ``std`` is the population std over all pixels pooled (ddof=0), which is what
    ``transforms.Normalize`` assumes; ``per_image_std_mean`` is the mean over images of each
    image's own std, shown for comparison only.

    ``skipped`` is given as every ``{path, reason}`` passed over (a :class:`SkippedFiles` gives
    these three fields: ``Stats(..., **files.stats_fields())``); only the first
    :data:`~prep.stats.skipped.SKIPPED_LISTED` are kept, as a tuple, and ``skipped_count`` and
    ``skipped_reasons`` (per :func:`~prep.stats.skipped.reason_category`) count them all. A stats
    file gives ``skipped_count`` and ``skipped_reasons`` with the files it lists.
    """

    source: Mapping[str, Any]
    fingerprint: Mapping[str, Any] | None
    mode: str
    state: ChannelMoments
    skipped: Sequence[Mapping[str, str]] = ()
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    prep_version: str = __version__
    skipped_count: int | None = None
    skipped_reasons: Mapping[str, int] | None = None
    transform: str | None = None  # the repr of the transform applied before measuring (prep.transforms.measurement)
    decoder: str | None = None  # what decoded image files (DECODERS_RECORDED); None: no files decoded
    percentiles_q: tuple[float, ...] = DEFAULT_PERCENTILES  # the percentiles the file lists
    sample: Mapping[str, Any] | None = None  # a sampled pass: its size, seed and 95% intervals
    outliers: Mapping[str, Any] | None = None  # suspicious images, from a per-image report
    band_names: tuple[str, ...] | None = None  # the bands' names (a GeoTIFF's descriptions, or --band-names)
    bands: tuple[int, ...] | None = None  # the bands measured, 0-based (None: every band)
    nodata: tuple[float, ...] | None = None  # per band, the value left out (None: none)
    # float data measured with exact_percentiles: per channel, the exact values of percentiles_q
    exact_percentiles: tuple[tuple[float, ...], ...] | None = None
    # per_class: ImageFolder's classes in its order (find_classes), and the state of each class
    # that has measured images; None without per_class
    classes: Sequence[str] | None = None
    class_states: Mapping[str, ChannelMoments] | None = None
    # volumes (prep.engine.volumes): the voxels measured (every voxel, or a label map's foreground:
    # its rule and options) and the header scalings met; None for other sources. With per_label,
    # the classes are the label values measured
    volume: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.nodata is None and self.state.nodata is not None:
            object.__setattr__(self, "nodata", self.state.nodata)
        tally = tally_skipped(self.skipped, self.skipped_count, self.skipped_reasons)
        object.__setattr__(self, "skipped", tuple({"path": p, "reason": r} for p, r in tally.listed))
        object.__setattr__(self, "skipped_count", tally.count)
        object.__setattr__(self, "skipped_reasons", dict(sorted(tally.reasons.items())))
        if self.classes is not None:
            names = tuple(self.classes)
            states = dict(self.class_states or {})
            unknown = sorted(set(states) - set(names))
            if unknown:
                raise StatsFileError(f"class state(s) of {', '.join(map(repr, unknown[:3]))}, not among the classes")
            object.__setattr__(self, "classes", names)
            object.__setattr__(self, "class_states", {name: states[name] for name in names if name in states})
        elif self.class_states:
            raise StatsFileError("class states without their classes")

    def __repr__(self) -> str:
        where = self.source.get("path") or self.source.get("kind")
        split = f", split={self.source['split']!r}" if self.source.get("split") else ""
        return (
            f"Stats(source={where!r}{split}, mode={self.mode!r}, images={self.images}, "
            f"mean={format_values(self.mean)}, std={format_values(self.std)})"
        )

    # -------------------------------------------------------------- the files that were measured
    def is_valid_file(self, path: str | os.PathLike) -> bool:
        """``ImageFolder(root, is_valid_file=stats.is_valid_file)``: True for an image file
        (torchvision's own extension rule) that this pass did not skip, so training never loads
        the files prep could not decode.

        For stats files of folders (``source.kind`` ``folder``); a path is matched to the skipped
        list by its real path under ``source.path`` (and its split subfolder). A file lists at
        most :data:`~prep.stats.skipped.SKIPPED_LISTED` skipped files: with more, a
        :class:`~prep.errors.PrepWarning` says that the rest cannot be recognised.
        """
        from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

        if not has_file_allowed_extension(os.fspath(path), IMG_EXTENSIONS):
            return False
        return os.path.realpath(path) not in self._skipped_paths

    @cached_property
    def _skipped_paths(self) -> frozenset[str]:
        """The real paths of the skipped files the stats file names."""
        import warnings

        from prep.errors import PrepWarning

        if self.source.get("kind") != "folder" or not self.source.get("path"):
            raise OptionError(
                f"is_valid_file is for image folders; this stats file measured a {self.source.get('kind')} source"
            )
        root = self.source["path"]
        split = self.source.get("split")
        if split:
            from prep.sources.folder import split_folder

            root = str(split_folder(root, split))
        if (self.skipped_count or 0) > len(self.skipped):
            warnings.warn(
                f"the stats file names {len(self.skipped)} of the {self.skipped_count} files it skipped; "
                "the others pass is_valid_file",
                PrepWarning,
                stacklevel=3,
            )
        return frozenset(os.path.realpath(os.path.join(root, entry["path"])) for entry in self.skipped)

    # -------------------------------------------------------------- classes (per_class)
    @cached_property
    def per_class(self) -> dict[str, Stats] | None:
        """Each class with measured images (``ImageFolder``'s order) -> its statistics
        (:meth:`class_stats`); None when the pass ran without ``per_class``."""
        if self.class_states is None:
            return None
        return {name: self.class_stats(name) for name in self.class_states}

    def class_stats(self, name: str) -> Stats:
        """The statistics of the class ``name`` alone, as a :class:`Stats` (``mean``, ``std``,
        ``count``, ``images``, ``histogram``, ``normalize()``... and :func:`prep.compare_stats`),
        its ``source`` naming the class under ``class``. An unknown class, or one without a
        measured image, is an :class:`~prep.errors.OptionError` naming a few known ones."""
        if self.classes is None or self.class_states is None:
            where = self.source.get("path") or self.source.get("kind")
            raise OptionError(f"{where}: no per-class statistics (measured without --per-class)")
        state = self.class_states.get(name)
        if state is None:
            shown = ", ".join(self.classes[:CLASSES_NAMED])
            more = f", ... ({len(self.classes)} in all)" if len(self.classes) > CLASSES_NAMED else ""
            if name in self.classes:
                raise OptionError(f"class {name!r} has no measured image (every file skipped, or none)")
            raise OptionError(f"no class {name!r}; the classes are {shown}{more}")
        return Stats(
            source={**self.source, "class": name},
            fingerprint=self.fingerprint,
            mode=self.mode,
            state=state,
            created=self.created,
            prep_version=self.prep_version,
            transform=self.transform,
            decoder=self.decoder,
            percentiles_q=self.percentiles_q,
            band_names=self.band_names,
            bands=self.bands,
        )

    @property
    def per_label(self) -> bool:
        """True when the classes are the label values of volumes (``--per-label``)."""
        return bool(self.volume and self.volume.get("per_label"))

    # -------------------------------------------------------------- derived numbers
    @property
    def channels(self) -> int:
        return self.state.channels

    @property
    def channel_names(self) -> list[str]:
        """What tables call the channels: the band names, else R, G, B / L, else B1, B2, ..."""
        return channel_names(self.channels, self.mode, self.band_names)

    @property
    def units(self) -> str:
        """``"raw"``: the numbers are in the data's own values (``--mode bands``); ``"unit"``:
        divided by :attr:`pixel_max`, as ``ToDtype(torch.float32, scale=True)`` gives them."""
        return units_of(self.mode)

    @property
    def nodata_count(self) -> tuple[int, ...]:
        """Per channel, the pixels left out as nodata."""
        return tuple(int(v) for v in self.state.nodata_count)

    @property
    def valid_fraction(self) -> tuple[float, ...]:
        """Per channel, the fraction of all pixels that were measured (not nodata, NaN or inf)."""
        s = self.summary
        totals = [n + bad + gone for n, bad, gone in zip(s.count, s.nonfinite, self.nodata_count)]
        return tuple(n / total if total else 0.0 for n, total in zip(s.count, totals))

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
        through the decoder: ``torchvision-cuda`` is nvjpeg's rounding); the bands and nodata
        values only where set."""
        out: dict[str, Any] = {"mode": self.mode, "transform": self.transform, "decoder": self.decoder}
        if self.bands is not None:
            out["bands"] = [b + 1 for b in self.bands]  # as --bands takes them: from 1
        if self.nodata is not None:
            out["nodata"] = [v if math.isfinite(v) else None for v in self.nodata]
        return out

    # -------------------------------------------------------------- transforms
    def normalize(self, eps: float | None = None, clip_percentiles: tuple[float, float] | None = None):
        """``Compose``: pixel conversion, float32 (unit scale, or the data's own values for
        ``--mode bands``), ``Normalize(mean, std)``.

        ``clip_percentiles=(lo, hi)`` (e.g. ``(2, 98)``, or CT's ``(0.5, 99.5)``) first clamps each
        channel to its ``lo``-th and ``hi``-th percentiles, then standardizes with the mean and
        std *of the clamped data* (from the histogram: exact for 8- and 16-bit data, from the bins'
        midpoints for float data), so the output has mean 0 and std 1 over the measured pixels.

        For volumes (``volume`` set: NIfTI sources) it is a
        :class:`~prep.transforms.volume.NormalizeVolume` of channel-first ``(C, X, Y, Z)`` tensors
        in the data's own values; nnU-Net's CT scheme is :meth:`ct_normalize`.
        """
        from prep.transforms.normalize import normalize_pipeline

        if clip_percentiles is None:
            if self.volume is not None:
                return self._volume_transform(self.mean, self.std, None, eps)
            return normalize_pipeline(self.mean, self.std, self.mode, eps=eps, units=self.units)
        q_low, q_high = check_percentiles(clip_percentiles)
        if not q_low < q_high:
            raise OptionError(f"clip_percentiles must be (low, high) with low < high; got {clip_percentiles}")
        low, high = self.percentile(q_low), self.percentile(q_high)
        mean, std = clipped_moments(self.state, low, high)
        if self.volume is not None:
            return self._volume_transform(mean, std, (low, high), eps)
        return normalize_pipeline(mean, std, self.mode, eps=eps, units=self.units, clip=(low, high))

    def ct_normalize(self):
        """nnU-Net's ``CTNormalization`` of volumes ``(C, X, Y, Z)``: clamp each channel to its 0.5th
        and 99.5th percentiles, then ``(x - mean) / max(std, 1e-8)`` with the mean and std of the
        *unclipped* measured voxels (nnU-Net's fingerprint: the foreground's), in float32, step for
        step as nnU-Net computes it. :meth:`normalize` ``(clip_percentiles=(0.5, 99.5))`` instead
        standardizes with the clamped voxels' mean and std (output mean 0, std 1)."""
        from prep.transforms.volume import NNUNET_STD_FLOOR

        low, high = self.percentile(0.5), self.percentile(99.5)
        return self._volume_transform(self.mean, self.std, (low, high), NNUNET_STD_FLOOR)

    def _volume_transform(self, mean, std, clip, eps):
        """A :class:`~prep.transforms.volume.NormalizeVolume` of channel-first volumes, raw units."""
        from prep.transforms.volume import NormalizeVolume

        scale = self.pixel_max if self.units == "unit" else 1.0
        rescale = [float(v) * scale for v in mean], [float(v) * scale for v in std]
        bounds = None if clip is None else ([v * scale for v in clip[0]], [v * scale for v in clip[1]])
        return NormalizeVolume(*rescale, clip=bounds, eps=eps)

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

    def binned_histogram(self, buckets: int = 256) -> tuple[np.ndarray, np.ndarray] | None:
        """Per channel, counts in ``buckets`` equal buckets over min..max and their edges (in the
        file's units), ``((C, buckets), (C, buckets + 1))``; the 8-bit histogram as it is (a bucket
        per level). From the wide histogram of 16-bit data every value falls in one bucket, so
        the counts are exact; float data is bucketed by its bins' midpoints. None without a
        histogram."""
        state = self.state
        if state.histogram is not None:
            levels = state.histogram.shape[1]
            edges = (np.arange(levels + 1) - 0.5) / (levels - 1)
            return state.histogram.copy(), np.tile(edges, (self.channels, 1))
        if state.wide is None or state.pixel_max <= 0:
            return None
        if state.wide_kind in WIDE_OFFSETS:
            values = (np.arange(state.wide.shape[1]) + WIDE_OFFSETS[state.wide_kind]) / state.pixel_max
        else:
            low, high = float_key_bounds(np.arange(state.wide.shape[1]))
            values = (low + high) / 2 / state.pixel_max
        counts, edges = [], []
        for c, row in enumerate(state.wide):
            used = row > 0
            lo, hi = float(self.min[c]), float(self.max[c])
            if not hi > lo:
                hi = lo + 1.0  # one value: a bucket around it
            row_counts, row_edges = np.histogram(
                np.clip(values[used], lo, hi), bins=buckets, range=(lo, hi), weights=row[used]
            )
            counts.append(np.rint(row_counts).astype(np.int64))
            edges.append(row_edges)
        return np.array(counts), np.array(edges)

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
        """Each channel's ``q``-th percentile (in the file's units), ``numpy.percentile(pixels /
        pixel_max, q)`` (linear method) of the measured pixels: exact for 8- and 16-bit data (from
        their histograms), the midpoint of :meth:`percentile_bounds` for float data."""
        (q,) = check_percentiles([q])
        if self.exact_percentiles is not None and q in self.percentiles_q:
            i = self.percentiles_q.index(q)
            return tuple(row[i] for row in self.exact_percentiles)
        found = state_percentiles(self.state, [q])
        if found is None:
            raise StatsFileError(
                "percentiles need a histogram; these statistics mix data of several kinds or units, or have "
                "too many bands"
            )
        return tuple(row[0] for row in found[0])

    def percentile_bounds(self, q: float) -> tuple[tuple[float, float], ...]:
        """Per channel, the interval that holds the exact ``q``-th percentile: a point for 8- and
        16-bit data, about 2**-7 relative wide for float data (its histogram's bins)."""
        (q,) = check_percentiles([q])
        found = state_percentiles(self.state, [q])
        if found is None:
            raise StatsFileError("percentiles need a histogram; these statistics have none")
        values, bounds = found
        if bounds is None:
            return tuple((row[0], row[0]) for row in values)
        return tuple((row[0][0], row[0][1]) for row in bounds)

    @cached_property
    def percentiles(self) -> dict[str, Any] | None:
        """``{"q": [...], "values": [[...] per channel]}`` for :attr:`percentiles_q` (float data
        adds ``"bounds"``: ``[[low, high] per q] per channel``); None without a histogram."""
        q = list(self.percentiles_q)
        found = state_percentiles(self.state, q)
        if found is None:
            return None
        values, bounds = found
        if bounds is None:
            return {"q": q, "values": values}
        if self.exact_percentiles is not None:  # a second pass resolved them: exact within the bounds
            return {"q": q, "values": [list(row) for row in self.exact_percentiles], "bounds": bounds, "exact": True}
        return {"q": q, "values": values, "bounds": bounds}

    def denormalize(self, eps: float | None = None):
        """The inverse of :meth:`normalize` on float tensors: ``x * std + mean``, unit scale."""
        from prep.transforms.normalize import denormalize_pipeline

        return denormalize_pipeline(self.mean, self.std, eps=eps)

    def normalize_line(self) -> str:
        """The ``transforms.Normalize(...)`` line to paste into training code."""
        return f"transforms.Normalize(mean={format_values(self.mean)}, std={format_values(self.std)})"

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
            "units": self.units,
            "band_names": None if self.band_names is None else list(self.band_names),
            "nodata_count": list(self.nodata_count),
            "valid_fraction": list(self.valid_fraction),
            "percentiles": self.percentiles,
            "covariance": self.covariance,
            "pca": self.pca,
            "sample": None if self.sample is None else dict(self.sample),
            "outliers": None if self.outliers is None else dict(self.outliers),
            **self._class_fields(),
            **({} if self.volume is None else {"volume": dict(self.volume)}),
            "skipped": self.skipped_files().to_json(),
            "state": self.state.state_dict(),
        }

    def _class_fields(self) -> dict[str, Any]:
        """``classes`` (``ImageFolder``'s order) and ``per_class`` (each measured class's images,
        pixels per channel, mean, std, min, max and its state), only for a pass with ``per_class``."""
        if self.classes is None or self.class_states is None:
            return {}
        per_class = {}
        for name, state in self.class_states.items():
            s = state.compute()
            per_class[name] = {
                "images": s.images,
                "count": list(s.count),
                "mean": list(s.mean),
                "std": list(s.std),
                "min": list(s.min),
                "max": list(s.max),
                "state": state.state_dict(),
            }
        return {"classes": list(self.classes), "per_class": per_class}

    def save(self, path: str | os.PathLike) -> None:
        """Write the stats file atomically (temp file, fsync, rename)."""
        try:
            write_json_atomic(path, self.to_dict())
        except OSError as exc:
            raise OutputError(f"{os.fspath(path)}: cannot write stats file ({os_reason(exc)})") from None

    @classmethod
    def from_dict(cls, data: Any) -> Stats:
        """The statistics a stats file's JSON ``data`` holds, every field validated
        (:mod:`prep.stats.validate`)."""
        stats = cls(**stats_fields(data))
        check_derived(data, stats)
        return stats

    def skipped_files(self) -> SkippedFiles:
        """The files passed over, as listed (the first :data:`~prep.stats.skipped.SKIPPED_LISTED`) and counted."""
        listed = [(x["path"], x["reason"]) for x in self.skipped]
        return SkippedFiles(listed, self.skipped_count or 0, dict(self.skipped_reasons or {}))

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
                said = f"source {key} changed ({self.source.get(key)} -> {source.get(key)})"
                if self.source.get("path") != source.get("path"):
                    said += f" and its path ({self.source.get('path')} -> {source.get('path')})"
                return said
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


def state_percentiles(state: ChannelMoments, q: Sequence[float]) -> tuple[list[list[float]], list | None] | None:
    """Per channel, the percentiles ``q`` from the state's histogram in the state's units, and for
    float data their bounds (``[[low, high] per q] per channel``); None without a histogram."""
    if state.histogram is not None:
        return histogram_percentiles(state.histogram, q, EIGHT_BIT_MAX), None
    if state.wide is None or state.pixel_max <= 0:
        return None
    if state.wide_kind in WIDE_OFFSETS:
        return histogram_percentiles(state.wide, q, state.pixel_max, WIDE_OFFSETS[state.wide_kind]), None
    found = [[float_percentile(row, value, state.pixel_max) for value in q] for row in state.wide]
    return [[v[0] for v in row] for row in found], [[[v[1], v[2]] for v in row] for row in found]


def clipped_moments(state: ChannelMoments, low: Sequence[float], high: Sequence[float]) -> tuple[list, list]:
    """Per channel, the mean and std (ddof=0) of the measured values clamped to ``[low, high]`` (in
    the state's units), from its histogram, in float64."""
    if state.histogram is not None:
        hist, values = state.histogram, np.arange(state.histogram.shape[1]) / float(EIGHT_BIT_MAX)
        rows = [(row, values) for row in hist]
    elif state.wide is not None and state.wide_kind in WIDE_OFFSETS:
        values = (np.arange(state.wide.shape[1]) + WIDE_OFFSETS[state.wide_kind]) / state.pixel_max
        rows = [(row, values) for row in state.wide]
    elif state.wide is not None:
        lows, highs = float_key_bounds(np.arange(state.wide.shape[1]))
        values = (lows + highs) / 2 / state.pixel_max
        rows = [(row, values) for row in state.wide]
    else:
        raise StatsFileError("clipping at percentiles needs a histogram; these statistics have none")
    means, stds = [], []
    for (row, values), lo, hi in zip(rows, low, high):
        used = row > 0
        weights, clamped = row[used].astype(np.float64), np.clip(values[used], lo, hi)
        mean = float((weights * clamped).sum() / weights.sum())
        means.append(mean)
        stds.append(math.sqrt(float((weights * (clamped - mean) ** 2).sum() / weights.sum())))
    return means, stds


def format_values(values: Sequence[float]) -> str:
    """Per-channel values to 4 decimals as a Python tuple (``(0.1307,)`` for one channel), as
    pasted into code and shown in messages."""
    inner = ", ".join(f"{v:.4f}" for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"


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
        stats = Stats.from_dict(data)
    except StatsFileError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    if verify_against is not None:
        from prep.errors import SourceError
        from prep.sources.resolve import resolve_source

        the_split = split or stats.source.get("split")
        try:
            source = resolve_source(
                verify_against,
                **{
                    "root": root,
                    "split": the_split,
                    "checksum": "checksum" in (stats.fingerprint or {}),  # the identity the file was written with
                    **source_options,
                },
            )
        except SourceError as exc:
            if split is None and the_split and f"no '{the_split}' split" in str(exc):
                raise SourceError(
                    f"{exc} (the split '{the_split}' comes from {path}: give verify_against the folder that "
                    f"holds the splits, {stats.source.get('path')}, not the split itself)"
                ) from None
            raise
        reason = stats.stale_reason(source.describe(), source.fingerprint(), stats.mode, stats.transform, stats.decoder)
        if reason:
            raise StaleStatsError(f"{path}: stale: {reason}")
    return stats
