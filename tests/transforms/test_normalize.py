"""Transform pipelines (prep.transforms.normalize): the invariants that make them correct, checked
on the measured images; min-max exact at the measured extremes, NumPy inputs converted as PIL
images are, and AlexNet lighting from the covariance's PCA."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

import prep
from helpers import make_mnist
from prep.errors import ChannelMismatchError, DegenerateStatsError, StatsFileError


def _apply_all(transform, images):
    return [transform(img) for img in images]


def _pooled(tensors):  # list of (C, H, W) -> (C, P)
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1).double()


def test_normalize_gives_mean_0_std_1_on_the_measured_folder(image_folder):
    stats = prep.compute_stats(image_folder)
    tv = torchvision.datasets.ImageFolder(str(image_folder))
    out = _pooled(_apply_all(stats.normalize(), [img for img, _ in tv]))
    np.testing.assert_allclose(out.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(out.std(1, correction=0), 1.0, atol=1e-5)


def test_normalize_equals_batchnorm_in_training_mode(tmp_path):
    """BatchNorm2d normalizes with the biased batch statistics over (N, H, W): the same axes and ddof."""
    images = make_mnist(tmp_path)["train"]
    stats = prep.compute_stats("mnist", root=tmp_path)
    x = torch.from_numpy(images).unsqueeze(1).to(torch.float64) / 255
    bn = torch.nn.BatchNorm2d(1, eps=1e-12, affine=False, dtype=torch.float64).train()
    expected = bn(x)
    got = stats.normalize()(torch.from_numpy(images).unsqueeze(1))
    np.testing.assert_allclose(got.double(), expected, atol=2e-6)


def test_normalize_accepts_uint8_tensors_and_pil_alike(tmp_path):
    images = make_mnist(tmp_path)["test"]
    stats = prep.compute_stats("mnist", root=tmp_path, split="test")
    t = stats.normalize()
    from_pil = t(Image.fromarray(images[0]))
    from_tensor = t(torch.from_numpy(images[0]).unsqueeze(0))
    assert from_pil.dtype == torch.float32 and from_pil.shape == (1, 28, 28)
    torch.testing.assert_close(from_pil.as_subclass(torch.Tensor), from_tensor, rtol=0, atol=0)


def test_normalize_passes_labels_through(tmp_path):
    make_mnist(tmp_path)
    stats = prep.compute_stats("mnist", root=tmp_path)
    img, label = stats.normalize()(Image.new("L", (4, 4)), 7)
    assert label == 7
    torch.testing.assert_close(img.as_subclass(torch.Tensor), torch.full((1, 4, 4), -stats.mean[0] / stats.std[0]))


def test_minmax_maps_dataset_range_to_exactly_0_and_1(image_folder):
    stats = prep.compute_stats(image_folder)
    tv = torchvision.datasets.ImageFolder(str(image_folder))
    out = _pooled(_apply_all(stats.minmax(), [img for img, _ in tv]))
    assert out.min(1).values.tolist() == [0.0, 0.0, 0.0]
    assert out.max(1).values.tolist() == [1.0, 1.0, 1.0]


def test_minmax_feature_range(tmp_path):
    make_mnist(tmp_path)
    stats = prep.compute_stats("mnist", root=tmp_path)
    x = torch.tensor([[[0, 255]]], dtype=torch.uint8)
    lo, hi = stats.min[0], stats.max[0]
    y = stats.minmax(feature_range=(-1.0, 1.0))(x)
    expected = -1 + (torch.tensor([0.0, 1.0]) - lo) * 2 / (hi - lo)
    torch.testing.assert_close(y.flatten(), expected.float(), atol=1e-6, rtol=0)


def test_denormalize_inverts_normalize(image_folder):
    stats = prep.compute_stats(image_folder)
    img = torch.randint(0, 256, (3, 5, 7), dtype=torch.uint8)
    back = stats.denormalize()(stats.normalize()(img))
    torch.testing.assert_close(back, img.float() / 255, atol=1e-6, rtol=0)


def test_channels_are_converted_as_pil_converts_them_or_refused(tmp_path):
    make_mnist(tmp_path)
    stats = prep.compute_stats("mnist", root=tmp_path)
    rgb = np.random.default_rng(8).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    from_pil = stats.normalize()(Image.fromarray(rgb))  # the measured conversion: RGB -> L
    from_tensor = stats.normalize()(torch.from_numpy(rgb.transpose(2, 0, 1).copy()))  # uint8 RGB -> PIL's luma
    assert from_pil.shape == from_tensor.shape == (1, 4, 5)
    torch.testing.assert_close(from_tensor, from_pil.as_subclass(torch.Tensor), rtol=0, atol=0)
    with pytest.raises(ChannelMismatchError, match=r"shape \(3, 4, 4\).*1 channel"):
        stats.normalize()(torch.zeros(3, 4, 4))  # float colour: no conversion matches what was measured
    with pytest.raises(ChannelMismatchError, match=r"shape \(2, 4, 4\)"):
        stats.normalize()(torch.zeros(2, 4, 4, dtype=torch.uint8))


def test_zero_variance_refuses_without_eps():
    with pytest.warns(prep.PrepWarning, match=r"channel\(s\) \[0\] have zero variance"):
        stats = prep.compute_stats([torch.full((1, 3, 3), 128, dtype=torch.uint8)] * 2)
    assert stats.std == (0.0,)
    with pytest.raises(DegenerateStatsError, match=r"std is 0 for channel\(s\) \[0\].*eps"):
        stats.normalize()
    with pytest.raises(DegenerateStatsError, match="max - min"):
        stats.minmax()
    out = stats.normalize(eps=1e-3)(torch.full((1, 2, 2), 129, dtype=torch.uint8))
    torch.testing.assert_close(out, torch.full((1, 2, 2), (1 / 255) / 1e-3), rtol=1e-5, atol=0)


def test_sixteen_bit_png_through_the_pipeline(tmp_path):
    raw = np.array([[0, 1000], [30000, 65535]], dtype=np.uint16)
    Image.fromarray(raw).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as img:
        assert img.mode.startswith("I")
        stats = prep.compute_stats(tmp_path, mode="L")
        x = raw.astype(np.float64) / 65535
        np.testing.assert_allclose(stats.mean, [x.mean()], rtol=1e-12)
        assert stats.pixel_max == 65535
        out = stats.normalize()(img)
    np.testing.assert_allclose(out.double().flatten(), ((x - x.mean()) / x.std()).flatten(), atol=1e-5)


def test_pipeline_is_a_v2_compose_ending_in_normalize(tmp_path):
    make_mnist(tmp_path)
    t = prep.compute_stats("mnist", root=tmp_path).normalize()
    assert isinstance(t, v2.Compose) and isinstance(t.transforms[-1], v2.Normalize)


def _grey_stats(values: np.ndarray):
    return prep.compute_stats([Image.fromarray(values)])


@pytest.mark.parametrize("feature_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0), (-2.0, 3.0)])
def test_minmax_maps_the_measured_extremes_exactly(feature_range):
    values = np.array([[100, 180], [248, 101]], np.uint8)  # extremes other than 0 and 255
    stats = _grey_stats(values)
    out = stats.minmax(feature_range)(Image.fromarray(values)).as_subclass(torch.Tensor)
    assert out.min().item() == feature_range[0] and out.max().item() == feature_range[1]
    assert out[0, 1, 0].item() == feature_range[1] and out[0, 0, 0].item() == feature_range[0]


def test_minmax_is_exact_per_channel_for_rgb_and_16_bit_data():
    rgb = np.random.default_rng(3).integers(13, 241, (6, 7, 3), dtype=np.uint8)
    stats = prep.compute_stats([Image.fromarray(rgb)])
    out = stats.minmax()(Image.fromarray(rgb)).as_subclass(torch.Tensor)
    assert out.amin((1, 2)).tolist() == [0.0] * 3 and out.amax((1, 2)).tolist() == [1.0] * 3
    sixteen = Image.fromarray(np.array([[1799, 40000], [1800, 2]], np.uint16))
    stats16 = prep.compute_stats([sixteen])
    out16 = stats16.minmax()(sixteen).as_subclass(torch.Tensor)
    assert out16.min().item() == 0.0 and out16.max().item() == 1.0


def test_numpy_images_are_converted_like_pil_images(tmp_path):
    rgb = np.random.default_rng(5).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    stats = prep.compute_stats([Image.fromarray(rgb)])
    t = stats.normalize()
    from_pil = t(Image.fromarray(rgb)).as_subclass(torch.Tensor)
    torch.testing.assert_close(t(rgb).as_subclass(torch.Tensor), from_pil, rtol=0, atol=0)
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 9, np.uint8)], axis=-1)  # alpha dropped, as PIL's convert
    torch.testing.assert_close(t(rgba).as_subclass(torch.Tensor), from_pil, rtol=0, atol=0)
    unit = rgb.astype(np.float32) / 255  # float arrays are unit scale already
    torch.testing.assert_close(t(unit).as_subclass(torch.Tensor), from_pil, rtol=1e-6, atol=1e-6)
    make_mnist(tmp_path)
    grey_stats = prep.compute_stats("mnist", root=tmp_path)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    torch.testing.assert_close(
        grey_stats.normalize()(rgb).as_subclass(torch.Tensor),
        grey_stats.normalize()(Image.fromarray(luma)).as_subclass(torch.Tensor),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ChannelMismatchError, match=r"shape \(5, 6, 2\)"):
        t(np.zeros((5, 6, 2), np.uint8))
    with pytest.raises(TypeError, match="dtype complex64"):
        t(np.zeros((5, 6, 3), np.complex64))


def test_lighting_adds_eigvec_times_alpha_eigval():
    stats = prep.compute_stats("sample", covariance=True, workers=0)
    x = torch.rand(3, 8, 8)
    assert torch.equal(stats.lighting(alphastd=0.0)(x), x)
    torch.manual_seed(0)
    shifts = torch.stack([(stats.lighting(0.1)(x) - x)[:, 0, 0] for _ in range(4000)]).double()
    d = stats.lighting(0.1)(x) - x
    assert torch.allclose(d, d[:, :1, :1].expand_as(d)) and d.abs().max() > 0  # one shift for every pixel
    vec, val = torch.tensor(stats.pca["eigvec"]).double(), torch.tensor(stats.pca["eigval"]).double()
    expected = vec @ torch.diag((0.1 * val) ** 2) @ vec.T  # covariance of eigvec @ (alpha * eigval)
    np.testing.assert_allclose(torch.cov(shifts.T, correction=0), expected, rtol=0.1, atol=1e-9)
    with pytest.raises(TypeError, match="after ToDtype"):
        stats.lighting()(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(StatsFileError, match="measure with covariance=True"):
        prep.compute_stats("sample", workers=0, covariance=False).lighting()
