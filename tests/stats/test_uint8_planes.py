"""The one-pass 8-bit kernel (prep.stats.kernels.uint8_planes) against exact NumPy integers, and
ChannelMoments' uint8 path with it equal, field for field, to the torch path without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import prep
from prep.stats import kernels
from prep.stats.moments import ChannelMoments

needs_planes = pytest.mark.skipif(not kernels.UINT8_PLANES, reason="prep._kernels was not built (no C compiler)")

# (N, C, H, W): one pixel, odd sides, planes past one 4,096-pixel chunk (4,097 and 65,535 pixels),
# 1, 3, 4 and 7 channels
SHAPES = [(1, 1, 1, 1), (3, 1, 28, 28), (2, 3, 5, 7), (2, 3, 17, 241), (1, 4, 255, 257), (5, 7, 3, 11)]


def _batch(shape: tuple[int, ...], seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)
    if x.size:
        x[0, :, :1] = 255  # the largest values, squares and products
        x.reshape(-1)[-1] = 0
    return x


def _exact(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The histogram, per-image sums and sums of squares, and cross sums of ``x`` in int64 NumPy."""
    n, c = x.shape[:2]
    wide = x.reshape(n, c, int(np.prod(x.shape[2:]))).astype(np.int64)
    hist = np.stack([np.bincount(wide[:, i].ravel(), minlength=256) for i in range(c)])
    planes = wide.transpose(1, 0, 2).reshape(c, -1)
    return hist, wide.sum(-1), (wide * wide).sum(-1), planes @ planes.T


@needs_planes
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_one_pass_gives_exact_histogram_sums_and_cross_sums(shape):
    x = _batch(shape, seed=sum(shape))
    hist, sums, squares, cross = kernels.uint8_planes(x)
    want_hist, want_sums, want_squares, want_cross = _exact(x)
    np.testing.assert_array_equal(hist, want_hist)
    np.testing.assert_array_equal(sums, want_sums)
    np.testing.assert_array_equal(squares, want_squares)
    assert cross is not None and cross.dtype == np.uint64
    np.testing.assert_array_equal(cross.astype(np.int64), np.triu(want_cross, 1))  # i < j only


@needs_planes
def test_all_255_values_give_the_largest_sums_exactly():
    x = np.full((3, 4, 300, 219), 255, np.uint8)  # 65,700-pixel planes: 17 chunks
    hist, sums, squares, cross = kernels.uint8_planes(x)
    pixels = 300 * 219
    assert (hist[:, 255] == 3 * pixels).all() and hist[:, :255].sum() == 0
    assert (sums == 255 * pixels).all() and (squares == 255 * 255 * pixels).all()
    assert cross is not None
    assert cross[0, 1] == cross[2, 3] == 3 * pixels * 255 * 255 and cross[1, 0] == 0


@needs_planes
def test_the_histogram_is_added_into_and_the_cross_sums_are_optional():
    x = _batch((2, 3, 9, 10), seed=3)
    hist = np.ones((3, 256), np.int64)
    out, _, _, cross = kernels.uint8_planes(x, hist, cross=False)
    assert out is hist and cross is None
    np.testing.assert_array_equal(hist, _exact(x)[0] + 1)


@needs_planes
def test_an_empty_batch_gives_zeros():
    hist, sums, squares, cross = kernels.uint8_planes(np.zeros((0, 3, 4, 4), np.uint8))
    assert hist.shape == (3, 256) and sums.shape == squares.shape == (0, 3)
    assert not hist.any() and cross is not None and not cross.any()
    hist, sums, _, _ = kernels.uint8_planes(np.zeros((2, 3, 0, 4), np.uint8))  # images of no pixels
    assert not hist.any() and sums.shape == (2, 3) and not sums.any()


@needs_planes
def test_the_kernel_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="uint8"):
        kernels.uint8_planes(np.zeros((1, 3, 2, 2), np.int16))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.uint8_planes(np.zeros((1, 3, 4, 4), np.uint8)[:, :, ::2])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        kernels.uint8_planes(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError, match="hist"):
        kernels.uint8_planes(np.zeros((1, 3, 2, 2), np.uint8), np.zeros((1, 256), np.int64))


def _states(batches: list[torch.Tensor], channels: int) -> ChannelMoments:
    state = ChannelMoments(channels, track_images=True, covariance=True)
    for batch in batches:
        state.update(batch)
    return state


@pytest.mark.parametrize("channels", [1, 3, 4, 7])
def test_channel_moments_are_the_same_with_and_without_the_kernel(monkeypatch, channels):
    rng = np.random.default_rng(channels)
    batches = [
        torch.from_numpy(_batch((5, channels, 31, 17), seed=1)),
        torch.from_numpy(np.full((2, channels, 3, 5), 255, np.uint8)),
        torch.from_numpy(rng.integers(0, 256, (3, channels, 70, 70), dtype=np.uint8)),  # 4,900 px: two chunks
        torch.from_numpy(np.zeros((0, channels, 4, 4), np.uint8)),
        torch.from_numpy(rng.integers(0, 256, (2, 9, 9, channels), dtype=np.uint8)).permute(0, 3, 1, 2),  # a view
    ]
    calls = []
    if kernels.UINT8_PLANES:  # the contiguous batches go through the kernel
        planes = kernels.uint8_planes
        monkeypatch.setattr(kernels, "uint8_planes", lambda *a, **k: calls.append(1) or planes(*a, **k))
    with_kernel = _states(batches, channels)
    # not the empty batch, nor the permuted view but for one channel (where it is contiguous)
    expected = (4 if channels == 1 else 3) if kernels.UINT8_PLANES else 0
    assert len(calls) == expected
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    without = _states(batches, channels)
    assert len(calls) == expected
    assert with_kernel == without  # every field: sums, histogram, cross sums, per-image stds and products
    exact = [_exact(np.ascontiguousarray(b.numpy())) for b in batches]
    assert with_kernel.histogram is not None and with_kernel.cross is not None
    np.testing.assert_array_equal(with_kernel.histogram, sum(e[0] for e in exact))
    assert with_kernel.cross == sum(e[3] for e in exact).tolist()


def test_a_npy_pass_is_the_same_without_the_kernels(tmp_path):
    """End to end: ``PREP_NO_KERNELS=1`` in another process gives the same state as this one."""
    path = tmp_path / "x.npy"
    np.save(path, _batch((11, 3, 40, 37), seed=7))
    here = prep.compute_stats(path, workers=0, device="cpu")
    script = (
        "import json, sys, prep; from prep.stats import kernels; assert not kernels.AVAILABLE; "
        "print(json.dumps(prep.compute_stats(sys.argv[1], workers=0, device='cpu').state.state_dict()))"
    )
    env = {**os.environ, "PREP_NO_KERNELS": "1"}
    out = subprocess.run([sys.executable, "-c", script, str(path)], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == json.loads(json.dumps(here.state.state_dict()))
