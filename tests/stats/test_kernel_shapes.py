"""The native histogram kernel refuses shapes whose channels it would merge."""

from __future__ import annotations

import numpy as np
import pytest

from prep.stats import kernels


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 4, 4, 1), (5,), (2, 2, 2, 2, 3)])
def test_histogram_interleaved_refuses_what_is_not_one_image(shape):
    with pytest.raises(ValueError, match=r"expected \(H, W\) or \(H, W, C\)"):
        kernels.histogram_interleaved(np.zeros(shape, np.uint8))


@pytest.mark.skipif(not kernels.AVAILABLE, reason="the native kernels are not built")
def test_histogram_interleaved_counts_an_image_per_channel():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    hist = kernels.histogram_interleaved(rgb)
    assert hist.shape == (3, 256)
    for c in range(3):
        np.testing.assert_array_equal(hist[c], np.bincount(rgb[..., c].ravel(), minlength=256))
    grey = kernels.histogram_interleaved(rgb[..., 0].copy())
    np.testing.assert_array_equal(grey[0], hist[0])
