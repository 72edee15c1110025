"""The native 16-bit paths (one pass for the histogram and per-image sums; cross sums through the
8-bit kernel by bytes) give exactly what the torch paths give."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prep.stats import kernels, reductions
from prep.stats.moments import ChannelMoments

pytestmark = pytest.mark.skipif(not kernels.AVAILABLE, reason="the native kernels were not built")
RNG = np.random.default_rng(11)


@pytest.mark.parametrize(
    ("dtype", "low", "high"), [(np.uint16, 0, 65536), (np.int16, -32768, 32768), (np.int16, 0, 900)]
)
@pytest.mark.parametrize("nodata", [None, (5.0,)])
def test_the_native_pass_equals_the_torch_pass(dtype, low, high, nodata):
    images = RNG.integers(low, high, (3, 5, 17, 9)).astype(dtype)
    images[:, :, :3] = 5 if low <= 5 < high else images[:, :, :3]
    fast = ChannelMoments(5, covariance=nodata is None, nodata=nodata).update(torch.from_numpy(images), 1)
    slow = ChannelMoments(5, covariance=nodata is None, nodata=nodata).update(
        torch.from_numpy(images.astype(np.int64)), 1
    )
    assert fast == slow  # every field, the histogram and its kind included


@pytest.mark.parametrize("dtype", [np.uint16, np.int16])
def test_byte_split_cross_sums_are_exact(dtype):
    info = np.iinfo(dtype)
    images = RNG.integers(info.min, int(info.max) + 1, (4, 6, 11, 13)).astype(dtype)
    flat = images.transpose(1, 0, 2, 3).reshape(6, -1).astype(object)
    expected = [[int((flat[i] * flat[j]).sum()) for j in range(6)] for i in range(6)]
    assert reductions.cross_sums(torch.from_numpy(images)) == expected
