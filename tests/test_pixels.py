"""prep.pixels: every PIL mode, EXIF, NaN/inf, zero variance and integers beyond 8 bits follow the
documented pixel rule."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import assert_close, run


# ------------------------------------------------------------------ PIL modes
def _mode_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(5)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    images = {m: rgb.convert(m) for m in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")}
    images["I;16"] = Image.fromarray(rng.integers(0, 65536, (6, 5), dtype=np.uint16))
    images["I"] = Image.fromarray(rng.integers(0, 65536, (6, 5)).astype(np.int32))
    images["F"] = Image.fromarray(rng.random((6, 5)).astype(np.float32))
    return images


def _rule(img: Image.Image, mode: str) -> np.ndarray:
    """The documented pixel rule, written independently: unit-scale (P, C) float64."""
    channels = 3 if mode == "RGB" else 1
    if img.mode in ("I;16", "I"):
        grey = np.asarray(img, dtype=np.float64) / 65535
    elif img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
    else:
        return np.asarray(img.convert(mode), dtype=np.float64).reshape(-1, channels) / 255
    return np.repeat(grey.reshape(-1, 1), channels, axis=1)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("pil_mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_every_pil_mode_follows_the_documented_rule(pil_mode, mode):
    img = _mode_images()[pil_mode]
    stats = prep.compute_stats([img], mode=mode)
    x = _rule(img, mode)
    assert_close(stats.mean, x.mean(0), rel=1e-12, abs_=1e-15)
    assert_close(stats.std, x.std(0), rel=1e-9, abs_=1e-15)
    assert_close(stats.max, x.max(0), rel=0)
    out = stats.normalize(eps=1e-6)(img)  # the transform applies the same rule
    expected = (x - np.array(stats.mean)) / np.maximum(np.array(stats.std), 1e-6)  # (H * W, C)
    np.testing.assert_allclose(out.numpy().reshape(len(stats.mean), -1).T, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "pil_mode,ext",
    [
        ("1", "png"),
        ("LA", "png"),
        ("P", "png"),
        ("RGBA", "png"),
        ("CMYK", "jpg"),
        ("CMYK", "tiff"),
        ("I;16", "png"),
        ("I;16", "tiff"),
        ("F", "tiff"),
        ("L", "pgm"),
        ("RGB", "ppm"),
        ("RGB", "webp"),
    ],
)
def test_modes_from_real_files(tmp_path, pil_mode, ext):
    img = _mode_images()[pil_mode]
    path = tmp_path / f"img.{ext}"
    img.save(path, **({"lossless": True} if ext == "webp" else {}))
    with Image.open(path) as reread:
        x = _rule(reread, "RGB")
    stats = prep.compute_stats(tmp_path, workers=0, mode="RGB")
    assert not stats.skipped
    assert_close(stats.mean, x.mean(0), rel=1e-12, abs_=1e-15)
    if ext == "tiff" and pil_mode in ("I;16", "F"):  # scientific TIFFs: measured in their own values by default
        default = prep.compute_stats(tmp_path, workers=0)
        with Image.open(path) as reread:
            raw = np.asarray(reread).astype(np.float64)
        assert default.mode == "bands" and default.units == "raw"
        assert_close(default.mean, [raw.mean()], rel=1e-12, abs_=1e-15)


def test_exif_orientation_does_not_change_statistics(tmp_path):
    rgb = _mode_images()["RGB"]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rgb.save(tmp_path / "plain.png")
    rotated = tmp_path / "rotated"
    rotated.mkdir()
    rgb.save(rotated / "exif.jpg", exif=exif, quality=100)
    (tmp_path / "plainjpg").mkdir()
    rgb.save(tmp_path / "plainjpg" / "x.jpg", quality=100)
    a = prep.compute_stats(rotated, workers=0)
    b = prep.compute_stats(tmp_path / "plainjpg", workers=0)
    assert (a.mean, a.std) == (b.mean, b.std)
    from PIL import ImageOps

    with Image.open(rotated / "exif.jpg") as img:
        upright = ImageOps.exif_transpose(img)  # what a viewer shows: rotated pixels
    assert upright.size == img.size[::-1]
    c = prep.compute_stats([upright])
    assert (c.mean, c.std, c.min, c.max) == (a.mean, a.std, a.min, a.max)


def test_nan_and_inf_in_float_images_are_counted_not_averaged(tmp_path):
    arr = np.array([[0.2, np.nan], [0.6, np.inf]], dtype=np.float32)
    Image.fromarray(arr).save(tmp_path / "f.tiff")
    with pytest.warns(prep.PrepWarning, match="2 NaN/inf value"):
        stats = prep.compute_stats(tmp_path, mode="L", workers=0)
    assert stats.summary.nonfinite == (2,)
    assert_close(stats.mean, [0.4], rel=1e-7)
    assert stats.to_dict()["nonfinite"] == [2]
    out = tmp_path / "s.json"
    stats.save(out)  # valid JSON: no NaN written
    assert json.loads(out.read_text())["mean"] == list(stats.mean)


def test_zero_variance_is_written_with_std_0_and_a_warning(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.new("L", (4, 4), 77).save(folder / "a.png")
    out = tmp_path / "flat.json"
    result = run("stats", folder, "--mode", "L", "-o", out)
    assert result.exit_code == 0
    assert "zero variance" in result.stderr
    assert prep.load_stats(out).std == (0.0,)


def test_integer_arrays_outside_16_bits_are_one_line_errors(tmp_path):
    np.save(tmp_path / "big.npy", np.full((2, 4, 4), 70000, np.int64))
    result = run("stats", tmp_path / "big.npy")
    assert result.exit_code == 2 and "outside 0..65535" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64, torch.uint16])
def test_integer_tensors_are_measured_and_transformed_by_one_rule(dtype):
    values = torch.from_numpy(np.random.default_rng(2).integers(0, 30000, (2, 1, 6, 5))).to(dtype)
    stats = prep.compute_stats(list(values))
    assert stats.pixel_max == 65535
    out = torch.stack([stats.normalize()(v) for v in values]).double()
    assert abs(out.mean().item()) < 1e-5 and abs(out.std(correction=0).item() - 1) < 1e-5
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        stats.normalize()(torch.full((1, 2, 2), -5, dtype=torch.int32))
    with pytest.raises(prep.SourceError, match=r"list: cannot read pixels of dtype torch\.bool"):
        prep.compute_stats([torch.ones(1, 2, 2, dtype=torch.bool)])
