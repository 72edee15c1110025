"""Do constants fit the data, and does one dataset drift from another?

:func:`check_stats` measures a source and says how the reference's normalization would leave
it: per channel the mean and std of ``(x - mean_ref) / std_ref`` over every pixel, which for an
affine map are exactly ``(mean - mean_ref) / std_ref`` and ``std / std_ref``, so they come from
the source's statistics without a second pass. The reference is a stats file or a published
constant set (:mod:`prep.insight.known`). :func:`judge` does the same for statistics already at hand.

:func:`compare_stats` compares two stats files per channel: the mean shift in units of A's
std, the ratio of the stds, both ranges, and, where both hold 8-bit histograms, the exact
Wasserstein-1 distance and largest CDF gap (Kolmogorov-Smirnov) between the two (see
:mod:`prep.stats.histogram`); either side may be one class of a file measured with ``per_class``
(``FILE:CLASS``).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from typing import Any

from prep.errors import MismatchError, OptionError
from prep.insight.known import KNOWN, KnownConstants
from prep.options import BY_NAME
from prep.pixels import channel_names
from prep.stats.file import Stats, format_values, load_stats
from prep.stats.histogram import ks_statistic, wasserstein

DEFAULT_TOL = BY_NAME["tol"].default  # the declarations of prep.options
DEFAULT_MAX_SHIFT = BY_NAME["max_shift"].default
DEFAULT_MAX_STD_RATIO = BY_NAME["max_std_ratio"].default


def resolve_reference(reference: Any) -> Stats | KnownConstants:
    """A :class:`Stats`, a :class:`KnownConstants`, a stats file path, or a published set's name."""
    if isinstance(reference, Stats | KnownConstants):
        return reference
    text = os.fspath(reference)
    if not os.path.exists(text) and text.lower() in KNOWN:
        return KNOWN[text.lower()]
    if not os.path.exists(text):
        raise OptionError(f"{text}: no such stats file, and not a published constant set ({', '.join(KNOWN)})")
    return load_stats(text)


def _name(reference: Stats | KnownConstants, given: Any) -> str:
    if isinstance(reference, KnownConstants):
        return reference.name
    if isinstance(given, Stats):
        return f"stats of {given.source.get('path') or given.source.get('kind')}"
    return os.fspath(given)


@dataclass(frozen=True)
class CheckResult:
    """How the reference's ``Normalize`` leaves the data, per channel, and the verdict."""

    reference: str
    mode: str
    images: int
    mean: tuple[float, ...]  # the data's own statistics
    std: tuple[float, ...]
    reference_mean: tuple[float, ...]
    reference_std: tuple[float, ...]
    normalized_mean: tuple[float, ...]  # mean of (x - reference_mean) / reference_std
    normalized_std: tuple[float, ...]  # its std
    tol: float
    fingerprint: str  # "matches", "differs: why", or why it does not apply
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Every channel's normalized mean within ``tol`` of 0 and std within ``tol`` of 1."""
        return all(
            abs(m) <= self.tol and abs(s - 1) <= self.tol for m, s in zip(self.normalized_mean, self.normalized_std)
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite values (a reference std of 0) become null."""
        return _finite({**asdict(self), "notes": list(self.notes), "ok": self.ok})

    def format(self) -> str:
        names = channel_names(len(self.mean))

        def row(label: str, values, fmt: str = "{:>10.4f}") -> str:
            return f"{label:<26}" + "".join(fmt.format(v) for v in values)

        lines = [
            f"reference                 {self.reference}  mode={self.mode}",
            f"images                    {self.images}",
            f"data and options          {self.fingerprint}",
            row("channel", names, "{:>10}"),
            row("data mean", self.mean),
            row("reference mean", self.reference_mean),
            row("data std", self.std),
            row("reference std", self.reference_std),
            row("normalized mean", self.normalized_mean) + "   (want 0)",
            row("normalized std", self.normalized_std) + "   (want 1)",
            *(f"note: {note}" for note in self.notes),
            self.verdict(),
        ]
        return "\n".join(lines)

    def verdict(self) -> str:
        """The one line ``prep check -q`` prints."""
        return (
            f"verdict: {'ok' if self.ok else 'off'}: normalized mean within {self.tol:g} of 0 and std within "
            f"{self.tol:g} of 1 {'in every channel' if self.ok else 'fails in channel(s) ' + self._failing()}"
        )

    def _failing(self) -> str:
        bad = [
            name
            for name, m, s in zip(channel_names(len(self.mean)), self.normalized_mean, self.normalized_std)
            if abs(m) > self.tol or abs(s - 1) > self.tol
        ]
        return ", ".join(bad)


def judge(
    data: Stats, reference: Stats | KnownConstants, name: str, tol: float = DEFAULT_TOL, fingerprint: str = ""
) -> CheckResult:
    """How ``reference``'s ``Normalize`` leaves the data that ``data`` describes."""
    if data.channels != reference.channels:
        raise MismatchError(f"{name} has {reference.channels} channel(s), the data {data.channels}")
    if not (isinstance(tol, int | float) and tol >= 0):
        raise OptionError(f"tol must be a non-negative number; got {tol!r}")
    normalized_mean = tuple(_ratio(m - rm, rs) for m, rm, rs in zip(data.mean, reference.mean, reference.std))
    normalized_std = tuple(_ratio(s, rs) for s, rs in zip(data.std, reference.std))
    return CheckResult(
        reference=name,
        mode=data.mode,
        images=data.images,
        mean=data.mean,
        std=data.std,
        reference_mean=tuple(reference.mean),
        reference_std=tuple(reference.std),
        normalized_mean=normalized_mean,
        normalized_std=normalized_std,
        tol=float(tol),
        fingerprint=fingerprint,
        notes=tuple(_notes(data, reference)),
    )


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None, so it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _ratio(a: float, b: float) -> float:
    if b == 0:
        return 0.0 if a == 0 else math.copysign(math.inf, a)
    return a / b


PER_IMAGE_EVIDENCE = 0.05  # pooled and per-image std differ by this much (relative) before their gap is evidence


def _looks_per_image(data: Stats, reference: KnownConstants) -> bool:
    """Strong evidence that a reference of unknown provenance averaged per-image stds: in every
    channel the data's pooled and per-image stds differ by more than :data:`PER_IMAGE_EVIDENCE`
    (relative) and the reference lies within a quarter of that gap of the per-image one. A
    reference known to be pooled (prep's own files, the published sets marked so) never gets it:
    data that drifted from its reference is not evidence."""
    channels = list(zip(reference.std, data.per_image_std_mean, data.std))
    return bool(channels) and all(
        s > 0 and abs(p - s) > PER_IMAGE_EVIDENCE * s and abs(r - p) < 0.25 * abs(p - s) for r, p, s in channels
    )


def _notes(data: Stats, reference: Stats | KnownConstants) -> list[str]:
    notes = []
    if isinstance(reference, KnownConstants):
        notes.append(f"{reference.name}: {reference.origin}")
        if reference.per_image_std:
            notes.append(
                f"{reference.name}'s std is a mean of per-image stds; this data's pooled std is "
                f"{format_values(data.std)} and its mean per-image std {format_values(data.per_image_std_mean)}: "
                "Normalize needs the pooled one"
            )
    if any(r == 0 for r in reference.std):
        notes.append("the reference has a channel with std 0: its Normalize divides by zero")
    if isinstance(reference, KnownConstants) and reference.per_image_std is None and _looks_per_image(data, reference):
        notes.append(
            f"the reference std {format_values(reference.std)} is much closer to this data's mean per-image std "
            f"{format_values(data.per_image_std_mean)} than to its pooled std {format_values(data.std)}: evidence "
            "that it was computed per image, which Normalize does not assume"
        )
    if isinstance(reference, KnownConstants) and reference.name == "imagenet" and data.pca is not None:
        eigval = ", ".join(f"{v:.4f}" for v in data.pca["eigval"])
        notes.append(
            f"PCA eigenvalues of this data: {eigval}; ImageNet's pasted lighting eigval: 0.2175, 0.0188, 0.0045 "
            "(on another scale: their squares sum to 0.048)"
        )
    if isinstance(reference, Stats) and reference.transform and reference.transform != data.transform:
        notes.append(f"the reference was measured after {reference.transform}; pass the same --resize/--center-crop")
    return notes


def _decodes_as_reference(ref: Stats | KnownConstants, source: Any, options: dict[str, Any]) -> bool:
    """True when ``source`` should be decoded by torchvision as the reference was: no decoder
    asked for, a reference made with torchvision.io, image files to decode, and no transform
    (transforms are applied to PIL's pixels)."""
    if options.get("decoder") is not None or not isinstance(ref, Stats):
        return False
    if ref.decoder not in ("torchvision", "torchvision-cuda") or options.get("transform") is not None:
        return False
    from prep.options import source_options
    from prep.sources import TaskSource, resolve_source

    return isinstance(resolve_source(source, **source_options(options)), TaskSource)


def check_stats(reference: Any, source: Any, *, tol: float = DEFAULT_TOL, **options: Any) -> CheckResult:
    """Measure ``source`` (``options`` as for :func:`prep.compute_stats`, in the reference's mode)
    and judge how the reference's normalization leaves it."""
    from prep.engine.measure import compute_stats

    ref = resolve_reference(reference)
    with_pca = isinstance(ref, KnownConstants) and ref.name == "imagenet"  # its eigenvalues go beside ImageNet's
    if _decodes_as_reference(ref, source, options):
        options = {**options, "decoder": "torchvision"}
    data = compute_stats(source, **{**options, "mode": ref.mode, "covariance": with_pca or options.get("covariance")})
    if isinstance(ref, KnownConstants):
        fingerprint = "not applicable (published constants)"
    else:
        why = ref.stale_reason(data.source, data.fingerprint, data.mode, data.transform, data.decoder)
        fingerprint = "matches the file" if why is None else f"differs from the file: {why}"
    return judge(data, ref, _name(ref, reference), tol, fingerprint)


@dataclass(frozen=True)
class Comparison:
    """How dataset B differs from dataset A, per channel, and the verdict."""

    a: str
    b: str
    mean_shift: tuple[float, ...]  # (mean_B - mean_A) / std_A
    std_ratio: tuple[float, ...]  # std_B / std_A
    range_a: tuple[tuple[float, float], ...]
    range_b: tuple[tuple[float, float], ...]
    wasserstein: tuple[float, ...] | None  # in unit scale; None without both histograms
    ks: tuple[float, ...] | None
    max_shift: float
    max_std_ratio: float

    @property
    def ok(self) -> bool:
        return all(abs(d) <= self.max_shift for d in self.mean_shift) and all(
            1 / self.max_std_ratio <= r <= self.max_std_ratio for r in self.std_ratio
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: infinite values (a std of 0 in A) become null."""
        return _finite({**asdict(self), "ok": self.ok})

    def format(self) -> str:
        names = channel_names(len(self.mean_shift))

        def row(label: str, values, fmt: str = "{:>12.4f}") -> str:
            return f"{label:<30}" + " ".join(fmt.format(v) for v in values)

        lines = [
            f"A                             {self.a}",
            f"B                             {self.b}",
            row("channel", names, "{:>12}"),
            row("mean shift (A std)", self.mean_shift) + f"   (limit {self.max_shift:g})",
            row("std ratio B/A", self.std_ratio) + f"   (limit {1 / self.max_std_ratio:.3f}..{self.max_std_ratio:g})",
            row("range A", [f"{lo:.3f}..{hi:.3f}" for lo, hi in self.range_a], "{:>14}"),
            row("range B", [f"{lo:.3f}..{hi:.3f}" for lo, hi in self.range_b], "{:>14}"),
        ]
        if self.wasserstein is not None:
            lines.append(row("Wasserstein-1 (unit scale)", self.wasserstein, "{:>12.6f}"))
            lines.append(row("largest CDF gap (KS)", self.ks, "{:>12.6f}"))
        else:
            lines.append("Wasserstein-1, KS             need 8-bit histograms in both files")
        lines.append(f"verdict: {'same' if self.ok else 'drift'}")
        return "\n".join(lines)


def compare_stats(
    a: Any, b: Any, *, max_shift: float = DEFAULT_MAX_SHIFT, max_std_ratio: float = DEFAULT_MAX_STD_RATIO
) -> Comparison:
    """Compare dataset B's statistics with dataset A's (stats objects or files); ``FILE:CLASS``
    is one class of a file measured with ``per_class`` (:meth:`Stats.class_stats`)."""
    sa, sb = (load_side(x) for x in (a, b))
    if sa.channels != sb.channels:
        raise MismatchError(
            f"{_label(b)}: {sb.channels}-channel statistics cannot be compared with {_label(a)}'s {sa.channels}"
        )
    if not (isinstance(max_shift, int | float) and max_shift >= 0):
        raise OptionError(f"max_shift must be a non-negative number; got {max_shift!r}")
    if not (isinstance(max_std_ratio, int | float) and max_std_ratio >= 1):
        raise OptionError(f"max_std_ratio must be a number >= 1; got {max_std_ratio!r}")
    ha, hb = sa.histogram, sb.histogram  # 8-bit data: exact distances from the histograms
    return Comparison(
        a=_label(a),
        b=_label(b),
        mean_shift=tuple(_ratio(mb - ma, s) for ma, mb, s in zip(sa.mean, sb.mean, sa.std)),
        std_ratio=tuple(_ratio(s_b, s_a) if s_a or s_b else 1.0 for s_a, s_b in zip(sa.std, sb.std)),
        range_a=tuple(zip(sa.min, sa.max)),
        range_b=tuple(zip(sb.min, sb.max)),
        wasserstein=tuple(wasserstein(x, y) for x, y in zip(ha, hb)) if ha is not None and hb is not None else None,
        ks=tuple(ks_statistic(x, y) for x, y in zip(ha, hb)) if ha is not None and hb is not None else None,
        max_shift=float(max_shift),
        max_std_ratio=float(max_std_ratio),
    )


def load_side(x: Any) -> Stats:
    """A side of a comparison: a :class:`Stats`, a stats file, or ``FILE:CLASS`` (a path that
    exists is always a file; otherwise the text after the last ``:`` names a class of ``FILE``)."""
    if isinstance(x, Stats):
        return x
    text = os.fspath(x)
    path, sep, klass = text.rpartition(":")
    if os.path.exists(text) or not sep or not path or not os.path.exists(path):
        return load_stats(text)
    try:
        return load_stats(path).class_stats(klass)
    except OptionError as exc:
        raise OptionError(f"{path}: {exc}") from None


def _label(x: Any) -> str:
    return repr(x) if isinstance(x, Stats) else os.fspath(x)
