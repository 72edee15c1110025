"""ChannelMoments against float64 NumPy and exact integer references; merge algebra; the exact colour
covariance (--covariance) from its cross sums."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import prep
from helpers import assert_close, exact_stats, make_cifar10, make_folder, pil_pixels, reference_stats
from prep.errors import StatsFileError
from prep.stats import reductions
from prep.stats.moments import ChannelMoments
from prep.stats.reductions import histogram_range, uint8_histogram, uint8_sums


def _images(seed=0, n=37, c=3, h=9, w=11, dtype=np.uint8, high=256):
    rng = np.random.default_rng(seed)
    return rng.integers(0, high, (n, c, h, w)).astype(dtype)


def _pixels(images):  # (N, C, H, W) -> (P, C)
    return images.transpose(0, 2, 3, 1).reshape(-1, images.shape[1])


def test_uint8_matches_numpy_and_exact_integers():
    images = _images()
    s = ChannelMoments(3).update(torch.from_numpy(images)).compute()
    ref, exact = reference_stats(_pixels(images)), exact_stats(_pixels(images))
    assert s.count == (images.shape[0] * 9 * 11,) * 3
    assert_close(s.mean, ref["mean"])
    assert_close(s.std, ref["std"])
    assert list(s.mean) == exact["mean"]  # correctly rounded from exact integer sums
    assert_close(np.square(s.std), exact["var"], rel=1e-15)
    assert_close(s.min, ref["min"], rel=0)
    assert_close(s.max, ref["max"], rel=0)
    assert s.images == images.shape[0]
    assert s.pixel_max == 255.0


def test_per_image_std_mean_is_the_mean_of_each_images_population_std():
    images = _images(n=5)
    x = images.astype(np.float64) / 255
    expected = x.reshape(5, 3, -1).std(-1).mean(0)
    assert_close(ChannelMoments(3).update(torch.from_numpy(images)).compute().per_image_std_mean, expected, rel=1e-12)


@pytest.mark.parametrize("method", ["auto", "float32-groups", "float64"])
@pytest.mark.parametrize("shape", [(4, 2, 28, 28), (3, 3, 1, 1), (2, 1, 17, 13), (2, 3, 512, 512)])
def test_uint8_image_sums_are_exact_integers(shape, method, device):
    images = np.random.default_rng(1).integers(0, 256, shape).astype(np.uint8)
    images[0, 0] = 255  # the worst case for float32 partial sums
    batch = torch.from_numpy(images).to(device)
    n, total, total_sq = uint8_sums(batch, method=method)
    vmin, vmax = histogram_range(uint8_histogram(batch))
    x = images.reshape(shape[0], shape[1], -1).astype(np.int64)
    np.testing.assert_array_equal(total, x.sum(-1))
    np.testing.assert_array_equal(total_sq, (x * x).sum(-1))
    np.testing.assert_array_equal(n, np.full(shape[:2], x.shape[-1]))
    np.testing.assert_array_equal(vmin, x.min((0, 2)))
    np.testing.assert_array_equal(vmax, x.max((0, 2)))


def test_histogram_and_tensor_updates_agree():
    images = _images(seed=9)
    hist = np.stack([[np.bincount(ch.ravel(), minlength=256) for ch in img] for img in images])
    a = ChannelMoments(3).update_histograms(hist)
    b = ChannelMoments(3).update(torch.from_numpy(images))
    assert a.compute() == b.compute()


@pytest.mark.parametrize("batch", [1, 2, 7, 36, 100])
def test_batch_size_does_not_change_anything(batch):
    images = _images(seed=4)
    whole = ChannelMoments(3).update(torch.from_numpy(images))
    parts = ChannelMoments(3)
    for i in range(0, len(images), batch):
        parts.update(torch.from_numpy(images[i : i + batch]))
    got, want = parts.compute(), whole.compute()
    for name in ("count", "mean", "std", "min", "max", "images"):  # 8-bit: exact, bit for bit
        assert getattr(got, name) == getattr(want, name), name
    assert_close(got.per_image_std_mean, want.per_image_std_mean, rel=1e-12)


def test_sixteen_bit_and_float_data_use_chan_merges_to_1e12():
    rng = np.random.default_rng(5)
    images = rng.integers(0, 65536, (20, 1, 16, 16)).astype(np.int32)
    acc = ChannelMoments(1)
    for i in range(0, 20, 3):
        acc.update(torch.from_numpy(images[i : i + 3]), pixel_max=65535)
    s = acc.compute()
    x = images.astype(np.float64).ravel() / 65535
    assert acc.exact_sum is None and s.pixel_max == 65535
    assert_close(s.mean, [x.mean()])
    assert_close(s.std, [x.std()])
    assert_close(s.max, [x.max()])


def test_nonfinite_values_are_counted_and_left_out():
    x = torch.tensor([[[[0.25, float("nan")], [0.75, float("inf")]]]], dtype=torch.float32)
    s = ChannelMoments(1).update(x).compute()
    assert s.nonfinite == (2,)
    assert s.count == (2,)
    assert s.mean == (0.5,) and s.std == (0.25,)


def test_merge_of_halves_equals_whole_and_leaves_inputs_alone():
    images = _images(seed=6)
    a = ChannelMoments(3).update(torch.from_numpy(images[:10]))
    b = ChannelMoments(3).update(torch.from_numpy(images[10:]))
    a_before = a.state_dict()
    merged = a.merge(b)
    whole = ChannelMoments(3).update(torch.from_numpy(images))
    assert a.state_dict() == a_before
    assert merged.compute().std == whole.compute().std
    assert_close(merged.mean, whole.mean, rel=1e-14)
    assert merged.exact_sum == whole.exact_sum and merged.exact_sumsq == whole.exact_sumsq


def test_state_dict_round_trip_is_exact():
    acc = ChannelMoments(3).update(torch.from_numpy(_images(seed=7)))
    again = ChannelMoments.from_state_dict(acc.state_dict())
    assert again == acc and again.compute() == acc.compute()


@pytest.mark.parametrize(
    "field,value,message",
    [
        ("m2", [-1.0, 0.0, 0.0], "state.m2"),
        ("count", [1, 2], "state.count"),
        ("version", 99, "state.version"),
        ("exact_sum", [10**12, 0, 0], "state.exact_sum"),
        ("mean", ["x", 0.0, 0.0], "state.mean"),
    ],
)
def test_from_state_dict_names_the_bad_field(field, value, message):
    state = ChannelMoments(3).update(torch.from_numpy(_images())).state_dict()
    state[field] = value
    with pytest.raises(StatsFileError, match=message):
        ChannelMoments.from_state_dict(state)


def test_channel_mismatch_is_refused():
    with pytest.raises(ValueError, match="expected a batch"):
        ChannelMoments(1).update(torch.zeros(2, 3, 4, 4, dtype=torch.uint8))


# ------------------------------------------------------------------ properties
_batches = st.lists(st.lists(st.integers(0, 255), min_size=1, max_size=12), min_size=1, max_size=8)


@settings(max_examples=60, deadline=None)
@given(_batches, st.randoms(use_true_random=False))
def test_any_split_and_merge_order_gives_the_same_statistics(batches, rnd):
    parts = [ChannelMoments(1).update(torch.tensor(b, dtype=torch.uint8).view(1, 1, 1, -1)) for b in batches]
    rnd.shuffle(parts)
    merged = ChannelMoments(1)
    for p in parts:
        merged = merged.merge(p) if rnd.random() < 0.5 else p.merge(merged)
    pixels = np.concatenate([np.array(b) for b in batches]).astype(np.float64) / 255
    s = merged.compute()
    assert_close(s.mean, [pixels.mean()], abs_=1e-15)
    assert_close(s.std, [pixels.std()], rel=1e-12, abs_=1e-15)
    assert s.count == (len(pixels),)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40), st.integers(1, 40))
def test_float_chan_merge_any_split(values, step):
    parts = [values[i : i + step] for i in range(0, len(values), step)]
    acc = ChannelMoments(1)
    for p in parts:
        acc = acc.merge(ChannelMoments(1).update(torch.tensor(p, dtype=torch.float64).view(1, 1, 1, -1)))
    x = np.array(values)
    s = acc.compute()
    scale = max(1.0, np.abs(x).max())
    assert math.isclose(s.mean[0], x.mean(), rel_tol=1e-12, abs_tol=1e-12 * scale)
    assert math.isclose(s.std[0], x.std(), rel_tol=1e-9, abs_tol=1e-9 * scale)


@settings(max_examples=30, deadline=None)
@given(_batches)
def test_merging_with_an_empty_state_is_the_identity(batches):
    acc = ChannelMoments(1)
    for b in batches:
        acc.update(torch.tensor(b, dtype=torch.uint8).view(1, 1, 1, -1))
    assert acc.merge(ChannelMoments(1)) == acc
    assert ChannelMoments(1).merge(acc) == acc


def test_sixteen_bit_data_is_reduced_from_exact_integer_sums():
    constant = [Image.fromarray(np.full((5, 7), 1800, np.uint16)), Image.fromarray(np.full((3, 4), 1800, np.uint16))]
    with pytest.warns(prep.PrepWarning, match="zero variance"):
        stats = prep.compute_stats(constant)
    assert stats.std == (0.0,) and stats.mean == (1800 / 65535,)
    with pytest.raises(prep.DegenerateStatsError):
        stats.normalize()
    values = np.random.default_rng(12).integers(0, 65536, (3, 9, 11)).astype(np.uint16)
    got = prep.compute_stats([Image.fromarray(v) for v in values], mode="L")
    x = [int(v) for v in values.ravel()]
    n, s, q = len(x), sum(x), sum(v * v for v in x)
    assert got.mean == (s / (n * 65535),)  # the exact fraction, rounded once
    assert got.std[0] == pytest.approx(((n * q - s * s) / (n * n * 65535**2)) ** 0.5, rel=1e-15)


@pytest.mark.parametrize(
    ("dtype", "high", "pixel_max"),
    [(np.uint8, 256, None), (np.int32, 65536, 65535.0), (np.float32, None, 1.0)],
)
def test_large_images_reduced_in_slices_give_the_unsliced_numbers(monkeypatch, dtype, high, pixel_max, device):
    rng = np.random.default_rng(5)
    images = rng.integers(0, high, (2, 3, 37, 41)) if high else rng.random((2, 3, 37, 41))
    images = images.astype(dtype)
    if high is None:
        images[0, 1, 3, 4] = np.nan  # non-finite values are counted in every slice
    batch = torch.from_numpy(images).to(device)
    whole = ChannelMoments(3).update(batch, pixel_max)
    monkeypatch.setattr(reductions, "SLICE_ELEMENTS", 300)  # many slices, widths not dividing 37 * 41
    sliced = ChannelMoments(3).update(batch, pixel_max)
    a, b = whole.compute(), sliced.compute()
    assert a.count == b.count and a.min == b.min and a.max == b.max and a.nonfinite == b.nonfinite
    rel = 0 if high else 1e-12  # integer sums are exact in any order
    assert_close(b.mean, a.mean, rel=rel)
    assert_close(b.std, a.std, rel=rel)
    assert_close(b.per_image_std_mean, a.per_image_std_mean, rel=1e-12)


@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.float32])
def test_grey_broadcast_to_rgb_is_reduced_once_and_equals_the_copied_image(dtype):
    grey = np.random.default_rng(2).integers(0, 250, (1, 23, 19)).astype(dtype)
    pixel_max = {np.uint8: 255.0, np.int32: 65535.0, np.float32: 255.0}[dtype]
    copied = ChannelMoments(3).update_image(np.repeat(grey, 3, axis=0), pixel_max)
    broadcast = ChannelMoments(3).update_image(grey, pixel_max)  # (1, H, W) read as RGB
    assert broadcast == copied
    assert broadcast.compute().images == 1


@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux's /proc peak-RSS reset")
def test_a_large_sixteen_bit_grey_image_in_rgb_needs_a_few_bytes_per_pixel(tmp_path):
    """Peak resident memory of decoding and reducing one 16-bit 4000x4000 PNG in RGB mode."""
    path = tmp_path / "big.png"
    side = 4000
    ramp = (np.arange(side * side, dtype=np.uint32) % 65536).astype(np.uint16).reshape(side, side)
    Image.fromarray(ramp).save(path, compress_level=1)
    Image.fromarray(ramp[:64, :64]).save(tmp_path / "small.png")
    code = f"""
from prep.decode.decoders import PILDecoder
from prep.sources.base import FileChunk, FolderReader
from prep.engine.workers import reduce_chunk

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

reader = FolderReader({str(tmp_path)!r})
reduce_chunk(FileChunk(reader, ("small.png",)), "RGB", PILDecoder())  # imports and first allocations
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak resident size to the current one
before = status("VmRSS")
state = reduce_chunk(FileChunk(reader, ("big.png",)), "RGB", PILDecoder()).state
print((status("VmHWM") - before) / {side * side}, state.compute().mean[0])
"""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    per_pixel, mean = map(float, out.stdout.split())
    assert mean == pytest.approx(ramp.astype(np.float64).mean() / 65535, rel=1e-12)
    assert per_pixel < 16, f"{per_pixel:.1f} bytes per pixel"  # 60 when RGB was an int64 copy


def test_per_image_std_mean_is_exact_in_any_grouping():
    images = torch.from_numpy(np.random.default_rng(8).integers(0, 256, (50, 3, 5, 6), dtype=np.uint8))
    whole = ChannelMoments(3).update(images).compute()
    for step in (1, 7, 13):
        acc = ChannelMoments(3)
        for i in range(0, 50, step):
            acc = acc.merge(ChannelMoments(3).update(images[i : i + step]))
        assert acc.compute() == whole


def test_version_1_states_are_read(tmp_path):
    state = ChannelMoments(1).update(torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)).state_dict()
    old = {**state, "version": 1, "image_std_sum": [0.2887]}
    del old["histogram"]
    loaded = ChannelMoments.from_state_dict(old)
    assert loaded.histogram is None and loaded.compute().per_image_std_mean == pytest.approx((0.2887,), rel=1e-12)


# ------------------------------------------------------------------ covariance (--covariance)


def _exact_cov(pixels: np.ndarray) -> np.ndarray:
    """Exact covariance (ddof=0, unit scale) of raw (P, C) uint8 pixels, each entry rounded once."""
    from fractions import Fraction

    x = pixels.astype(object)
    n, c = len(pixels), pixels.shape[1]
    s = x.sum(0)
    return np.array(
        [
            [float(Fraction(n * (x[:, i] * x[:, j]).sum() - s[i] * s[j], n * n * 255**2)) for j in range(c)]
            for i in range(c)
        ]
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_covariance_is_exact(tmp_path, workers):
    root = make_folder(tmp_path / "data")
    stats = prep.compute_stats(root, covariance=True, workers=workers)
    pixels = np.concatenate([pil_pixels(p) for p in sorted(root.rglob("*")) if p.is_file()]).astype(np.uint8)
    assert stats.covariance == _exact_cov(pixels).tolist()
    np.testing.assert_allclose(stats.covariance, np.cov(pixels.T / 255, bias=True), rtol=1e-12, atol=1e-15)
    assert [stats.covariance[i][i] for i in range(3)] == pytest.approx([s * s for s in stats.std], rel=1e-12)


def test_batch_covariance_is_exact_and_merges(tmp_path):
    images = make_cifar10(tmp_path)["train"]
    stats = prep.compute_stats("cifar10", root=tmp_path, covariance=True, batch_size=7)
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, 3)
    assert stats.covariance == _exact_cov(pixels).tolist()
    parts = [prep.compute_stats("cifar10", root=tmp_path, covariance=True, shard=f"{i}/3") for i in range(3)]
    assert prep.merge_stats(parts).covariance == stats.covariance


def test_sixteen_bit_and_grey_as_rgb_covariance(tmp_path):
    grey = np.random.default_rng(3).integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.png")
    stats = prep.compute_stats(tmp_path, covariance=True, workers=0)  # one grey channel read as RGB
    var = (grey.astype(np.float64) / 65535).var()
    np.testing.assert_allclose(stats.covariance, np.full((3, 3), var), rtol=1e-9)
    assert stats.pca["eigval"][0] == pytest.approx(3 * var, rel=1e-9)
    float_state = ChannelMoments(3, covariance=True).update(torch.rand(2, 3, 4, 4))
    assert float_state.cross is None  # float data: no exact cross sums, no covariance


def _unit_pixels(path, mode: str) -> np.ndarray:
    """(P, C) float64 unit-scale pixels of an image file by prep's rule: 8-bit / 255, 16-bit / 65535."""
    with Image.open(path) as img:
        if img.mode in ("I;16", "I"):
            grey = np.asarray(img, dtype=np.float64) / 65535
            return np.repeat(grey.reshape(-1, 1), 1 if mode == "L" else 3, axis=1)
        arr = np.asarray(img.convert(mode), dtype=np.float64) / 255
        return arr.reshape(-1, 1 if mode == "L" else 3)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("workers", [0, 2])
def test_a_folder_mixing_8_and_16_bit_images_has_the_covariance_of_all_its_pixels(tmp_path, mode, workers):
    rng = np.random.default_rng(11)
    Image.fromarray(rng.integers(0, 65536, (40, 30)).astype(np.uint16)).save(tmp_path / "a-sixteen.png")
    Image.fromarray(rng.integers(0, 256, (25, 20, 3), dtype=np.uint8)).save(tmp_path / "b-eight.png")
    Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).save(tmp_path / "c-eight.jpg", quality=90)
    stats = prep.compute_stats(tmp_path, mode=mode, workers=workers)
    pixels = np.concatenate([_unit_pixels(p, mode) for p in sorted(tmp_path.iterdir())])
    want = np.atleast_2d(np.cov(pixels.T, bias=True))
    np.testing.assert_allclose(stats.covariance, want, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(stats.std, pixels.std(0), rtol=1e-9)
    assert np.linalg.eigvalsh(np.array(stats.covariance)).min() > -1e-12
    if mode == "RGB":  # the lighting constants come from the same covariance
        np.testing.assert_allclose(sorted(stats.pca["eigval"]), np.linalg.eigvalsh(want), rtol=1e-7, atol=1e-12)


def test_states_of_8_and_16_bit_data_merge_their_cross_sums_in_one_unit():
    eight = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 3, 5, 5), dtype=np.uint8))
    sixteen = torch.from_numpy(np.random.default_rng(2).integers(0, 65536, (2, 3, 4, 4)).astype(np.int32))
    a = ChannelMoments(3, covariance=True).update(eight)
    b = ChannelMoments(3, covariance=True).update(sixteen, 65535.0)
    pixels = np.concatenate(
        [
            eight.numpy().transpose(0, 2, 3, 1).reshape(-1, 3) / 255,
            sixteen.numpy().transpose(0, 2, 3, 1).reshape(-1, 3) / 65535,
        ]
    )
    source = {"kind": "tensors", "path": None, "split": None}
    for merged in (a.merge(b), b.merge(a)):
        np.testing.assert_allclose(
            prep.Stats(source, None, "RGB", merged).covariance, np.cov(pixels.T, bias=True), rtol=1e-9
        )
    assert a.merge(b).cross == b.merge(a).cross  # exact integers in 16-bit units, in either order
