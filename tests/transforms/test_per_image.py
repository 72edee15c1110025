"""prep.transforms.per_image: layer / instance / group axes against torch's own normalization functions
(no affine), the v2 transform's inputs converted as prep's pipelines convert them, and
albumentations' per-image modes where their definition matches (and where it does not)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import prep
from prep.transforms.per_image import PerImageNormalize, per_image_normalize

RNG = np.random.default_rng(7)


def batch(n=4, c=6, h=9, w=11, dtype=torch.float32):
    x = torch.from_numpy(RNG.random((n, c, h, w))) * torch.linspace(0.2, 1.0, c).view(1, c, 1, 1)
    return x.to(dtype)


def close(actual, expected, atol=1e-5):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), atol=atol, rtol=0)


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.0])
def test_layer_equals_torch_layer_norm(eps):
    x = batch()
    close(per_image_normalize(x, "layer", eps=eps), F.layer_norm(x, x.shape[-3:], eps=eps))


@pytest.mark.parametrize("eps", [1e-5, 1e-3])
def test_instance_equals_torch_instance_norm(eps):
    x = batch()
    close(per_image_normalize(x, "instance", eps=eps), F.instance_norm(x, eps=eps))


@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_group_equals_torch_group_norm(groups):
    x = batch()
    close(per_image_normalize(x, "group", groups=groups, eps=1e-5), F.group_norm(x, groups, eps=1e-5))


def test_group_of_one_is_layer_and_group_of_c_is_instance():
    x = batch(c=4)
    close(per_image_normalize(x, "group", groups=1), per_image_normalize(x, "layer"), atol=1e-12)
    close(per_image_normalize(x, "group", groups=4), per_image_normalize(x, "instance"), atol=1e-12)


def test_independent_numpy_formula_on_one_unbatched_image():
    x = batch(n=1)[0].double()
    arr = x.numpy()
    mu = arr.mean(axis=(1, 2), keepdims=True)
    var = ((arr - mu) ** 2).mean(axis=(1, 2), keepdims=True)
    expected = (arr - mu) / np.sqrt(var + 1e-5)
    out = per_image_normalize(x, "instance")
    assert out.shape == x.shape and out.dtype == torch.float64
    close(out, expected, atol=1e-12)


def test_uint8_is_unit_scaled_first_and_result_is_float32():
    raw = torch.from_numpy(RNG.integers(0, 256, (2, 3, 8, 8), dtype=np.uint8))
    out = per_image_normalize(raw, "layer", eps=1e-5)
    assert out.dtype == torch.float32
    unit = raw.double() / 255
    close(out, F.layer_norm(unit, unit.shape[-3:], eps=1e-5))


def test_sixteen_bit_integers_are_divided_by_65535():
    raw = torch.from_numpy(RNG.integers(0, 65536, (3, 8, 8)).astype(np.int32))
    close(per_image_normalize(raw, "instance"), F.instance_norm((raw.double() / 65535)[None], eps=1e-5)[0])


def test_errors_are_one_line_and_name_the_option():
    x = batch()
    with pytest.raises(prep.OptionError, match="axes must be one of layer, instance, group; got 'batch'"):
        per_image_normalize(x, "batch")
    with pytest.raises(prep.OptionError, match="axes='group' needs groups=G"):
        per_image_normalize(x, "group")
    with pytest.raises(prep.OptionError, match="groups=4 does not divide the 6 channels"):
        per_image_normalize(x, "group", groups=4)
    with pytest.raises(prep.OptionError, match="groups is for axes='group' only"):
        per_image_normalize(x, "layer", groups=2)
    with pytest.raises(prep.OptionError, match="eps must be a non-negative number"):
        per_image_normalize(x, "layer", eps=-1)
    with pytest.raises(prep.OptionError, match=r"needs a tensor \(\.\.\., C, H, W\); got \(5, 5\)"):
        per_image_normalize(torch.zeros(5, 5))
    with pytest.raises(prep.OptionError, match="axes must be one of"):
        PerImageNormalize("batch")


# ------------------------------------------------------------------ the v2 transform's inputs
def test_transform_on_pil_rgb_and_grey_keeps_their_channels():
    arr = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    rgb = Image.fromarray(arr)
    expected = F.layer_norm(torch.from_numpy(arr).permute(2, 0, 1).double()[None] / 255, (3, 10, 12), eps=1e-5)[0]
    out = PerImageNormalize("layer")(rgb)
    assert out.shape == (3, 10, 12) and out.dtype == torch.float32
    close(out, expected)
    grey = rgb.convert("L")
    g = torch.from_numpy(np.array(grey)).double()[None, None] / 255
    close(PerImageNormalize("instance")(grey), F.instance_norm(g, eps=1e-5)[0])


def test_transform_with_mode_converts_like_prep_pipelines():
    rgb = Image.fromarray(RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8))
    converted = prep.ConvertPixels("L")(rgb)  # PIL's luma, as prep measures in mode L
    expected = per_image_normalize(converted, "layer")
    close(PerImageNormalize("layer", mode="L")(rgb), expected, atol=0)
    assert torch.equal(converted, torch.from_numpy(np.array(rgb.convert("L")))[None])


def test_transform_on_numpy_hwc_and_sixteen_bit_pil():
    arr = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    tensor = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    close(PerImageNormalize("instance")(arr), per_image_normalize(tensor, "instance"), atol=0)
    wide = RNG.integers(0, 65536, (6, 7)).astype(np.uint16)
    img = Image.fromarray(wide)  # mode I;16
    expected = F.instance_norm(torch.from_numpy(wide.astype(np.float64))[None, None] / 65535, eps=1e-5)[0]
    close(PerImageNormalize("instance")(img), expected)


def test_transform_in_a_compose_with_a_label_and_a_mask():
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    img = tv_tensors.Image(torch.from_numpy(RNG.integers(0, 256, (3, 8, 8), dtype=np.uint8)))
    mask = tv_tensors.Mask(torch.ones(8, 8, dtype=torch.uint8))
    out, out_mask, label = v2.Compose([PerImageNormalize("group", groups=3)])(img, mask, 5)
    assert isinstance(out, tv_tensors.Image) and out_mask is mask and label == 5
    close(out, F.group_norm(img.double()[None] / 255, 3, eps=1e-5)[0])
    assert "axes='group', groups=3" in repr(PerImageNormalize("group", groups=3))


# ------------------------------------------------------------------ albumentations' per-image modes
def _image(spread=40):
    return np.clip(RNG.normal(120, spread, (16, 16, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("normalization", "axes"), [("image", "layer"), ("image_per_channel", "instance")])
def test_albumentations_per_image_modes_match_on_typical_images(normalization, axes):
    """albumentations computes on raw values and adds eps=1e-4 to the std (not 1e-5 to the
    variance, in unit scale); with eps=0 here, the two agree to 1e-5 on an image whose std is
    far above 1e-4 raw (the formula is scale-invariant otherwise)."""
    A = pytest.importorskip("albumentations")
    arr = _image()
    theirs = A.Normalize(normalization=normalization)(image=arr)["image"]
    ours = PerImageNormalize(axes, eps=0.0)(arr).permute(1, 2, 0)
    close(theirs, ours, atol=1e-5)
    # their definition, written out: (x - mean) / (std + 1e-4) in raw units, clipped to [-20, 20]
    raw = arr.astype(np.float64)
    over = (0, 1, 2) if normalization == "image" else (0, 1)
    mean, std = raw.mean(axis=over), raw.std(axis=over)
    close(theirs, np.clip((raw - mean) / (std + 1e-4), -20, 20), atol=1e-5)


def test_albumentations_differs_on_nearly_constant_images():
    """Where the definitions part: albumentations clips at +-20 and its eps is 1e-4 on the raw std;
    prep (like torch's norms) does not clip and adds eps to the variance in unit scale."""
    A = pytest.importorskip("albumentations")
    arr = np.full((32, 32, 1), 100, np.uint8)
    arr[0, 0, 0] = 101  # one pixel in 1024: its standardized value is sqrt(1023) = 31.98
    theirs = A.Normalize(normalization="image")(image=arr)["image"]
    assert theirs[0, 0, 0] == pytest.approx(20.0)  # clipped
    ours = PerImageNormalize("layer", eps=0.0)(arr)
    assert float(ours[0, 0, 0]) == pytest.approx(np.sqrt(1023), rel=1e-6)
    damped = PerImageNormalize("layer")(arr)  # eps=1e-5 dominates a variance of 1.5e-8
    var = (1023 / 1024**2) / 255**2
    assert float(damped[0, 0, 0]) == pytest.approx((1023 / 1024 / 255) / np.sqrt(var + 1e-5), rel=1e-6)
