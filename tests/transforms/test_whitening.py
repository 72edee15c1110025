"""ZCA/PCA whitening (prep.transforms.whitening, prep.stats.cross_moments) against independent references.

References are computed here in memory from the fixtures' own arrays: integer sums with NumPy
int64 (exact), the covariance from those integers, and W from NumPy's float64 ``eigh``; kornia's
``ZCAWhitening.fit`` where kornia is installed.
"""

from __future__ import annotations

import os
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import make_cifar10, make_mnist, write_idx_images
from prep.engine.whiten import compute_cross_moments, compute_whitening
from prep.errors import BadImageError, OptionError, OutputError, PrepWarning, SourceError, StatsFileError
from prep.stats.cross_moments import MAX_DIM, UINT8_EXACT_IMAGES, CrossMoments
from prep.transforms.measurement import measurement_transform
from prep.transforms.whitening import DEFAULT_EPS, ShapeMismatchError, Whitening
from prep.transforms.whitening_file import load_whitening

# ------------------------------------------------------------------ references


def integer_sums(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact int64 sum vector and cross-product matrix of uint8 samples (N, D)."""
    xi = x.reshape(len(x), -1).astype(np.int64)
    return xi.sum(0), xi.T @ xi


def exact_covariance(x: np.ndarray, pixel_max: float = 255.0) -> np.ndarray:
    """Unit-scale population covariance from exact integer sums: (N S - s s^T) / (N^2 p^2)."""
    n = len(x)
    total, cross = integer_sums(x)
    return (n * cross - np.outer(total, total)) / (float(n) * n * pixel_max * pixel_max)


def numpy_whitening(cov: np.ndarray, eps: float, pca: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(W, eigenvalues in decreasing order) from NumPy's float64 eigh."""
    w, u = np.linalg.eigh(cov)
    w, u = np.clip(w[::-1], 0, None), u[:, ::-1]
    scale = 1 / np.sqrt(w + eps)
    return (scale[:, None] * u.T if pca else (u * scale) @ u.T), w


def flat_images(folder: Path, names: list[str], mode: str = "RGB") -> np.ndarray:
    """ImageFolder's loader (``img.convert(mode)``) as uint8 samples (N, C*H*W) in C x H x W order."""
    out = []
    for name in names:
        with Image.open(folder / name) as img:
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        out.append(arr.reshape(-1))
    return np.stack(out)


def correlated_images(n: int = 4000, side: int = 6, seed: int = 5) -> np.ndarray:
    """(n, side, side) uint8 images with correlated neighbouring pixels (full-rank covariance)."""
    base = np.random.default_rng(seed).integers(0, 256, (n, side, side)).astype(np.float64)
    smooth = (3 * base + np.roll(base, 1, axis=1) + np.roll(base, 1, axis=2)) / 5
    return smooth.round().astype(np.uint8)


def equal_size_folder(root: Path, n: int = 14, size: tuple[int, int] = (5, 6), seed: int = 9) -> list[str]:
    """PNG files of one size (W x H = size) in several PIL modes; returns their sorted names."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        mode = ("RGB", "L", "P", "RGBA")[i % 4]
        pixels = rng.integers(0, 256, (size[1], size[0], 4 if mode == "RGBA" else 3), dtype=np.uint8)
        img = Image.fromarray(pixels)
        img = img if mode == "RGBA" else img.convert(mode)
        name = f"img{i:02d}.png"
        img.save(root / name)
        names.append(name)
    return sorted(names)


def close_to(actual, expected, rel: float) -> None:
    """|actual - expected| <= rel * max|expected|, elementwise."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * np.abs(expected).max())


@pytest.fixture
def mnist(tmp_path):
    return tmp_path, make_mnist(tmp_path)["train"]


def quiet_whitening(*args, **kwargs) -> Whitening:
    """compute_whitening without the rank warning of fixtures with fewer images than dimensions."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrepWarning)
        return compute_whitening(*args, **kwargs)


# ------------------------------------------------------------------ exact sums and covariance


def test_mnist_sums_are_exact_integers_and_covariance_matches(mnist):
    root, images = mnist
    state = compute_cross_moments("mnist", root=root, workers=0)
    total, cross = integer_sums(images)
    assert state.count == len(images) and state.shape == (1, 28, 28) and state.exact
    assert np.array_equal(state.total.numpy().astype(np.int64), total)
    assert np.array_equal(state.cross.numpy().astype(np.int64), cross)
    assert np.array_equal(state.total.numpy(), total.astype(np.float64))  # integer-valued, no fraction lost
    assert np.array_equal(state.covariance().numpy(), exact_covariance(images))
    assert np.array_equal(state.mean().numpy(), total / (len(images) * 255.0))


def test_cifar_sums_exact_with_small_batches(tmp_path):
    images = make_cifar10(tmp_path)["train"]  # 200 x 3 x 32 x 32: D = 3072
    state = compute_cross_moments("cifar10", root=tmp_path, batch_size=7)
    x = images.reshape(len(images), -1)
    assert state.shape == (3, 32, 32) and state.count == 200 and state.exact
    assert np.array_equal(state.total.numpy().astype(np.int64), x.astype(np.int64).sum(0))
    # the full int64 product is slow in NumPy (no BLAS for integers): check 2,000 entries exactly
    rng = np.random.default_rng(0)
    i, j = rng.integers(0, x.shape[1], (2, 2000))
    xi = x.astype(np.int64)
    expected = np.einsum("nk,nk->k", xi[:, i], xi[:, j])
    assert np.array_equal(state.cross.numpy()[i, j].astype(np.int64), expected)
    cov = state.covariance().numpy()
    assert np.array_equal(cov, cov.T)
    blas = x.astype(np.float64)  # exact too: integer products and sums below 2^53
    reference = (len(x) * (blas.T @ blas) - np.outer(blas.sum(0), blas.sum(0))) / (200.0 * 200 * 255 * 255)
    assert np.array_equal(cov, reference)


def test_folder_of_equal_size_pngs_in_process_and_in_workers(tmp_path):
    names = equal_size_folder(tmp_path / "imgs")
    x = flat_images(tmp_path / "imgs", names)
    total, cross = integer_sums(x)
    for workers in (0, 2):
        z = quiet_whitening(tmp_path / "imgs", workers=workers)
        assert z.shape == (3, 6, 5) and z.count == len(names) and z.exact and z.mode == "RGB"
        assert np.array_equal(z.state.total.numpy().astype(np.int64), total)
        assert np.array_equal(z.state.cross.numpy().astype(np.int64), cross)
    grey = quiet_whitening(tmp_path / "imgs", mode="L", workers=0)
    assert grey.shape == (1, 6, 5)
    assert np.array_equal(grey.state.covariance().numpy(), exact_covariance(flat_images(tmp_path / "imgs", names, "L")))


def test_folder_skips_undecodable_files_with_a_warning_and_strict_stops(tmp_path):
    equal_size_folder(tmp_path / "imgs", n=5)
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z = compute_whitening(tmp_path / "imgs", workers=0)
    assert any(re.search(r"skipped 1 file.*broken\.png", str(w.message)) for w in caught)
    assert z.count == 5
    with pytest.raises(BadImageError, match=r"broken\.png"):
        compute_whitening(tmp_path / "imgs", workers=0, strict=True)


def test_exactness_bound_is_stated_and_tracked():
    assert UINT8_EXACT_IMAGES == 2**53 // 255**2 == 138_519_019_680
    state = CrossMoments((1, 1, 2))
    state.update(torch.full((3, 1, 1, 2), 255, dtype=torch.uint8))
    assert state.exact
    state.cross[0, 0] = 2.0**53  # as after 2^53 / 255^2 images of 255
    assert not state.exact
    floats = CrossMoments((1, 1, 2)).update(torch.tensor([[[[0.25, 0.5]]]]))
    assert not floats.exact and floats.pixel_max == 1.0


# ------------------------------------------------------------------ W against NumPy and kornia


@pytest.mark.parametrize("pca", [False, True])
def test_mnist_whitening_matches_numpy_eigh(mnist, pca):
    root, images = mnist
    z = quiet_whitening("mnist", root=root, workers=0, pca=pca)
    cov = exact_covariance(images)
    w_ref, lam = numpy_whitening(cov, DEFAULT_EPS, pca)
    close_to(z.eigenvalues.numpy(), lam, 1e-12)
    if pca:  # rows are eigenvectors, defined up to sign and within degenerate eigenspaces: compare invariants
        close_to(z.matrix.numpy().T @ z.matrix.numpy(), np.linalg.inv(cov + DEFAULT_EPS * np.eye(len(cov))), 1e-10)
        close_to(z.matrix.numpy() @ cov @ z.matrix.numpy().T, np.diag(lam / (lam + DEFAULT_EPS)), 1e-10)
        rows = z.matrix.numpy()
        peak = np.abs(rows).argmax(1)
        assert (rows[np.arange(len(rows)), peak] > 0).all()  # the sign convention
    else:
        close_to(z.matrix.numpy(), w_ref, 1e-10)
        assert torch.equal(z.matrix, z.matrix.T)
    assert z.eps == DEFAULT_EPS and z.pca is pca and z.count == len(images)


def test_full_rank_whitening_to_1e_10_and_whitened_covariance_is_identity(tmp_path):
    images = correlated_images()
    np.save(tmp_path / "smooth.npy", images)
    z = compute_whitening(tmp_path / "smooth.npy")
    cov = exact_covariance(images)
    w_ref, lam = numpy_whitening(cov, DEFAULT_EPS)
    np.testing.assert_allclose(z.matrix.numpy(), w_ref, rtol=0, atol=1e-10)
    # exactly: W Sigma W^T = U diag(lam / (lam + eps)) U^T, within eps / (lam_min + eps) of I
    whitened = z.matrix.numpy() @ cov @ z.matrix.numpy().T
    bound = DEFAULT_EPS / (lam.min() + DEFAULT_EPS)
    assert 0 < bound < 1e-2
    np.testing.assert_allclose(whitened, np.eye(36), atol=bound * 1.0001)
    # and through the torchvision pipeline on the images themselves, in float32
    out = z.transform()(torch.from_numpy(images)[:, None]).reshape(len(images), -1).double().numpy()
    np.testing.assert_allclose(out.mean(0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(out.T, bias=True), np.eye(36), atol=bound + 1e-4)


def test_agrees_with_kornia_zca_fit(mnist):
    kornia = pytest.importorskip("kornia")
    root, images = mnist
    z = quiet_whitening("mnist", root=root, workers=0)
    x = torch.from_numpy(images.reshape(len(images), -1) / 255.0)  # float64, every image in memory
    fit = kornia.enhance.ZCAWhitening(eps=DEFAULT_EPS, unbiased=False).fit(x)
    close_to(z.matrix.numpy(), fit.transform_matrix.numpy(), 1e-10)
    np.testing.assert_allclose(z.mean.numpy(), fit.mean_vector.flatten().numpy(), rtol=0, atol=1e-15)


# ------------------------------------------------------------------ merging shards


def test_halves_merged_equal_the_whole(tmp_path, mnist):
    root, images = mnist
    write_idx_images(tmp_path / "a-images-idx3-ubyte", images[:137])
    write_idx_images(tmp_path / "b-images-idx3-ubyte.gz", images[137:])
    whole = compute_cross_moments("mnist", root=root, workers=0)
    a = compute_cross_moments(tmp_path / "a-images-idx3-ubyte")
    b = compute_cross_moments(tmp_path / "b-images-idx3-ubyte.gz")
    merged = a.merge(b)
    assert merged == whole and merged is not a and a.count == 137  # inputs unchanged
    assert b.merge(a) == whole  # any order: integer sums
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrepWarning)
        z_whole = compute_whitening("mnist", root=root, workers=0)
    z_merged = Whitening.from_moments(merged, mode="L")
    assert torch.equal(z_merged.matrix, z_whole.matrix) and torch.equal(z_merged.mean, z_whole.mean)


def test_state_dict_round_trip_through_weights_only_load(tmp_path, mnist):
    root, _ = mnist
    state = compute_cross_moments("mnist", root=root, workers=0)
    torch.save(state.state_dict(), tmp_path / "state.pt")
    loaded = CrossMoments.from_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    assert loaded == state and loaded.exact
    bad = state.state_dict() | {"cross": torch.zeros(3, 3, dtype=torch.float64)}
    with pytest.raises(ValueError, match="field 'cross'"):
        CrossMoments.from_state_dict(bad)


def test_merge_refuses_other_shapes_and_scales():
    a = CrossMoments((1, 2, 2)).update(torch.zeros((1, 1, 2, 2), dtype=torch.uint8))
    with pytest.raises(ValueError, match="cannot merge"):
        a.merge(CrossMoments((1, 4, 1)))
    b = CrossMoments((1, 2, 2)).update(torch.zeros((1, 1, 2, 2), dtype=torch.int32))
    with pytest.raises(ValueError, match="pixel max"):
        a.merge(b)


def test_same_sums_on_every_device(mnist, device):
    root, _ = mnist
    cpu = compute_cross_moments("mnist", root=root, workers=0, device="cpu")
    other = compute_cross_moments("mnist", root=root, workers=0, device=device)
    assert other.device.type == device and other == cpu


# ------------------------------------------------------------------ refusals


def test_mixed_sizes_refused_naming_the_images_unless_resized(tmp_path):
    names = equal_size_folder(tmp_path / "imgs", n=40)
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "imgs" / "img15.png")  # 6x5 -> 5x6
    for workers in (0, 2):  # chunks of 10 files in-process: found inside one; of 5 in workers: between two
        with pytest.raises(SourceError, match=r"img15\.png: image of 3x5x6 .* is 3x6x5; whitening needs images of one"):
            compute_whitening(tmp_path / "imgs", workers=workers)
    z = quiet_whitening(tmp_path / "imgs", workers=0, transform=measurement_transform(resize="4x4"))
    assert z.shape == (3, 4, 4) and z.count == len(names) and "Resize" in z.preprocessing
    tensors = [torch.zeros((1, 4, 4), dtype=torch.uint8)] * 3 + [torch.zeros((1, 4, 5), dtype=torch.uint8)]
    with pytest.raises(SourceError, match=r"image 3: image of 1x4x5 .* image 0 is 1x4x4"):
        compute_whitening(tensors)


def test_too_large_dimension_refused_before_anything_is_allocated(tmp_path, monkeypatch):
    np.save(tmp_path / "big.npy", np.zeros((2, 3, 80, 80), np.uint8))
    with pytest.raises(SourceError, match=rf"big\.npy.*D = 19200 values; whitening is limited to D <= {MAX_DIM}"):
        compute_whitening(tmp_path / "big.npy")
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (100, 100)).save(tmp_path / "photos" / "large.png")
    monkeypatch.setattr(Image.Image, "load", lambda self: pytest.fail("decoded an image that is too large"))
    with pytest.raises(SourceError, match=r"large\.png: images of 3x100x100 have D = 30000"):
        compute_whitening(tmp_path / "photos", workers=0)
    with pytest.raises(ValueError, match="exceeds the limit"):
        CrossMoments((1, 129, 128))


def test_nan_and_mixed_bit_depths_refused(tmp_path):
    floats = np.random.default_rng(0).random((10, 3, 3), dtype=np.float32)
    floats[4, 1, 1] = np.nan
    np.save(tmp_path / "nan.npy", floats)
    with pytest.raises(SourceError, match="NaN"):
        compute_whitening(tmp_path / "nan.npy")
    mixed = [torch.zeros((1, 2, 2), dtype=torch.uint8), torch.zeros((1, 2, 2), dtype=torch.int32)]
    with pytest.raises(SourceError, match="pixel max"):
        compute_whitening(mixed)


def test_sixteen_bit_and_float_data(tmp_path):
    rng = np.random.default_rng(3)
    wide = rng.integers(0, 65536, (50, 3, 3), dtype=np.uint16)
    np.save(tmp_path / "wide.npy", wide)
    z = compute_whitening(tmp_path / "wide.npy")
    assert z.exact and z.state.pixel_max == 65535.0
    assert np.array_equal(z.state.covariance().numpy(), exact_covariance(wide, 65535.0))
    floats = rng.random((50, 3, 3))
    np.save(tmp_path / "floats.npy", floats.astype(np.float32))
    z = compute_whitening(tmp_path / "floats.npy")
    x = floats.astype(np.float32).astype(np.float64).reshape(50, -1)
    assert not z.exact
    np.testing.assert_allclose(z.state.covariance().numpy(), np.cov(x.T, bias=True), rtol=0, atol=1e-15)


@pytest.mark.parametrize("eps", [-1e-5, float("nan"), float("inf"), True, "1e-5"])
def test_bad_eps_refused(eps):
    with pytest.raises(OptionError, match="eps must be"):
        compute_whitening([torch.zeros((1, 2, 2), dtype=torch.uint8)], eps=eps)


def test_other_bad_options_refused():
    images = [torch.zeros((1, 2, 2), dtype=torch.uint8)] * 2
    with pytest.raises(OptionError, match="pca"):
        compute_whitening(images, pca="yes")
    with pytest.raises(OptionError, match="mode"):
        compute_whitening(images, mode="CMYK")
    with pytest.raises(OptionError, match="eps = 0"):
        quiet_whitening(images, eps=0)  # constant images: a singular covariance
    with pytest.raises(TypeError, match="percentiles"):
        compute_whitening(images, percentiles=[1])


# ------------------------------------------------------------------ the file


def test_save_and_load_round_trip(tmp_path, mnist):
    root, _ = mnist
    z = quiet_whitening("mnist", root=root, workers=0, pca=True, eps=1e-3)
    z.save(tmp_path / "zca.pt")
    raw = torch.load(tmp_path / "zca.pt", weights_only=True)
    assert raw["format"] == "prep-whitening" and raw["kind"] == "pca" and raw["D"] == 784
    assert raw["shape"] == [1, 28, 28] and raw["mode"] == "L" and raw["eps"] == 1e-3
    assert raw["source"]["kind"] == "mnist" and raw["fingerprint"] == z.fingerprint and raw["prep_version"]
    loaded = load_whitening(tmp_path / "zca.pt")
    assert torch.equal(loaded.matrix, z.matrix) and torch.equal(loaded.mean, z.mean)
    assert (loaded.pca, loaded.eps, loaded.shape, loaded.count, loaded.exact) == (True, 1e-3, (1, 28, 28), 300, True)
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]


def test_failed_save_keeps_the_old_file(tmp_path, monkeypatch, mnist):
    root, _ = mnist
    z = quiet_whitening("mnist", root=root, workers=0)
    (tmp_path / "zca.pt").write_bytes(b"old")

    def fail(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(OutputError, match="No space left"):
        z.save(tmp_path / "zca.pt")
    assert (tmp_path / "zca.pt").read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == sorted(["MNIST", "zca.pt"])
    with pytest.raises(OutputError, match="not a regular file"):
        z.save(tmp_path / "MNIST")


@pytest.fixture
def saved(tmp_path):
    images = [torch.tensor(v, dtype=torch.uint8).reshape(1, 1, 2) for v in ((0, 0), (255, 0), (0, 255), (9, 9))]
    compute_whitening(images).save(tmp_path / "zca.pt")
    return tmp_path / "zca.pt"


DAMAGE = {
    "format": lambda d: d | {"format": "something-else"},
    "format_version": lambda d: d | {"format_version": 2},
    "W": lambda d: d | {"W": torch.zeros(3, 3, dtype=torch.float64)},
    "mean": lambda d: {k: v for k, v in d.items() if k != "mean"},
    "eigenvalues": lambda d: d | {"eigenvalues": torch.tensor([1.0, float("nan")], dtype=torch.float64)},
    "eps": lambda d: d | {"eps": -1.0},
    "shape": lambda d: d | {"shape": [1, 2, 2]},
    "mode": lambda d: d | {"mode": "RGB"},
    "count": lambda d: d | {"count": 0},
    "kind": lambda d: d | {"kind": "pcaa"},
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_damaged_fields_refused_naming_the_field(saved, name):
    data = torch.load(saved, weights_only=True)
    torch.save(DAMAGE[name](data), saved)
    with pytest.raises(StatsFileError, match=rf"zca\.pt: .*'{name}'") as info:
        load_whitening(saved)
    assert "\n" not in str(info.value)


def test_damaged_bytes_refused(saved, tmp_path):
    data = saved.read_bytes()
    for damaged in (data[: len(data) // 2], b"", os.urandom(300), b"{}"):
        saved.write_bytes(damaged)
        with pytest.raises(StatsFileError, match=r"zca\.pt: not a readable prep whitening file"):
            load_whitening(saved)
    with pytest.raises(StatsFileError, match="cannot read"):
        load_whitening(tmp_path)
    with pytest.raises(StatsFileError, match="cannot read"):
        load_whitening(tmp_path / "missing.pt")
    torch.save([1, 2], saved)
    with pytest.raises(StatsFileError, match="holds a list"):
        load_whitening(saved)


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {Path.cwd() / 'pwned'}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_arbitrary_pickles_are_never_run(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = torch.load(saved, weights_only=True)
    torch.save(data | {"source": _Evil()}, saved)
    with pytest.raises(StatsFileError, match="not a readable prep whitening file"):
        load_whitening(saved)
    saved.write_bytes(pickle.dumps(_Evil()))
    with pytest.raises(StatsFileError):
        load_whitening(saved)
    assert not (tmp_path / "pwned").exists()


# ------------------------------------------------------------------ the transform


@pytest.mark.parametrize("pca", [False, True])
def test_transform_is_w_times_centered_unit_values(tmp_path, pca):
    images = correlated_images(n=500, side=4)
    np.save(tmp_path / "smooth.npy", images)
    compute_whitening(tmp_path / "smooth.npy", pca=pca).save(tmp_path / "w.pt")
    z = load_whitening(tmp_path / "w.pt")
    tf = z.transform()
    assert [type(t).__name__ for t in tf.transforms] == ["ConvertPixels", "ToDtype", "WhiteningTransformation"]
    x = images[:20].reshape(20, -1) / 255.0
    expected = (z.matrix.numpy() @ (x - z.mean.numpy()).T).T  # column-vector convention: y = W (x - mean)
    got = tf(torch.from_numpy(images[:20])[:, None])
    assert got.dtype == torch.float32 and got.shape == (20, 1, 4, 4)
    np.testing.assert_allclose(got.reshape(20, -1).numpy(), expected, rtol=0, atol=2e-4)
    one = tf(Image.fromarray(images[3]))  # a PIL image, converted as when measuring
    np.testing.assert_allclose(one.reshape(-1).numpy(), expected[3], rtol=0, atol=2e-4)


def test_transform_refuses_images_of_another_shape(tmp_path):
    z = quiet_whitening([torch.full((1, 2, 3), v, dtype=torch.uint8) for v in (0, 50, 90, 255)], eps=1e-2)
    tf = z.transform()
    assert tf(torch.zeros((1, 2, 3), dtype=torch.uint8)).shape == (1, 2, 3)
    with pytest.raises(ShapeMismatchError, match=r"shape \(1, 3, 2\) but the whitening matrix is for images 1x2x3"):
        tf(torch.zeros((1, 3, 2), dtype=torch.uint8))
    with pytest.raises(ShapeMismatchError, match="1x2x3"):
        tf(Image.new("L", (2, 3)))


def _asymmetric(d):
    w = d["W"].clone()
    w[0, 1] += 5.0
    return d | {"W": w}


INCONSISTENT = {
    "W doubled": lambda d: d | {"W": d["W"] * 2},
    "W asymmetric": _asymmetric,
    "eps changed": lambda d: d | {"eps": d["eps"] * 100 + 1e-2},
    "eigenvalues doubled": lambda d: d | {"eigenvalues": d["eigenvalues"] * 2},
    "kind flipped": lambda d: d | {"kind": "pca"},
    "W scaled by 1 + 1e-7": lambda d: d | {"W": d["W"] * (1 + 1e-7)},
}


@pytest.mark.parametrize("name", sorted(INCONSISTENT))
def test_a_matrix_that_does_not_fit_its_eigenvalues_is_refused(saved, name):
    data = torch.load(saved, weights_only=True)
    torch.save(INCONSISTENT[name](data), saved)
    with pytest.raises(StatsFileError, match="field 'W'"):
        load_whitening(saved)


# ------------------------------------------------------------------ what the one pass engine gives prep whiten


def jpeg_folder(root: Path, n: int = 12, size: tuple[int, int] = (6, 5), seed: int = 3) -> list[str]:
    """Baseline colour and grey JPEGs of one size (W x H); returns their sorted names."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        img = img.convert("L") if i % 3 == 0 else img
        name = f"img{i:02d}.jpg"
        img.save(root / name, quality=85)
        names.append(name)
    return sorted(names)


@pytest.mark.parametrize("workers", [0, 2])
def test_every_decoder_whitens_the_pixels_it_decodes(tmp_path, workers):
    names = jpeg_folder(tmp_path / "imgs")
    total, cross = integer_sums(flat_images(tmp_path / "imgs", names))  # PIL's pixels, as ImageFolder
    for decoder in ("pil", "auto"):  # auto gives PIL's pixels exactly
        state = compute_cross_moments(tmp_path / "imgs", decoder=decoder, workers=workers)
        assert state.count == len(names)
        assert np.array_equal(state.total.numpy().astype(np.int64), total), decoder
        assert np.array_equal(state.cross.numpy().astype(np.int64), cross), decoder
    # torchvision.io's own pixels: libjpeg-turbo's IDCT may round a level differently from PIL's
    tv = compute_cross_moments(tmp_path / "imgs", decoder="torchvision", workers=workers)
    assert tv.count == len(names)
    assert np.abs(tv.total.numpy() - total).max() <= 2 * len(names)
    with pytest.raises(OptionError, match="decoder must be one of"):
        compute_cross_moments(tmp_path / "imgs", decoder="nvjpeg")


def test_a_whitening_pass_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    from prep.engine import loop

    names = equal_size_folder(tmp_path / "imgs", n=10)
    checkpoint = tmp_path / "ck.pt"
    monkeypatch.setattr(loop, "FOLDER_CHUNK", 1)
    monkeypatch.setattr(loop, "TASK_FILES", 1)
    real, calls = loop._Run.advance, []

    def interrupt(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop._Run, "advance", interrupt)
    with pytest.raises(KeyboardInterrupt):
        compute_cross_moments(tmp_path / "imgs", workers=0, checkpoint=checkpoint, checkpoint_every=1)
    saved = torch.load(checkpoint, weights_only=True)
    assert saved["position"] == 4 and saved["state"]["count"] == 4  # a torch file: the sums are D x D
    monkeypatch.setattr(loop._Run, "advance", real)
    resumed = compute_cross_moments(tmp_path / "imgs", workers=0, checkpoint=checkpoint, resume=True)
    total, cross = integer_sums(flat_images(tmp_path / "imgs", names))
    assert resumed.count == len(names)
    assert np.array_equal(resumed.total.numpy().astype(np.int64), total)
    assert np.array_equal(resumed.cross.numpy().astype(np.int64), cross)
    assert not checkpoint.exists()  # served its purpose


def test_a_whitening_checkpoint_of_other_options_or_damaged_is_refused(tmp_path, monkeypatch):
    from prep.engine import loop

    equal_size_folder(tmp_path / "imgs", n=6)
    checkpoint = tmp_path / "ck.pt"
    monkeypatch.setattr(loop, "FOLDER_CHUNK", 1)
    monkeypatch.setattr(loop, "TASK_FILES", 1)
    real = loop._Run.advance

    def interrupt(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop._Run, "advance", interrupt)
    with pytest.raises(KeyboardInterrupt):
        compute_cross_moments(tmp_path / "imgs", workers=0, checkpoint=checkpoint, checkpoint_every=1)
    monkeypatch.setattr(loop._Run, "advance", real)
    with pytest.raises(StatsFileError, match="does not match this run"):
        compute_cross_moments(tmp_path / "imgs", mode="L", workers=0, checkpoint=checkpoint, resume=True)
    data = torch.load(checkpoint, weights_only=True)
    data["state"]["cross"] = data["state"]["cross"][:2]
    torch.save(data, checkpoint)
    with pytest.raises(StatsFileError, match=r"field 'state'.*cross"):
        compute_cross_moments(tmp_path / "imgs", workers=0, checkpoint=checkpoint, resume=True)
    checkpoint.write_bytes(b"not a torch file")
    with pytest.raises(StatsFileError, match=r"ck\.pt"):
        compute_cross_moments(tmp_path / "imgs", workers=0, checkpoint=checkpoint, resume=True)


def test_shards_of_a_whitening_pass_merge_into_the_whole(mnist):
    root, _ = mnist
    whole = compute_cross_moments("mnist", root=root)
    parts = [compute_cross_moments("mnist", root=root, shard=f"{i}/3") for i in range(3)]
    assert sum(p.count for p in parts) == whole.count
    assert parts[0].merge(parts[1]).merge(parts[2]) == whole  # exact integer sums: any grouping
    merged = Whitening.from_moments(parts[2].merge(parts[0]).merge(parts[1]), eps=1e-3)
    assert torch.equal(merged.matrix, Whitening.from_moments(whole, eps=1e-3).matrix)


def test_a_sample_whitens_that_many_images_the_same_for_the_same_seed(mnist):
    root, _ = mnist
    a = compute_cross_moments("mnist", root=root, sample=7, seed=1)
    assert a.count == 7
    assert compute_cross_moments("mnist", root=root, sample=7, seed=1) == a
    assert compute_cross_moments("mnist", root=root, sample=7, seed=2) != a
    with pytest.raises(OptionError, match="cannot be combined"):
        compute_cross_moments("mnist", root=root, sample=7, shard="0/2")


def test_whiten_command_takes_the_pass_options(tmp_path):
    from click.testing import CliRunner

    from prep.cli import main

    names = jpeg_folder(tmp_path / "imgs")
    out = tmp_path / "z.pt"
    args = ["whiten", str(tmp_path / "imgs"), "-o", str(out), "-q", "--workers", "0", "--eps", "1e-2"]
    result = CliRunner().invoke(main, [*args, "--decoder", "pil", "--sample", "5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert load_whitening(out).count == 5
    result = CliRunner().invoke(main, [*args, "--checkpoint", str(tmp_path / "ck.pt"), "--checkpoint-every", "2"])
    assert result.exit_code == 0, result.output
    assert load_whitening(out).count == len(names) and not (tmp_path / "ck.pt").exists()


def test_what_the_whitening_file_check_cannot_catch_is_what_its_docs_say(saved):
    """A permuted W (P W P^T) is the whitening matrix of the same eigenvalues for other data, and a
    shifted mean has nothing to be checked against: both load, as load_whitening documents."""
    from prep.transforms import whitening_file

    data = torch.load(saved, weights_only=True)
    perm = torch.randperm(data["W"].shape[0], generator=torch.Generator().manual_seed(0))
    torch.save(data | {"W": data["W"][perm][:, perm], "mean": data["mean"] + 0.01}, saved)
    assert load_whitening(saved).count == data["count"]
    doc = whitening_file._check_matrix.__doc__
    assert "P W P^T" in doc and "shifted mean" in doc
