"""Confidence intervals of a sampled pass (``--sample``): how far the sample's mean and std may
lie from the whole dataset's, from the exact per-image sums the state keeps (``image_moments``)."""

from __future__ import annotations

import math
from fractions import Fraction

Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def sample_intervals(moments: list[list[int]], sampled: int, total: int, pixel_max: float) -> dict[str, list[float]]:
    """Half-widths of 95% confidence intervals of each channel's mean and std (unit scale) from a
    simple random sample of ``sampled`` of ``total`` images, by the ratio estimator over images.

    With per-image pixel counts ``n_i``, raw sums ``s_i`` and sums of squares ``q_i``, the
    estimates are ``mu = S / N``, ``nu = Q / N`` and ``sigma = sqrt(nu - mu**2)``. Linearized,
    image i's residual is ``b_i = s_i - mu n_i`` for the mean and ``(a_i - 2 mu b_i) / (2 sigma)``
    with ``a_i = q_i - nu n_i`` for the std; an estimate's variance is
    ``(1 - m/M) / (m (m - 1) nbar**2) * sum(residual_i**2)`` with ``nbar = N / m``, and the
    half-width is 1.96 standard errors. The sums of products are exact integers from the state
    and are combined as exact fractions, so no cancellation loses digits.
    """
    out: dict[str, list[float]] = {"mean": [], "std": []}
    m = sampled
    for big_n, big_s, big_q, nn, ns, ss, nq, sq, qq in moments:
        if m < 2 or big_n == 0:
            out["mean"].append(math.nan)
            out["std"].append(math.nan)
            continue
        mu, nu = Fraction(big_s, big_n), Fraction(big_q, big_n)
        var = nu - mu * mu
        sum_b2 = ss - 2 * mu * ns + mu * mu * nn
        sum_a2 = qq - 2 * nu * nq + nu * nu * nn
        sum_ab = sq - nu * ns - mu * nq + mu * nu * nn
        factor = (1 - Fraction(m, total)) / (m * (m - 1) * Fraction(big_n, m) ** 2)
        var_mean = factor * sum_b2
        var_std = factor * (sum_a2 - 4 * mu * sum_ab + 4 * mu * mu * sum_b2) / (4 * var) if var else Fraction(0)
        out["mean"].append(Z95 * math.sqrt(max(float(var_mean), 0.0)) / pixel_max)
        out["std"].append(Z95 * math.sqrt(max(float(var_std), 0.0)) / pixel_max)
    return out
