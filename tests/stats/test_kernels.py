"""prep.stats.kernels (the optional native histograms and cross sums) against exact NumPy integers,
and the same numbers through PIL and torch when the kernels are not there."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

import prep
import prep.decode.decoders
from prep.decode.decoders import PILDecoder, make_decoder, reduced_tensor
from prep.stats import kernels

needs_kernels = pytest.mark.skipif(not kernels.AVAILABLE, reason="prep._kernels was not built (no C compiler)")

SIZES = [(1, 1), (3, 5), (7, 1), (255, 257), (300, 219)]  # 65,700 pixels: past one 65,536-pixel block


def _image(h: int, w: int, c: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)
    x.reshape(-1, c)[: min(x.size // c, 70_000)] = 255  # the largest products, across a block edge
    x.reshape(-1, c)[-1] = np.arange(c, dtype=np.uint8)
    return x


@needs_kernels
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_histogram_interleaved_counts_every_value_exactly(size, channels):
    x = _image(*size, channels, seed=size[0])
    hist = kernels.histogram_interleaved(x if channels == 3 else x[..., 0].copy())
    for c in range(channels):
        np.testing.assert_array_equal(hist[c], np.bincount(x[..., c].ravel(), minlength=256))


@needs_kernels
@pytest.mark.parametrize("size", SIZES)
def test_cross_sums_are_exact_integers(size):
    x = _image(*size, 3, seed=size[1])
    wide = x.reshape(-1, 3).astype(np.int64)
    exact = wide.T @ wide
    got = kernels.cross_interleaved(x)
    assert [got[0][1], got[0][2], got[1][2]] == [exact[0, 1], exact[0, 2], exact[1, 2]]


needs_per_image = pytest.mark.skipif(not kernels.PER_IMAGE, reason="prep._kernels was not built (no C compiler)")


@needs_per_image
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_reduce8_gives_the_histogram_and_every_cross_sum_exactly(size, channels):
    x = _image(*size, channels, seed=size[0] + channels)
    for pixels in (x, x.tobytes(), memoryview(x.tobytes())):  # an array or PIL's bytes
        counts, cross, moments = kernels.reduce8(pixels, channels, True)
        wide = x.reshape(-1, channels).astype(np.int64)
        for c in range(channels):
            np.testing.assert_array_equal(counts[c * 256 : (c + 1) * 256], np.bincount(wide[:, c], minlength=256))
        np.testing.assert_array_equal(cross, wide.T @ wide)  # the diagonal too
        np.testing.assert_array_equal(moments, np.stack([[len(wide)] * channels, wide.sum(0), (wide**2).sum(0)], 1))
        assert kernels.reduce8(pixels, channels, False)[1] is None
    counts, cross, moments = kernels.reduce8(b"", channels, True)  # an empty image
    assert not counts.any() and not cross.any() and not moments.any()


@needs_per_image
@pytest.mark.parametrize("covariance", [False, True])
def test_a_chunk_folds_from_the_kernels_moments_as_from_every_histogram(covariance, tmp_path):
    """The fold from per-image moments and one summed histogram (the kernels) and the fold from
    every image's histogram (rows asked for, or images without moments) give one state."""
    from prep.engine.workers import ChunkResult, _fold_histograms
    from prep.sources.base import FirstFolder
    from prep.stats.moments import ChannelMoments

    images = [_image(5 + i, 3 + 2 * i, 3, i) for i in range(7)]
    images.append(np.repeat(_image(4, 6, 1, 7), 3, axis=2))  # a grey one
    items = []
    for i, x in enumerate(images):
        reduced = reduced_tensor(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1))), covariance)
        assert reduced.moments is not None
        items.append((-1, f"{'ab'[i % 2]}/{i}.png", reduced, 0))
    plain = [(s, n, prep.decode.decoders.EightBitHistogram(p.counts, p.size, p.cross), d) for s, n, p, d in items]
    states = []
    for chosen in (items, plain):
        result = ChunkResult(ChannelMoments(3, True, covariance))
        _fold_histograms(result, chosen, 3, FirstFolder())
        states.append((result.state.state_dict(), {k: v.state_dict() for k, v in result.classes.items()}))
    assert states[0] == states[1] and set(states[0][1]) == {"a", "b"}


@needs_per_image
def test_reduce8_refuses_what_it_cannot_read():
    with pytest.raises(ValueError, match="1 or 3"):
        kernels.reduce8(bytes(8), 4, False)
    with pytest.raises(ValueError, match="whole number of pixels"):
        kernels.reduce8(bytes(8), 3, False)
    with pytest.raises(ValueError, match="whole number of pixels"):
        kernels.reduce8(np.zeros(3, np.int16), 3, False)
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.reduce8(np.zeros((4, 4, 3), np.uint8)[:, ::2], 3, False)
    moments = np.zeros((3, 3), np.int64)
    with pytest.raises(ValueError, match="counts"):
        kernels._API.reduce8(bytes(3), 3, np.zeros(3 * 256, np.int32), None, moments)
    with pytest.raises(ValueError, match="cross"):
        kernels._API.reduce8(bytes(3), 3, np.zeros(3 * 256, np.int64), np.zeros(4, np.int64), moments)
    with pytest.raises(ValueError, match="moments"):
        kernels._API.reduce8(bytes(3), 3, np.zeros(3 * 256, np.int64), None, np.zeros(3, np.int64))
    with pytest.raises(TypeError):
        kernels._API.reduce8(bytes(3), 3)


@needs_kernels
def test_kernels_refuse_what_they_cannot_read():
    with pytest.raises(ValueError, match="uint8"):
        kernels.histogram_interleaved(np.zeros((2, 2, 3), np.int16))
    with pytest.raises(ValueError, match="C-contiguous"):
        kernels.histogram_interleaved(np.zeros((4, 4, 3), np.uint8)[:, ::2])
    with pytest.raises(ValueError, match="1 or 3 channels"):
        kernels.histogram_interleaved(np.zeros((2, 2, 4), np.uint8))
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        kernels.cross_interleaved(np.zeros((2, 2), np.uint8))


@pytest.mark.parametrize("covariance", [False, True])
def test_with_and_without_kernels_the_reductions_agree(monkeypatch, covariance):
    """The kernels are an optimisation only: PIL and torch give the same integers."""
    images = [torch.from_numpy(np.ascontiguousarray(_image(h, w, 3, h).transpose(2, 0, 1))) for h, w in SIZES]
    images.append(torch.from_numpy(_image(6, 4, 1, 0).transpose(2, 0, 1).copy()).expand(3, 6, 4))
    with_kernels = [reduced_tensor(x, covariance) for x in images]
    jpeg = io.BytesIO()
    Image.fromarray(_image(40, 30, 3, 9)).save(jpeg, "JPEG")
    grey = io.BytesIO()
    Image.fromarray(_image(40, 30, 1, 9)[..., 0]).save(grey, "PNG")
    pil_with = [PILDecoder(covariance)(io.BytesIO(f.getvalue()), m) for f in (jpeg, grey) for m in ("RGB", "L")]
    monkeypatch.setattr(kernels, "PER_IMAGE", False)  # the ctypes kernels, one call per statistic
    assert [reduced_tensor(x, covariance) for x in images] == with_kernels
    assert [PILDecoder(covariance)(io.BytesIO(f.getvalue()), m) for f in (jpeg, grey) for m in ("RGB", "L")] == pil_with
    monkeypatch.setattr(kernels, "AVAILABLE", False)  # no kernels at all: PIL and torch
    assert [reduced_tensor(x, covariance) for x in images] == with_kernels
    assert [PILDecoder(covariance)(io.BytesIO(f.getvalue()), m) for f in (jpeg, grey) for m in ("RGB", "L")] == pil_with


def test_auto_is_pil_where_the_kernels_are_missing(monkeypatch, tmp_path):
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    assert isinstance(make_decoder("auto"), PILDecoder)
    assert not isinstance(make_decoder("torchvision"), PILDecoder)
    Image.fromarray(_image(20, 30, 3, 1)).save(tmp_path / "a.jpg")
    stats = prep.compute_stats(tmp_path, decoder="auto", workers=0)
    assert stats.decoder == "auto" and stats.state == prep.compute_stats(tmp_path, decoder="pil", workers=0).state


@needs_kernels
def test_cross_batch_sums_every_pair_over_the_batch():
    batch = np.random.default_rng(4).integers(0, 256, (6, 3, 300, 230), dtype=np.uint8)  # 69,000 px planes
    batch[:, :, :100] = 255
    wide = batch.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.int64)
    exact = wide @ wide.T
    got = np.array(kernels.cross_batch(batch))
    np.testing.assert_array_equal(got - np.diag(np.diag(got)), exact - np.diag(np.diag(exact)))


@pytest.mark.parametrize("channels", [1, 3])
def test_batch_covariance_is_the_same_with_and_without_kernels(monkeypatch, channels):
    from prep.stats.moments import ChannelMoments

    batch = torch.from_numpy(np.random.default_rng(5).integers(0, 256, (9, channels, 31, 17), dtype=np.uint8))
    with_kernels = ChannelMoments(channels, covariance=True).update(batch).cross
    monkeypatch.setattr(kernels, "AVAILABLE", False)
    assert ChannelMoments(channels, covariance=True).update(batch).cross == with_kernels
    wide = batch.numpy().transpose(1, 0, 2, 3).reshape(channels, -1).astype(np.int64)
    assert [row[:channels] for row in with_kernels] == (wide @ wide.T).tolist()


def test_a_batch_is_refused_where_an_image_is_expected():
    if not kernels.AVAILABLE:
        pytest.skip("the native kernels were not built")
    batch = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match=r"expected \(H, W\) or \(H, W, C\)"):
        kernels.histogram_interleaved(batch)
    assert kernels.histogram_interleaved(batch[0]).shape == (3, 256)
