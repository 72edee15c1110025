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


def percentile(hist: Sequence[int], q: float, pixel_max: float = EIGHT_BIT_MAX) -> float:
    """``numpy.percentile(values / pixel_max, q)`` of the data whose raw-value counts are ``hist``."""
    counts = np.asarray(hist, np.int64)
    n = int(counts.sum())
    if n == 0:
        return math.nan
    cumulative = np.cumsum(counts)
    index = (n - 1) * np.float64(np.true_divide(q, 100))  # NumPy's virtual index, same operations
    if index >= n - 1:
        return float(np.float64(order_statistic(cumulative, n - 1)) / pixel_max)
    if index < 0:
        return float(np.float64(order_statistic(cumulative, 0)) / pixel_max)
    below = math.floor(index)
    t = index - np.float64(below)
    a = np.float64(order_statistic(cumulative, below)) / pixel_max
    b = np.float64(order_statistic(cumulative, below + 1)) / pixel_max
    diff = b - a
    return float(b - diff * (1 - t) if t >= 0.5 else a + diff * t)


def percentiles(histograms: np.ndarray, q: Sequence[float], pixel_max: float = EIGHT_BIT_MAX) -> list[list[float]]:
    """Per channel (rows of ``histograms``), the percentiles ``q`` in unit scale."""
    return [[percentile(row, value, pixel_max) for value in q] for row in np.asarray(histograms)]


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
