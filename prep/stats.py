"""The stats file: the contract between the statistics pass and training/test code.

:class:`Stats` holds what was measured, on what, and how; ``save`` writes it atomically as
JSON (schema documented in the README) and :func:`load_stats` validates every field, raising
:class:`~prep.errors.StatsFileError` that names the field at fault.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from ._version import __version__
from .accumulator import ChannelMoments, ChannelSummary
from .errors import PrepError, StaleStatsError, StatsFileError, os_reason
from .files import read_bytes_bounded, write_json_atomic
from .pixels import CHANNELS, MODES

SCHEMA_VERSION = 1
REL_TOL = 1e-9  # summary numbers must agree with the stored state this closely


@dataclass(frozen=True)
class Stats:
    """Per-channel statistics of a dataset in unit scale, and where they came from.

    ``mean``/``std``/``min``/``max`` are what ``ToDtype(torch.float32, scale=True)`` (or
    ``ToTensor``) values have; multiply by ``pixel_max`` (255 or 65535) for raw units.
    ``std`` is the population std over all pixels pooled (ddof=0), which is what
    ``transforms.Normalize`` assumes; ``per_image_std_mean`` is the mean over images of each
    image's own std, shown for comparison only.
    """

    source: Mapping[str, Any]
    fingerprint: Mapping[str, Any] | None
    mode: str
    state: ChannelMoments
    skipped: Sequence[Mapping[str, str]] = ()
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    prep_version: str = __version__

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
        """The options that change the numbers (batch size, workers and device do not)."""
        return {"mode": self.mode}

    # -------------------------------------------------------------- transforms
    def normalize(self, eps: float | None = None):
        """``Compose``: pixel conversion, float32 unit scale, ``Normalize(mean, std)``."""
        from .transforms import normalize_pipeline

        return normalize_pipeline(self.mean, self.std, self.mode, eps=eps)

    def minmax(self, feature_range: tuple[float, float] = (0.0, 1.0), eps: float | None = None):
        """``Compose`` mapping each channel's dataset ``[min, max]`` onto ``feature_range``."""
        from .transforms import minmax_pipeline

        return minmax_pipeline(
            self.min, self.max, self.mode, feature_range=feature_range, eps=eps, pixel_max=self.pixel_max
        )

    def denormalize(self, eps: float | None = None):
        """The inverse of :meth:`normalize` on float tensors: ``x * std + mean``, unit scale."""
        from .transforms import denormalize_pipeline

        return denormalize_pipeline(self.mean, self.std, eps=eps)

    def normalize_line(self) -> str:
        """The ``transforms.Normalize(...)`` line to paste into training code."""
        return f"transforms.Normalize(mean={_fmt(self.mean)}, std={_fmt(self.std)})"

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
            "skipped": {"count": len(self.skipped), "files": [dict(x) for x in self.skipped]},
            "state": self.state.state_dict(),
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write the stats file atomically (temp file, fsync, rename)."""
        try:
            write_json_atomic(path, self.to_dict())
        except OSError as exc:
            raise PrepError(f"{os.fspath(path)}: cannot write stats file ({os_reason(exc)})") from None

    @classmethod
    def from_dict(cls, data: Any) -> Stats:
        return _parse(data)

    # -------------------------------------------------------------- freshness
    def stale_reason(self, source: Mapping[str, Any], fingerprint: Mapping[str, Any] | None, mode: str) -> str | None:
        """Why these stats do not describe ``source`` as it is now, or None when they do."""
        for key in ("kind", "split"):
            if self.source.get(key) != source.get(key):
                return f"source {key} changed ({self.source.get(key)} -> {source.get(key)})"
        if self.mode != mode:
            return f"mode changed ({self.mode} -> {mode})"
        if fingerprint is None or self.fingerprint is None:
            return "the source has no fingerprint"
        if dict(self.fingerprint) != dict(fingerprint):
            old, new = self.fingerprint, fingerprint
            if old.get("files") != new.get("files"):
                return f"data changed ({old.get('files')} -> {new.get('files')} files)"
            return "data changed (contents, sizes or modification times differ)"
        return None


def _fmt(values: Sequence[float]) -> str:
    inner = ", ".join(f"{v:.4f}" for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"


def load_stats(
    path: str | os.PathLike, verify_against: Any = None, *, root: str | os.PathLike = "data", split: str | None = None
) -> Stats:
    """Load and validate a stats file.

    With ``verify_against`` (a path, dataset name, Source or Dataset, resolved as in
    :func:`prep.compute_stats`), raise :class:`~prep.errors.StaleStatsError` when the data's
    fingerprint or the source no longer match the file.
    """
    path = os.fspath(path)
    try:
        text = read_bytes_bounded(path, "stats file").decode("utf-8")
    except UnicodeDecodeError:
        raise StatsFileError(f"{path}: not a stats file (not UTF-8 text)") from None
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, and integers of thousands of digits
        raise StatsFileError(f"{path}: not valid JSON ({exc})") from None
    try:
        stats = _parse(data)
    except StatsFileError as exc:
        raise type(exc)(f"{path}: {exc}") from None
    if verify_against is not None:
        from .sources.resolve import resolve_source

        source = resolve_source(verify_against, root=root, split=split or stats.source.get("split"))
        reason = stats.stale_reason(source.describe(), source.fingerprint(), stats.mode)
        if reason:
            raise StaleStatsError(f"{path}: stale: {reason}")
    return stats


# ------------------------------------------------------------------ validation
def _field(data: Mapping[str, Any], name: str, kinds: type | tuple[type, ...]) -> Any:
    if name not in data:
        raise StatsFileError(f"missing field '{name}'")
    value = data[name]
    if isinstance(value, bool) and bool not in (kinds if isinstance(kinds, tuple) else (kinds,)):
        raise StatsFileError(f"field '{name}': expected {_kind_name(kinds)}; got {value!r}")
    if not isinstance(value, kinds):
        raise StatsFileError(f"field '{name}': expected {_kind_name(kinds)}; got {type(value).__name__}")
    return value


def _kind_name(kinds) -> str:
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    return " or ".join(
        {
            "dict": "an object",
            "list": "a list",
            "str": "a string",
            "int": "an integer",
            "float": "a number",
            "NoneType": "null",
        }.get(k.__name__, k.__name__)
        for k in kinds
    )


def _vector(data: Mapping[str, Any], name: str, channels: int) -> list[float]:
    values = _field(data, name, list)
    if len(values) != channels:
        raise StatsFileError(f"field '{name}': expected {channels} values (one per channel); got {len(values)}")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise StatsFileError(f"field '{name}': expected finite numbers; got {v!r}")
    return values


def _parse(data: Any) -> Stats:
    if not isinstance(data, dict):
        raise StatsFileError("expected a JSON object at the top level")
    version = _field(data, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise StatsFileError(
            f"field 'schema_version': unknown schema version {version} "
            f"(this prep {__version__} reads version {SCHEMA_VERSION})"
        )
    prep_version = _field(data, "prep_version", str)
    created = _field(data, "created", str)
    source = _field(data, "source", dict)
    for key in ("kind", "mode"):
        if not isinstance(source.get(key), str):
            raise StatsFileError(f"field 'source.{key}': expected a string")
    mode = source["mode"]
    if mode not in MODES:
        raise StatsFileError(f"field 'source.mode': expected one of {', '.join(MODES)}; got {mode!r}")
    fingerprint = _field(data, "fingerprint", (dict, type(None)))
    channels = _field(data, "channels", int)
    if channels != CHANNELS[mode]:
        raise StatsFileError(f"field 'channels': mode {mode} has {CHANNELS[mode]} channels; got {channels}")
    vectors = {name: _vector(data, name, channels) for name in ("mean", "std", "min", "max")}
    if any(v < 0 for v in vectors["std"]):
        raise StatsFileError(f"field 'std': must be non-negative; got {vectors['std']}")
    if any(lo > hi for lo, hi in zip(vectors["min"], vectors["max"])):
        raise StatsFileError("field 'min': exceeds 'max'")
    skipped = _field(data, "skipped", dict)
    files = skipped.get("files")
    if not isinstance(files, list) or not all(
        isinstance(x, dict) and isinstance(x.get("path"), str) and isinstance(x.get("reason"), str) for x in files
    ):
        raise StatsFileError("field 'skipped.files': expected a list of {path, reason} objects")
    state = ChannelMoments.from_state_dict(_field(data, "state", dict))
    if state.channels != channels:
        raise StatsFileError(f"field 'state.channels': expected {channels}; got {state.channels}")
    if min(state.count) == 0:
        raise StatsFileError("field 'state.count': every channel needs at least one pixel")
    stats = Stats(
        source={k: v for k, v in source.items() if k not in ("mode", "images")},
        fingerprint=fingerprint,
        mode=mode,
        state=state,
        skipped=files,
        created=created,
        prep_version=prep_version,
    )
    measured = stats.summary
    for name, values in vectors.items():
        for got, want in zip(values, getattr(measured, name)):
            if not math.isclose(got, want, rel_tol=REL_TOL, abs_tol=1e-15):
                raise StatsFileError(
                    f"field '{name}': {values} does not match the stored state "
                    f"({list(getattr(measured, name))}); was the file edited?"
                )
    return stats
