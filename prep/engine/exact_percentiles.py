"""``--exact-percentiles``: a second pass that makes float data's percentiles exact.

The first pass leaves float data with a histogram of the top 16 bits of each value's
order-preserving float32 key (:func:`prep.stats.reductions.float_key_histogram`): it says which
bin holds the ``k``-th smallest value, not which value. For each channel and each wanted
percentile, the two order statistics NumPy's ``linear`` method interpolates between are in known
bins; this pass reads the data again and keeps, for those bins only, every distinct value with
its count (float32 data: at most 65,536 distinct values a bin, 1 MiB; float64 data: as many as
the bin holds). Then the ``k``-th smallest value is read off exactly and interpolated as
:func:`numpy.percentile` does, bit for bit. A pass with ``percentiles`` of 7 values touches at
most 14 bins a channel.

The second pass sees the same data only if nothing changed between the passes: the source's
fingerprint is compared before and after, and a change is an error.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prep.decode.decoders import Decoder, ImageArray, ReducedImage
from prep.engine.loop import Reducer
from prep.engine.workers import describe_failure
from prep.errors import BadImageError, PrepError, SourceError, StatsFileError
from prep.sources.base import FileChunk
from prep.stats.histogram import _lerp, order_statistic
from prep.stats.reductions import WIDE_FLOAT

Wanted = dict[int, frozenset[int]]  # channel -> the histogram bins whose values are kept


@dataclass
class Plan:
    """Per channel and percentile, the ranks ``(below, above, t)`` NumPy interpolates between, and
    the bins that hold them."""

    q: tuple[float, ...]
    ranks: list[list[tuple[int, int, np.float64]]]  # [channel][q] -> (k_below, k_above, t)
    bins: Wanted
    cumulative: list[np.ndarray]  # per channel, the histogram's cumulative counts


def plan(wide: np.ndarray, q: Sequence[float]) -> Plan:
    """What the second pass must collect for the percentiles ``q`` of a float-key histogram."""
    ranks: list[list[tuple[int, int, np.float64]]] = []
    bins: dict[int, set[int]] = {}
    cumulative = []
    for c, row in enumerate(np.asarray(wide, np.int64)):
        cum = np.cumsum(row)
        cumulative.append(cum)
        n = int(cum[-1]) if cum.size else 0
        per_q = []
        for value in q:
            if n == 0:
                per_q.append((-1, -1, np.float64(0)))
                continue
            index = (n - 1) * np.float64(np.true_divide(value, 100))
            if index >= n - 1:
                below = above = n - 1
                t = np.float64(0)
            elif index < 0:
                below = above = 0
                t = np.float64(0)
            else:
                below = math.floor(index)
                above, t = below + 1, index - np.float64(below)
            per_q.append((below, above, t))
            bins.setdefault(c, set()).update({order_statistic(cum, below), order_statistic(cum, above)})
        ranks.append(per_q)
    return Plan(tuple(q), ranks, {c: frozenset(b) for c, b in bins.items()}, cumulative)


@dataclass
class Collected:
    """Per (channel, bin), the distinct values seen and their counts (merged by addition)."""

    values: dict[tuple[int, int], dict[float, int]] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def add(self, array: np.ndarray, wanted: Wanted, nodata: tuple[float, ...] | None) -> None:
        """Keep the values of ``array`` ``(C, ...)`` (or ``(N, C, ...)`` flattened per channel)
        that fall in the wanted bins."""
        channels = array.shape[-3] if array.ndim >= 3 else 1
        for c, bins in wanted.items():
            if c >= channels:
                continue
            values = np.asarray(array[..., c, :, :] if array.ndim >= 3 else array, np.float64).ravel()
            keep = np.isfinite(values)
            if nodata is not None:
                keep &= values != nodata[c]
            values = values[keep]
            keys = _bins_of(values)
            for b in bins:
                inside = values[keys == b]
                if inside.size:
                    unique, counts = np.unique(inside, return_counts=True)
                    target = self.values.setdefault((c, b), {})
                    for v, k in zip(unique.tolist(), counts.tolist()):
                        target[v] = target.get(v, 0) + k

    def merge(self, other: Collected) -> None:
        for key, counts in other.values.items():
            target = self.values.setdefault(key, {})
            for v, k in counts.items():
                target[v] = target.get(v, 0) + k


def _bins_of(values: np.ndarray) -> np.ndarray:
    """The float-key histogram bin of each value (as :func:`prep.stats.reductions.float_key_histogram`)."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.int64)
    return np.where(bits >= 1 << 31, 0xFFFFFFFF - bits, bits + (1 << 31)) >> 16


def exact_values(p: Plan, collected: Collected, pixel_max: float) -> list[list[float]]:
    """Per channel, the exact percentiles ``p.q`` of the values / ``pixel_max`` (NumPy's linear method)."""
    out = []
    for c, per_q in enumerate(p.ranks):
        row = []
        for below, above, t in per_q:
            if below < 0:
                row.append(math.nan)
                continue
            a = _kth(p, collected, c, below) / pixel_max
            b = _kth(p, collected, c, above) / pixel_max
            row.append(_lerp(np.float64(a), np.float64(b), t))
        out.append(row)
    return out


def _kth(p: Plan, collected: Collected, c: int, k: int) -> float:
    """The ``k``-th smallest value (0-based) of channel ``c``."""
    cum = p.cumulative[c]
    b = order_statistic(cum, k)
    before = int(cum[b - 1]) if b > 0 else 0
    counts = collected.values.get((c, b))
    if not counts:
        raise SourceError("the data changed between the two passes of --exact-percentiles (a bin is empty)")
    rank = k - before
    for value in sorted(counts):
        rank -= counts[value]
        if rank < 0:
            return value
    raise SourceError("the data changed between the two passes of --exact-percentiles (a bin holds fewer values)")


class PercentileReducer(Reducer):
    """The second pass: collects the values of the planned bins (batches here, files in workers)."""

    def __init__(self, p: Plan, decoder: Decoder, nodata: tuple[float, ...] | None, bands: Any = None) -> None:
        self.plan = p
        self.decoder = decoder
        self.nodata = nodata
        self.bands = bands
        self.collected = Collected()
        self.count = 0

    @property
    def images(self) -> int:
        return self.count

    def update(self, pixels: Any, pixel_max: float | None, first: int, name: Callable[[int], str]) -> None:
        array = pixels.detach().cpu().numpy()
        if self.bands is not None:
            array = array[:, list(self.bands)]
        self.collected.add(array, self.plan.bins, self.nodata)
        self.count += len(array)

    def worker_job(self, mode: str, transform: Any, workers: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return collect_chunk, (mode, self.decoder, self.plan.bins, self.nodata)

    def fold(self, chunk: FileChunk, result: Any) -> None:
        self.collected.merge(result)
        self.count += len(chunk.names)

    def state_dict(self) -> dict[str, Any]:
        raise StatsFileError("--exact-percentiles' second pass is not checkpointed")

    def load_state_dict(self, state: Any, where: str) -> None:
        raise StatsFileError("--exact-percentiles' second pass is not checkpointed")


def collect_chunk(
    chunk: FileChunk, mode: str, decoder: Decoder, wanted: Wanted, nodata: tuple[float, ...] | None
) -> Collected:
    """Decode the files of ``chunk`` and keep the values of the wanted bins (runs in a worker)."""
    out = Collected()
    for name in chunk.names:
        try:
            with chunk.reader.open(name) as fp:
                pixels = decoder(io.BytesIO(fp.read()), mode)
        except BadImageError as exc:
            out.skipped.append((name, f"cannot decode: {exc}"))
            continue
        except PrepError as exc:
            raise type(exc)(f"{chunk.reader.display(name)}: {exc}") from None
        except Exception as exc:  # as in the first pass: not decodable
            out.skipped.append((name, describe_failure(exc)))
            continue
        if isinstance(pixels, ReducedImage):
            raise SourceError(
                f"{chunk.reader.display(name)}: --exact-percentiles reads images whole; this one is too large"
            )
        if isinstance(pixels, ImageArray):
            out.add(pixels.array, wanted, nodata)
    return out


def needs_second_pass(state: Any) -> bool:
    """True for a state whose percentiles come from a float-key histogram."""
    return state.wide is not None and state.wide_kind == WIDE_FLOAT
