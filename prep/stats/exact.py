"""Exact integer arithmetic of :class:`~prep.stats.moments.ChannelMoments`' state: moments from
exact sums (each result rounded once), per-image products, and cross sums brought to one unit."""

from __future__ import annotations

import math

import numpy as np

from prep.pixels import EIGHT_BIT_MAX, SIXTEEN_BIT_MAX


def exact_moments(counts, totals, totals_sq, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and m2 per channel in unit scale from exact integer sums, each rounded once.

    ``mean = S / (scale n)`` and ``m2 = (n Q - S**2) / (scale**2 n)``: Python integer arithmetic is
    exact at any size and ``int / int`` is correctly rounded (an integer-valued ``scale`` is used
    as an integer).
    """
    scale = int(scale) if float(scale).is_integer() else scale
    means = [s / (n * scale) if n else 0.0 for n, s in zip(counts, totals)]
    m2s = [(n * q - s * s) / (n * scale * scale) if n else 0.0 for n, s, q in zip(counts, totals, totals_sq)]
    return np.array(counts, np.int64), np.array(means), np.array(m2s)


def exact_mean_var(counts, totals, totals_sq, scale: int = EIGHT_BIT_MAX) -> tuple[np.ndarray, np.ndarray]:
    """``mean = S / (scale n)`` and ``var = (n Q - S**2) / (scale n)**2``, each an exact fraction
    rounded once (``scale`` 255 for 8-bit data in unit scale, 1 for the data's own values)."""
    means = [s / (n * scale) if n else math.nan for n, s in zip(counts, totals)]
    variances = [
        (n * q - s * s) / (n * n * scale * scale) if n else math.nan for n, s, q in zip(counts, totals, totals_sq)
    ]
    return np.array(means), np.array(variances)


def column_totals(values: np.ndarray) -> list[int]:
    """Exact per-column totals of non-negative int64 ``(N, C)`` values as Python ints."""
    if values.size == 0 or int(values.max()) < 2**63 // max(1, len(values)):  # int64 cannot overflow
        return [int(v) for v in values.sum(0)]
    return [sum(int(v) for v in column) for column in values.T]


def image_products(n_img, s_img, q_img) -> list[list[int]]:
    """Per channel, exact sums over images of :data:`IMAGE_MOMENTS` (Python integers)."""
    n, s, q = (np.asarray(a).astype(np.int64).astype(object) for a in (n_img, s_img, q_img))
    columns = (n, s, q, n * n, n * s, s * s, n * q, s * q, q * q)
    return [[int(v) for v in row] for row in zip(*(c.sum(0) for c in columns))]


def image_products_exact(n: list[list[int]], s: list[list[int]], q: list[list[int]]) -> list[list[int]]:
    """:func:`image_products` of per-channel rows of Python integers ``[[n of image 0, ...], ...]``
    (the totals of a whole volume can pass int64: its sum of squares)."""
    out = []
    for n_c, s_c, q_c in zip(n, s, q):
        columns = [(a, b, c, a * a, a * b, b * b, a * c, b * c, c * c) for a, b, c in zip(n_c, s_c, q_c)]
        out.append([sum(values) for values in zip(*columns)])
    return out


def cross_in(cross: list[list[int]] | None, scale: float, target: float) -> list[list[int]] | None:
    """Raw cross sums of data whose raw maximum is ``scale`` in the units of ``target``.

    8-bit values become 16-bit ones exactly (``v / 255 = 257 v / 65535``), so their products
    scale by ``257**2``; an empty state (``scale`` 0) has nothing to convert. Any other pair has
    no exact common unit: None (the state then has no covariance).
    """
    if cross is None or scale == target or scale == 0:
        return cross
    if (scale, target) == (EIGHT_BIT_MAX, SIXTEEN_BIT_MAX):
        factor = (SIXTEEN_BIT_MAX // EIGHT_BIT_MAX) ** 2
        return [[v * factor for v in row] for row in cross]
    return None


def added(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    return [[x + y for x, y in zip(row_a, row_b)] for row_a, row_b in zip(a, b)]
