"""Masked reductions: only the pixels of a mask (a foreground, a label's region) are measured."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

from prep.stats.moments import ChannelMoments

RNG = np.random.default_rng(7)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8])
def test_integer_data_in_a_mask_is_exact(dtype):
    low = -1024 if dtype == np.int16 else 0
    images = RNG.integers(low, 255 if dtype == np.uint8 else 3000, (4, 2, 9, 11)).astype(dtype)
    mask = RNG.random((4, 9, 11)) < 0.4
    state = ChannelMoments(2).update(torch.from_numpy(images), 1, torch.from_numpy(mask))
    summary = state.compute()
    for c in range(2):
        values = [int(v) for v in images[:, c][mask]]
        n, s, q = len(values), sum(values), sum(v * v for v in values)
        assert summary.count[c] == n and summary.mean[c] == float(Fraction(s, n))
        assert summary.std[c] == pytest.approx(float(Fraction(n * q - s * s, n * n)) ** 0.5, rel=1e-15)
        assert (summary.min[c], summary.max[c]) == (min(values), max(values))
    assert state.wide.sum(1).tolist() == [int(mask.sum())] * 2


def test_float_data_in_a_mask_leaves_out_nan_only_inside_it():
    images = RNG.normal(0, 1, (3, 1, 8, 8)).astype(np.float32)
    images[0, 0, 0, :4] = np.nan
    mask = np.zeros((3, 8, 8), bool)
    mask[:, :4, :4] = True
    summary = ChannelMoments(1).update(torch.from_numpy(images), 1, torch.from_numpy(mask)).compute()
    inside = images[:, 0][mask]
    assert summary.nonfinite == (int(np.isnan(inside).sum()),) == (4,)
    assert summary.mean[0] == pytest.approx(float(np.nanmean(inside.astype(np.float64))), rel=1e-12)


def test_an_empty_mask_counts_the_image_and_no_pixel():
    state = ChannelMoments(1).update_image(np.ones((1, 4, 4), np.int16), 1, np.zeros((4, 4), bool))
    assert state.images == 1 and state.count.tolist() == [0] and state.image_std_count.tolist() == [0]


def test_masked_parts_merge_into_the_whole():
    images = RNG.integers(0, 4000, (6, 3, 5, 7)).astype(np.uint16)
    mask = RNG.random((6, 5, 7)) < 0.5
    whole = ChannelMoments(3).update(torch.from_numpy(images), 1, torch.from_numpy(mask))
    parts = [ChannelMoments(3).update_image(images[i], 1, mask[i]) for i in range(6)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    assert merged.compute().mean == whole.compute().mean and np.array_equal(merged.wide, whole.wide)
