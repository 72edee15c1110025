"""Exact order statistics of 8-bit data from its per-channel histograms of raw values.

A histogram ``h`` of 256 counts holds every order statistic of the data: the ``k``-th smallest
value (0-based) is the smallest ``v`` with ``h[0] + ... + h[v] > k``. So percentiles, CDF gaps
and distances between two datasets come out exact, without a sample and without sorting.

:func:`percentile` reproduces ``numpy.percentile(values / pixel_max, q)`` with NumPy's default
``linear`` method bit for bit: the virtual index ``(n - 1) * (q / 100)``, its floor and fraction
``t``, and NumPy's own interpolation between the two neighbours ``a`` and ``b``::

    a + (b - a) * t      if t < 0.5
    b - (b - a) * (1 - t)  otherwise

:func:`wasserstein` is the Wasserstein-1 (earth mover's) distance between two distributions in
unit scale, ``sum_v |F_a(v) - F_b(v)| / pixel_max`` over the 255 gaps between levels, and
:func:`ks_statistic` the largest gap ``max_v |F_a(v) - F_b(v)|`` between the two CDFs
(Kolmogorov-Smirnov); both from exact integer CDFs, each rounded once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

from prep.options import DEFAULT_PERCENTILES as DEFAULT_PERCENTILES  # declared with the options
from prep.pixels import EIGHT_BIT_MAX


def check_percentiles(q: Sequence[float]) -> tuple[float, ...]:
    """``q`` as a tuple of floats in [0, 100]; ``ValueError`` naming the bad one otherwise."""
    out = []
    for value in q:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise ValueError(f"percentiles must be numbers from 0 to 100; got {value!r}")
        out.append(float(value))
    return tuple(out)


def order_statistic(cumulative: np.ndarray, k: int) -> int:
    """The ``k``-th smallest raw value (0-based) of data whose cumulative counts are ``cumulative``."""
    return int(np.searchsorted(cumulative, k, side="right"))


def _neighbours(counts: np.ndarray, q: float) -> tuple[int, int, np.float64] | None:
    """The bins of the two order statistics NumPy's ``linear`` percentile ``q`` interpolates
    between, and the fraction ``t``; None for no data."""
    n = int(counts.sum())
    if n == 0:
        return None
    cumulative = np.cumsum(counts)
    index = (n - 1) * np.float64(np.true_divide(q, 100))  # NumPy's virtual index, same operations
    if index >= n - 1:
        last = order_statistic(cumulative, n - 1)
        return last, last, np.float64(0)
    if index < 0:
        first = order_statistic(cumulative, 0)
        return first, first, np.float64(0)
    below = math.floor(index)
    return order_statistic(cumulative, below), order_statistic(cumulative, below + 1), index - np.float64(below)


def _lerp(a: np.float64, b: np.float64, t: np.float64) -> float:
    """NumPy's interpolation between neighbours, the same operations in the same order."""
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


def percentile(hist: Sequence[int], q: float, pixel_max: float = EIGHT_BIT_MAX, offset: int = 0) -> float:
    """``numpy.percentile(values / pixel_max, q)`` of the data whose raw-value counts are ``hist``
    (bin ``i`` counting the value ``i + offset``)."""
    found = _neighbours(np.asarray(hist, np.int64), q)
    if found is None:
        return math.nan
    low, high, t = found
    return _lerp(np.float64(low + offset) / pixel_max, np.float64(high + offset) / pixel_max, t)


def percentiles(
    histograms: np.ndarray, q: Sequence[float], pixel_max: float = EIGHT_BIT_MAX, offset: int = 0
) -> list[list[float]]:
    """Per channel (rows of ``histograms``), the percentiles ``q`` in unit scale."""
    return [[percentile(row, value, pixel_max, offset) for value in q] for row in np.asarray(histograms)]


def float_percentile(hist: Sequence[int], q: float, pixel_max: float = 1.0) -> tuple[float, float, float]:
    """``numpy.percentile(values / pixel_max, q)`` of float data from its float-key histogram
    (:func:`prep.stats.reductions.float_key_histogram`), as ``(estimate, low, high)``: the true
    value lies in ``[low, high]``, the interpolation of the two order statistics' bins' lower
    and upper bounds (a relative width of about 2**-7), and the estimate is its midpoint."""
    from prep.stats.reductions import float_key_bounds

    found = _neighbours(np.asarray(hist, np.int64), q)
    if found is None:
        return math.nan, math.nan, math.nan
    a, b, t = found
    lows, highs = float_key_bounds(np.array([a, b]))
    low = _lerp(np.float64(lows[0]) / pixel_max, np.float64(lows[1]) / pixel_max, t)
    high = _lerp(np.float64(highs[0]) / pixel_max, np.float64(highs[1]) / pixel_max, t)
    return (low + high) / 2, low, high


def _cdf_gaps(a: Sequence[int], b: Sequence[int]) -> list[Fraction]:
    """``F_a(v) - F_b(v)`` for v = 0..254, exact fractions (the CDFs agree at 255)."""
    a, b = [int(x) for x in a], [int(x) for x in b]
    n_a, n_b = sum(a), sum(b)
    if not n_a or not n_b:
        raise ValueError("both histograms need at least one pixel")
    gaps, cum_a, cum_b = [], 0, 0
    for x, y in zip(a[:-1], b[:-1]):
        cum_a += x
        cum_b += y
        gaps.append(Fraction(cum_a * n_b - cum_b * n_a, n_a * n_b))
    return gaps


def wasserstein(a: Sequence[int], b: Sequence[int], pixel_max: float = EIGHT_BIT_MAX) -> float:
    """Wasserstein-1 distance in unit scale between the distributions of two histograms."""
    return float(sum(abs(g) for g in _cdf_gaps(a, b)) / Fraction(pixel_max))


def ks_statistic(a: Sequence[int], b: Sequence[int]) -> float:
    """The largest gap between the two CDFs (the two-sample Kolmogorov-Smirnov statistic)."""
    return float(max((abs(g) for g in _cdf_gaps(a, b)), default=Fraction(0)))
