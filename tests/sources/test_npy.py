"""NumPy arrays as sources: .npy (memory-mapped) and .npz (MedMNIST keys), in every layout and
dtype prep reads, checked against exact references; ambiguous shapes and object arrays refused."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

import prep
from helpers import exact_stats, make_mnist
from prep.errors import SourceError
from prep.sources import resolve_source
from prep.sources.npy import NumpySource, npz_splits

RNG = np.random.default_rng(7)
IMAGES = RNG.integers(0, 256, (37, 9, 11, 3), dtype=np.uint8)  # NHWC


def exact(images_nhwc: np.ndarray) -> dict:
    return exact_stats(images_nhwc.reshape(-1, images_nhwc.shape[-1]))


def check(stats, images_nhwc: np.ndarray) -> None:
    ref = exact(images_nhwc)
    np.testing.assert_allclose(stats.mean, ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(np.square(stats.std), ref["var"], rtol=1e-9)
    assert stats.images == len(images_nhwc)
    assert stats.min == tuple(images_nhwc.reshape(-1, images_nhwc.shape[-1]).min(0) / 255)


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_npy_layouts_match_exact_reference(tmp_path, layout):
    array = IMAGES if layout == "NHWC" else IMAGES.transpose(0, 3, 1, 2)
    np.save(tmp_path / "x.npy", np.ascontiguousarray(array))
    src = resolve_source(tmp_path / "x.npy")
    assert isinstance(src, NumpySource) and src.layout == layout and src.native_mode == "RGB"
    assert isinstance(src._map, np.memmap)
    check(prep.compute_stats(tmp_path / "x.npy", batch_size=5), IMAGES)


def test_batches_are_zero_copy_views_of_the_map(tmp_path):
    np.save(tmp_path / "x.npy", IMAGES.transpose(0, 3, 1, 2).copy())
    src = resolve_source(tmp_path / "x.npy")
    batch, n = next(src.iter_batches(0, "RGB", pixels_per_batch=1, batch_size=4))
    assert n == 4 and batch.shape == (4, 3, 9, 11)
    assert batch.data_ptr() == src._map[:4].__array_interface__["data"][0]


def test_grey_and_uint16_and_float_and_alpha(tmp_path):
    grey = IMAGES[..., 0]
    np.save(tmp_path / "grey.npy", grey)
    stats = prep.compute_stats(tmp_path / "grey.npy")
    assert stats.mode == "L"
    check(stats, grey[..., None])

    wide = RNG.integers(0, 65536, (6, 5, 4), dtype=np.uint16)
    np.save(tmp_path / "wide.npy", wide)
    stats = prep.compute_stats(tmp_path / "wide.npy")
    values = wide.astype(np.float64) / 65535
    np.testing.assert_allclose(stats.mean, [values.mean()], rtol=1e-12)
    np.testing.assert_allclose(stats.std, [values.std()], rtol=1e-9)

    unit = RNG.random((4, 3, 6, 6)).astype(np.float32)
    np.save(tmp_path / "unit.npy", unit)
    stats = prep.compute_stats(tmp_path / "unit.npy")
    np.testing.assert_allclose(stats.mean, unit.astype(np.float64).mean((0, 2, 3)), rtol=1e-6)

    rgba = np.concatenate([IMAGES, RNG.integers(0, 256, (*IMAGES.shape[:3], 1), dtype=np.uint8)], -1)
    np.save(tmp_path / "rgba.npy", rgba)
    check(prep.compute_stats(tmp_path / "rgba.npy"), IMAGES)  # alpha dropped

    np.save(tmp_path / "big_endian.npy", IMAGES.astype(">u2"))
    assert prep.compute_stats(tmp_path / "big_endian.npy").images == len(IMAGES)


def test_npy_equals_the_idx_file_of_the_same_images(tmp_path):
    images = make_mnist(tmp_path, n_train=50, n_test=5)["train"]
    np.save(tmp_path / "mnist.npy", images)
    idx = prep.compute_stats(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte")
    npy = prep.compute_stats(tmp_path / "mnist.npy")
    for field in ("mean", "std", "min", "max", "count", "images"):
        assert getattr(npy, field) == getattr(idx, field)


@pytest.mark.parametrize("compressed", [False, True])
def test_npz_medmnist_keys_and_splits(tmp_path, compressed):
    arrays = {
        "train_images": IMAGES,
        "val_images": IMAGES[:7],
        "test_images": IMAGES[7:19],
        "train_labels": np.arange(len(IMAGES))[:, None],
    }
    path = tmp_path / "medmnist.npz"
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    check(prep.compute_stats(path, batch_size=4), IMAGES)  # train by default
    check(prep.compute_stats(path, split="val"), IMAGES[:7])
    check(prep.compute_stats(path, split="test", batch_size=5), IMAGES[7:19])
    src = resolve_source(path, key="test_images")
    assert (src._map is not None) == (not compressed)  # stored members are memory-mapped
    check(prep.compute_stats(src), IMAGES[7:19])
    # resuming mid-array (a compressed member is re-read from its start)
    batches = [b.numpy() for b, _ in src.iter_batches(5, "RGB", 1, batch_size=3)]
    np.testing.assert_array_equal(np.concatenate(batches), IMAGES[12:19].transpose(0, 3, 1, 2))
    assert npz_splits(path) == ("train", "val", "test")
    with pytest.raises(SourceError, match="no array 'nope' \\(it has train_images, val_images"):
        resolve_source(path, key="nope")
    with pytest.raises(SourceError, match="no 'dev_images' array for split dev"):
        resolve_source(path, split="dev")


def test_ambiguous_layout_needs_layout(tmp_path):
    array = RNG.integers(0, 256, (4, 3, 7, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    with pytest.raises(SourceError) as info:
        resolve_source(tmp_path / "a.npy")
    assert str(info.value) == (
        f"{tmp_path / 'a.npy'}: array of shape (4, 3, 7, 3) could be NHWC or NCHW; pass layout= (--layout)"
    )
    check(prep.compute_stats(resolve_source(tmp_path / "a.npy", layout="NHWC")), array)
    check(prep.compute_stats(resolve_source(tmp_path / "a.npy", layout="nchw")), array.transpose(0, 2, 3, 1))


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((3, 2, 5, 2), np.uint8), "is not (N, H, W), (N, H, W, C) or (N, C, H, W)"),
        (np.zeros((3, 25), np.uint8), "is not (N, H, W)"),
        (np.zeros((3, 4, 4), bool), "cannot read pixels of dtype bool"),
        (np.zeros((3, 4, 4), complex), "cannot read pixels of dtype complex128"),
        (np.array([[[None]]], dtype=object), "not a readable .npy array"),
    ],
)
def test_bad_arrays_are_one_line_errors(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array, allow_pickle=True)
    with pytest.raises(SourceError) as info:
        resolve_source(tmp_path / "bad.npy")
    assert message in str(info.value) and str(info.value).startswith(str(tmp_path)) and "\n" not in str(info.value)


def test_damaged_files_and_splits_refused(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"garbage" * 20)
    (tmp_path / "junk.npz").write_bytes(b"garbage" * 20)
    np.save(tmp_path / "ok.npy", IMAGES)
    for name in ("junk.npy", "junk.npz"):
        with pytest.raises(SourceError, match=f"^{tmp_path / name}: not a readable"):
            resolve_source(tmp_path / name)
    with pytest.raises(SourceError, match="has no splits"):
        resolve_source(tmp_path / "ok.npy", split="train")
    with zipfile.ZipFile(tmp_path / "two.npz", "w") as zf:
        zf.writestr("a.npy", b"")
        zf.writestr("b.npy", b"")
    with pytest.raises(SourceError, match=r"holds several arrays \(a, b\); pass key="):
        resolve_source(tmp_path / "two.npz")


def test_fingerprint_and_reuse(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, IMAGES)
    out = tmp_path / "x.json"
    _, reused = prep.load_or_compute(out, path)
    assert not reused
    _, reused = prep.load_or_compute(out, path)
    assert reused
    fingerprint = resolve_source(path).fingerprint()
    assert fingerprint["files"] == 1 and fingerprint["bytes"] == path.stat().st_size
    np.save(path, IMAGES[:-1])
    assert resolve_source(path).fingerprint() != fingerprint
    with pytest.raises(prep.StaleStatsError):
        prep.load_stats(out, verify_against=path)


def test_large_npy_is_read_through_the_map(tmp_path):
    """An array is never loaded whole: the pass reads it through views of the memory map."""
    path = tmp_path / "big.npy"
    big = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(64, 256, 256))
    big[:] = 7
    big[::2, 0, 0] = 9
    big.flush()
    del big
    src = resolve_source(path)
    sizes = [n for _, n in src.iter_batches(0, "L", pixels_per_batch=256 * 256 * 8)]
    assert sizes == [8] * 8
    stats = prep.compute_stats(path, batch_size=8)
    assert stats.max == (9 / 255,) and stats.min == (7 / 255,)
