"""The JSON form of :class:`~prep.stats.moments.ChannelMoments`' state, and its validation.

Each field of :data:`~prep.stats.moments.STATE_FIELDS` is written by :func:`encode_field` as
plain JSON (exact sums as integers of any size, min/max of an empty channel as ``null``) and read
back by :func:`decode_field`, which checks its type, shape, range and finiteness; then
:func:`check_consistency` checks the relations between fields that no single field's type can
express (the histogram adds up to the count and gives the exact sums, the cross sums are
symmetric with the sums of squares on their diagonal, Cauchy-Schwarz). Every refusal is a
:class:`~prep.errors.StatsFileError` naming the field (``state.m2``). Version 1 states are read
through :func:`read_header`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.errors import StatsFileError
from prep.fields import is_int, is_number, short_repr
from prep.pixels import EIGHT_BIT_MAX, LEVELS
from prep.stats.reductions import histogram_range

if TYPE_CHECKING:
    from prep.stats.moments import ChannelMoments, StateField

STATE_VERSION = 3  # 3: nodata_count and the wide histogram; 2: image_std_sum in fixed point, histogram; 1, 2 read
IMAGE_STD_SCALE = 2**48  # image_std_sum holds each image's std rounded to a multiple of 2**-48


def read_header(state: Any, where: str) -> tuple[Mapping[str, Any], int]:
    """The state as version 2 (a version 1 state upgraded) and its channel count, both checked."""
    if not isinstance(state, Mapping):
        raise StatsFileError(f"{where}: expected an object")
    from prep.stats.moments import MAX_CHANNELS, STATE_FIELDS

    version = state.get("version")
    if isinstance(version, bool) or version not in range(1, STATE_VERSION + 1):
        raise StatsFileError(f"{where}.version: expected 1 to {STATE_VERSION}; got {short_repr(version)}")
    if version == 1:
        state = _upgrade_v1(state, where)
    channels = state.get("channels")
    if not is_int(channels) or not 1 <= channels <= MAX_CHANNELS:
        raise StatsFileError(f"{where}.channels: expected 1 to {MAX_CHANNELS}; got {channels!r}")
    version = int(version or 0)
    if version < 3 and isinstance(state.get("cross"), list):  # rows were 4 long, zeros beyond the channels
        state = {**state, "cross": _trimmed_cross(state["cross"], channels, where)}
    added = {f.name: encode_field(f, f.default(channels)) for f in STATE_FIELDS if f.since > version}
    if added:  # an older state: the fields added since are empty
        state = {**state, **added, "wide_kind": -1 if "wide_kind" in added else state.get("wide_kind")}
    return state, channels


def _trimmed_cross(cross: list, channels: int, where: str) -> list:
    """A version 1 or 2 state's cross sums (rows of 4, zero beyond the channels) as rows of ``channels``."""
    out = []
    for row in cross:
        if not isinstance(row, list) or len(row) != 4 or any(v != 0 for v in row[channels:]):
            raise StatsFileError(f"{where}.cross: expected {channels} rows of 4 integers, zero beyond the channels")
        out.append(row[:channels])
    return out


def _upgrade_v1(state: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A version-1 state (``image_std_sum`` as floats, no histogram) in version 2's form."""
    sums = state.get("image_std_sum")
    if not isinstance(sums, list) or not all(is_number(v) and math.isfinite(v) and 0 <= v < 2**60 for v in sums):
        raise StatsFileError(f"{where}.image_std_sum: expected non-negative numbers")
    return {**state, "version": 2, "image_std_sum": [round(v * IMAGE_STD_SCALE) for v in sums]}


def encode_field(f: StateField, value: Any) -> Any:
    """The JSON value of the field ``f`` holding ``value``."""
    if value is None or f.kind == "exact":
        return value
    if f.sparse:  # per channel, the non-zero entries' indices and values
        return [{"bins": np.flatnonzero(row).tolist(), "counts": row[row != 0].tolist()} for row in value]
    if f.width:
        return value.tolist()
    if not f.per_channel:
        return int(value) if f.kind == "int" else float(value)
    if f.kind == "int":
        return [int(v) for v in value]
    return [float(v) if math.isfinite(v) else None for v in value]  # only min/max can be infinite (empty)


def decode_field(f: StateField, value: Any, channels: int, where: str) -> Any:
    """The value of the field ``f`` of a ``channels``-channel state from its JSON ``value``, checked."""
    if value is None and f.optional:
        return None
    numbers = (int,) if f.kind in ("int", "exact") else (int, float)
    kind_name = "integer" if f.kind in ("int", "exact") else "number"
    if not f.per_channel:
        return _check_number(value, numbers, kind_name, f, where)
    if f.sparse:
        return _decode_sparse(f, value, channels, where)
    width = f.row(channels)
    if width:
        if not isinstance(value, list) or len(value) != channels:
            raise StatsFileError(f"{where}: expected {channels} rows of {width} {kind_name}s")
        for row in value:
            if not isinstance(row, list) or len(row) != width:
                raise StatsFileError(f"{where}: expected {channels} rows of {width} {kind_name}s")
            for v in row:
                _check_number(v, numbers, kind_name, f, where)
        return [list(row) for row in value] if f.kind == "exact" else np.array(value, np.int64)
    if not isinstance(value, list) or len(value) != channels:
        raise StatsFileError(f"{where}: expected a list of {channels} {kind_name}s")
    values = [
        f.empty if v is None and math.isinf(f.empty) else _check_number(v, numbers, kind_name, f, where) for v in value
    ]
    if f.kind == "exact":
        return values
    return np.array(values, np.int64 if f.kind == "int" else np.float64)


def _decode_sparse(f: StateField, value: Any, channels: int, where: str) -> np.ndarray:
    """A ``(C, width)`` int64 array from per-channel ``{"bins": [...], "counts": [...]}``: bins
    strictly increasing within the width, counts positive integers."""
    expected = f'{channels} objects {{"bins": [...], "counts": [...]}}'
    if not isinstance(value, list) or len(value) != channels:
        raise StatsFileError(f"{where}: expected {expected}")
    out = np.zeros((channels, f.width), np.int64)
    for c, entry in enumerate(value):
        if not isinstance(entry, Mapping) or set(entry) != {"bins", "counts"}:
            raise StatsFileError(f"{where}[{c}]: expected {expected}")
        bins, counts = entry["bins"], entry["counts"]
        if not isinstance(bins, list) or not isinstance(counts, list) or len(bins) != len(counts):
            raise StatsFileError(f"{where}[{c}]: bins and counts must be lists of one length")
        for v in (*bins, *counts):
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**63:
                raise StatsFileError(f"{where}[{c}]: expected non-negative integers; got {short_repr(v)}")
        index, number = np.array(bins, np.int64), np.array(counts, np.int64)
        if index.size and (index[0] < 0 or index[-1] >= f.width or np.any(np.diff(index) <= 0)):
            raise StatsFileError(f"{where}[{c}].bins: must increase strictly within 0..{f.width - 1}")
        if np.any(number <= 0):
            raise StatsFileError(f"{where}[{c}].counts: must be positive (zero counts are left out)")
        out[c, index] = number
    return out


def _check_number(value: Any, numbers: tuple[type, ...], kind_name: str, f: StateField, where: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, numbers):
        raise StatsFileError(f"{where}: expected {kind_name} values; got {value!r}")
    v = value if isinstance(value, int | float) else math.nan  # numbers holds no other type
    if f.kind == "int" and not -(2**63) <= v < 2**63:
        raise StatsFileError(f"{where}: integer out of range; got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise StatsFileError(f"{where}: values must be finite; got {v!r}")
    if f.minimum is not None and v < f.minimum:
        raise StatsFileError(f"{where}: values must be >= {f.minimum}; got {v!r}")
    return v


def check_consistency(state: ChannelMoments, where: str) -> None:
    """Relations between the fields of ``state`` that no single field's type can express."""
    empty = state.count == 0
    if np.any(np.isinf(state.min) != empty) or np.any(np.isinf(state.max) != empty):
        raise StatsFileError(f"{where}.min: must be null exactly where count is 0")
    if np.any((state.min > state.max) & ~empty):
        raise StatsFileError(f"{where}.min: exceeds {where}.max")
    if (state.exact_sum is None) != (state.exact_sumsq is None):
        raise StatsFileError(f"{where}.exact_sum: exact_sum and exact_sumsq must both be null or both be set")
    if state.histogram is not None:
        _check_histogram(state, where)
    _check_wide(state, where)
    if state.cross is not None:
        c = state.channels
        square = state.cross
        if any(square[i][j] != square[j][i] for i in range(c) for j in range(c)) or any(
            square[i][i] < 0 for i in range(c)
        ):
            raise StatsFileError(f"{where}.cross: must be symmetric, with a non-negative diagonal")
        if state.exact_sumsq is not None and [square[i][i] for i in range(c)] != list(state.exact_sumsq):
            raise StatsFileError(f"{where}.cross: its diagonal must equal {where}.exact_sumsq")
        for i in range(c):
            for j in range(c):  # Cauchy-Schwarz
                if square[i][j] ** 2 > square[i][i] * square[j][j]:
                    raise StatsFileError(f"{where}.cross: inconsistent with its diagonal")
    if state.exact_sum is not None and state.exact_sumsq is not None:
        for n, total, total_sq in zip(state.count.tolist(), state.exact_sum, state.exact_sumsq):
            # Cauchy-Schwarz: S**2 <= n * Q; and Q <= 255 * S for values in 0..255
            if total > EIGHT_BIT_MAX * n or total * total > n * total_sq or total_sq > EIGHT_BIT_MAX * total:
                raise StatsFileError(f"{where}.exact_sum: inconsistent with {where}.count and exact_sumsq")


def _check_wide(state: ChannelMoments, where: str) -> None:
    """The wide histogram is set exactly for kinds 1 to 3, counts every pixel, and (integer
    kinds) spans exactly min..max."""
    from prep.stats.reductions import WIDE_OFFSETS, wide_range

    kind, wide = state.wide_kind, state.wide
    if kind > 3:
        raise StatsFileError(f"{where}.wide_kind: expected -1 to 3; got {kind}")
    if (wide is None) != (kind <= 0):
        raise StatsFileError(f"{where}.wide: must be set exactly when {where}.wide_kind is 1, 2 or 3")
    if wide is None:
        return
    if wide.sum(1).tolist() != state.count.tolist():
        raise StatsFileError(f"{where}.wide: its counts do not add up to {where}.count")
    if kind in WIDE_OFFSETS and state.pixel_max > 0:
        low, high = wide_range(wide, kind)
        empty = state.count == 0
        if np.any(~empty & ((low / state.pixel_max != state.min) | (high / state.pixel_max != state.max))):
            raise StatsFileError(f"{where}.wide: does not span {where}.min..{where}.max")


def _check_histogram(state: ChannelMoments, where: str) -> None:
    """The histogram must count every pixel, span exactly min..max, and give the exact sums."""
    hist, sums, squares = state.histogram, state.exact_sum, state.exact_sumsq
    if sums is None or squares is None:
        raise StatsFileError(f"{where}.histogram: must be null when exact_sum is")
    assert hist is not None  # called only for a state with a histogram
    if hist.sum(1).tolist() != state.count.tolist():
        raise StatsFileError(f"{where}.histogram: its counts do not add up to {where}.count")
    low, high = histogram_range(hist)
    empty = state.count == 0
    if np.any(~empty & ((low / EIGHT_BIT_MAX != state.min) | (high / EIGHT_BIT_MAX != state.max))):
        raise StatsFileError(f"{where}.histogram: does not span {where}.min..{where}.max")
    levels = list(range(LEVELS))
    for c, row in enumerate(hist.tolist()):
        total = sum(v * h for v, h in zip(levels, row))
        total_sq = sum(v * v * h for v, h in zip(levels, row))
        if (total, total_sq) != (sums[c], squares[c]):
            raise StatsFileError(f"{where}.histogram: inconsistent with {where}.exact_sum and exact_sumsq")


def check_class_totals(whole: Any, parts: Mapping[str, Any], where: str, images: bool = True) -> None:
    """Refuse class states (``ChannelMoments`` by class name) that do not add up to the ``whole``
    state exactly: their images, their pixel counts per channel and, where every state keeps
    them, their exact 8-bit sums and histograms (a pass routes every image to one class).
    ``images=False`` for the label values of volumes: a volume holds several labels, whose
    voxels still partition the whole's."""
    states = list(parts.values())
    totals: dict[str, tuple[Any, Any]] = {}
    if images:
        totals["images"] = (sum(p.images for p in states), whole.images)
    totals["count"] = ([sum(int(p.count[c]) for p in states) for c in range(whole.channels)], whole.count.tolist())
    if whole.exact_sum is not None and all(p.exact_sum is not None for p in states):
        for name in ("exact_sum", "exact_sumsq"):
            totals[name] = (
                [sum(getattr(p, name)[c] for p in states) for c in range(whole.channels)],
                getattr(whole, name),
            )
    if whole.histogram is not None and all(p.histogram is not None for p in states):
        totals["histogram"] = (
            sum((p.histogram for p in states), np.zeros_like(whole.histogram)).tolist(),
            whole.histogram.tolist(),
        )
    for name, (classes, overall) in totals.items():
        if classes != overall:
            raise StatsFileError(
                f"field '{where}': the classes' {name} do not add up to the whole state's; was the file edited?"
            )
