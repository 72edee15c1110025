"""prep.insight.exports: each library, built from the exported numbers (the pasted snippet itself, run),
maps the measured data exactly as ``stats.normalize()`` does; units are checked by independent
arithmetic on the raw pixels. Libraries that are not installed are skipped."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import assert_close
from prep.insight.exports import TARGETS, export, file_text, render, save_export, update_preprocessor_config

RNG = np.random.default_rng(14)
# 8-bit RGB data with different per-channel levels and spreads, as (N, C, H, W)
PIXELS = np.stack(
    [np.clip(RNG.normal(loc, spread, (5, 12, 12)), 0, 255) for loc, spread in ((60, 30), (130, 45), (200, 20))],
    axis=1,
).astype(np.uint8)


@pytest.fixture(scope="module")
def stats():
    return prep.compute_stats([torch.from_numpy(img) for img in PIXELS], device="cpu")


@pytest.fixture(scope="module")
def stats16():
    wide = PIXELS.astype(np.int32) * 257  # 0..65535
    return prep.compute_stats([torch.from_numpy(img) for img in wide], device="cpu")


@pytest.fixture(scope="module")
def expected(stats):
    """What prep's own pipeline gives on the first image, (C, H, W) float32."""
    return stats.normalize()(torch.from_numpy(PIXELS[0])).numpy()


def raw_moments():
    """Mean and population std per channel of the raw 0..255 pixels, straight from NumPy."""
    values = PIXELS.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    return values.mean(1), values.std(1)


def hwc(image_chw: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image_chw.transpose(1, 2, 0))


# ------------------------------------------------------------------ the object and its rendering
@pytest.mark.parametrize("target", TARGETS)
def test_every_export_has_the_contract_fields_and_names_its_units(stats, target):
    out = export(stats, target)
    assert {"target", "mode", "mean", "std", "units", "snippet"} <= set(out)
    assert out["target"] == target and out["mode"] == "RGB"
    assert out["units"] in ("unit scale", "0..255")
    text = render(out)
    assert out["units"] in text.splitlines()[0] and text.endswith(out["snippet"])
    assert json.loads(render(out, "json")) == out


@pytest.mark.parametrize("target", TARGETS)
def test_units_are_the_libraries_own(stats, target):
    raw_mean, raw_std = raw_moments()
    out = export(stats, target)
    if target in ("dali", "ffcv", "monai", "keras", "nnunet", "torchio"):  # decoded pixels / raw intensities: 0..255
        assert out["units"] == "0..255"
        assert_close(out["mean"], raw_mean, rel=1e-12)
        assert_close(out["std"], raw_std, rel=1e-12)
    else:
        assert out["units"] == "unit scale"
        assert_close(out["mean"], raw_mean / 255, rel=1e-12)
        assert_close(out["std"], raw_std / 255, rel=1e-12)


def test_keras_variance_is_std_squared_in_the_units_named(stats):
    raw = PIXELS.transpose(1, 0, 2, 3).reshape(3, -1).astype(np.float64)
    out = export(stats, "keras")
    assert_close(out["variance"], raw.var(1), rel=1e-12)
    unit = export(stats, "keras", units="unit")
    assert unit["units"] == "unit scale"
    assert_close(unit["variance"], (raw / 255).var(1), rel=1e-12)
    assert_close(unit["mean"], stats.mean, rel=0)


def test_sixteen_bit_data_exports_in_0_to_65535(stats16):
    out = export(stats16, "dali")
    assert out["units"] == "0..65535"
    assert_close(out["mean"], np.array(stats16.mean) * 65535, rel=1e-15)
    alb = export(stats16, "albumentations")
    assert alb["max_pixel_value"] == 65535.0 and alb["units"] == "unit scale"
    hf = export(stats16, "hf")["preprocessor_config"]
    assert hf["rescale_factor"] == 1 / 65535 and hf["do_rescale"] is True


def test_unknown_target_and_fixed_units_are_one_line_errors(stats):
    with pytest.raises(prep.OptionError, match=r"--to: unknown target 'caffe'; choose one of torchvision, "):
        export(stats, "caffe")
    with pytest.raises(prep.OptionError, match=r"--units is for monai and keras only; dali takes 0\.\.pixel max"):
        export(stats, "dali", units="unit")
    for target in ("torchvision", "albumentations", "hf", "timm", "kornia", "dali", "ffcv"):
        for units in ("raw", "unit"):  # fixed units: the option means nothing there, even when it matches
            with pytest.raises(prep.OptionError, match=f"--units is for monai and keras only; {target} takes"):
                export(stats, target, units=units)
    with pytest.raises(prep.OptionError, match="--units must be 'raw' or 'unit'"):
        export(stats, "keras", units="0..1")
    with pytest.raises(prep.OptionError, match="--format must be one of text, json"):
        render(export(stats, "timm"), "yaml")


def test_file_text_is_pure_json_for_hf_and_the_rendering_otherwise(stats, tmp_path):
    hf = export(stats, "hf")
    assert json.loads(file_text(hf)) == hf["preprocessor_config"]
    save_export(export(stats, "dali"), tmp_path / "dali.txt")
    assert (tmp_path / "dali.txt").read_text() == render(export(stats, "dali")) + "\n"
    save_export(export(stats, "dali"), tmp_path / "dali.json", "json")
    assert json.loads((tmp_path / "dali.json").read_text())["target"] == "dali"


# ------------------------------------------------------------------ the real libraries
def test_torchvision_snippet(stats, expected):
    from torchvision import transforms

    normalize = eval(export(stats, "torchvision")["snippet"], {"transforms": transforms})
    out = normalize(torch.from_numpy(PIXELS[0]).float() / 255)
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6, rtol=0)


def test_albumentations_on_uint8_hwc_equals_normalize(stats, expected):
    A = pytest.importorskip("albumentations")
    transform = eval(export(stats, "albumentations")["snippet"], {"A": A})
    out = transform(image=hwc(PIXELS[0]))["image"]
    assert out.dtype == np.float32
    # 1e-5, not 1e-6: albumentations holds mean * 255 in float32 (an error up to ulp(255) / 2 = 7.6e-6
    # before dividing by std * 255), then maps uint8 through a float32 lookup table
    np.testing.assert_allclose(out, hwc(expected), atol=1e-5, rtol=0)
    exact = (hwc(PIXELS[0]) / 255.0 - np.array(stats.mean)) / np.array(stats.std)
    np.testing.assert_allclose(out, exact, atol=1e-5, rtol=0)


def test_kornia_equals_torchvision(stats, expected):
    kornia = pytest.importorskip("kornia")
    normalize = eval(export(stats, "kornia")["snippet"], {"kornia": kornia, "torch": torch})
    out = normalize(torch.from_numpy(PIXELS[:1]).float() / 255)
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-6, rtol=0)


def test_monai_on_raw_channel_first_pixels(stats, expected):
    monai_transforms = pytest.importorskip("monai.transforms")
    ns = {"NormalizeIntensity": monai_transforms.NormalizeIntensity}
    normalize = eval(export(stats, "monai")["snippet"], ns)
    out = np.asarray(normalize(torch.from_numpy(PIXELS[0])))  # uint8, as LoadImage would give
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)
    scaled = eval(export(stats, "monai", units="unit")["snippet"], ns)  # after ScaleIntensity-like scaling
    np.testing.assert_allclose(np.asarray(scaled(torch.from_numpy(PIXELS[0]) / 255.0)), expected, atol=1e-5, rtol=0)


def test_hf_image_processor(stats, expected):
    transformers = pytest.importorskip("transformers")
    fragment = export(stats, "hf")["preprocessor_config"]
    processor = transformers.ViTImageProcessor(do_resize=False, **fragment)
    out = processor(images=Image.fromarray(hwc(PIXELS[0])), return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5, rtol=0)


def test_update_preprocessor_config_keeps_other_keys_and_loads_in_transformers(stats, expected, tmp_path):
    config = {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": False,
        "size": {"height": 12, "width": 12},
        "resample": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "do_normalize": False,
    }
    path = tmp_path / "preprocessor_config.json"
    path.write_text(json.dumps(config))
    new = update_preprocessor_config(path, stats)
    on_disk = json.loads(path.read_text())
    assert on_disk == new
    assert list(on_disk)[: len(config)] == list(config)  # key order kept
    for key in ("image_processor_type", "do_resize", "size", "resample"):
        assert on_disk[key] == config[key]
    assert_close(on_disk["image_mean"], stats.mean, rel=0)
    assert on_disk["do_normalize"] is True and on_disk["rescale_factor"] == 1 / 255
    assert [p.name for p in tmp_path.iterdir()] == ["preprocessor_config.json"]  # no temp file left
    transformers = pytest.importorskip("transformers")
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path)
    out = processor(images=Image.fromarray(hwc(PIXELS[0])), return_tensors="pt")["pixel_values"]
    np.testing.assert_allclose(out[0].numpy(), expected, atol=1e-5, rtol=0)


def test_update_preprocessor_config_errors_name_the_file(stats, tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(prep.PrepError, match=r"nope.json: cannot read preprocessor config"):
        update_preprocessor_config(missing, stats)
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(prep.PrepError, match=r"bad.json: not a preprocessor config"):
        update_preprocessor_config(bad, stats)
    assert bad.read_text() == "[1, 2]"


def test_timm_pretrained_cfg_overlay_and_resolve_data_config(stats, expected):
    pytest.importorskip("timm")
    import timm.data

    snippet = export(stats, "timm")["snippet"].replace('"MODEL"', '"resnet18"')
    ns = {"timm": timm}
    exec(snippet, ns)
    config = ns["config"]
    assert_close(config["mean"], stats.mean, rel=0)
    assert_close(config["std"], stats.std, rel=0)
    # the same constants through timm's own eval transform, at the image's size and no crop
    h, w = PIXELS.shape[-2:]
    transform = timm.data.create_transform(**{**config, "input_size": (3, h, w), "crop_pct": 1.0})
    out = transform(Image.fromarray(hwc(PIXELS[0])))
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-5, rtol=0)


def test_keras_normalization_layer(stats, expected, monkeypatch):
    if "KERAS_BACKEND" not in os.environ:  # keras 3 reads it on import; torch is the backend installed here
        monkeypatch.setenv("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    layer = eval(export(stats, "keras")["snippet"], {"keras": keras})
    out = layer(hwc(PIXELS[0]).astype(np.float32)[None])
    out = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else keras.ops.convert_to_numpy(out)
    np.testing.assert_allclose(out[0], hwc(expected), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ DALI and FFCV: no CPU wheels, checked by numbers
def _crop_mirror_normalize(images, mean, std, scale=1.0, shift=0.0):
    """DALI's documented formula for fn.crop_mirror_normalize (HWC in, CHW out by default)."""
    out = (images.astype(np.float32) - np.float32(mean)) / np.float32(std) * scale + shift
    return out.transpose(2, 0, 1)


class _NormalizeImage:
    """FFCV's NormalizeImage formula on uint8 HWC batches: (x - mean) / std in ``type``."""

    def __init__(self, mean, std, type):
        self.mean, self.std, self.type = mean, std, type

    def __call__(self, images):
        return ((images - self.mean) / self.std).astype(self.type)


def test_dali_numbers_in_0_to_255(stats, expected):
    class fn:
        crop_mirror_normalize = staticmethod(_crop_mirror_normalize)

    out = eval(export(stats, "dali")["snippet"], {"fn": fn, "images": hwc(PIXELS[0])})
    np.testing.assert_allclose(out, expected, atol=1e-5, rtol=0)


def test_ffcv_numbers_in_0_to_255(stats, expected):
    normalize = eval(export(stats, "ffcv")["snippet"], {"NormalizeImage": _NormalizeImage, "np": np})
    assert normalize.type is np.float32
    out = normalize(hwc(PIXELS[0]).astype(np.float64))
    np.testing.assert_allclose(out, hwc(expected), atol=1e-5, rtol=0)


# ------------------------------------------------------------------ Stats.export and `prep export`, once wired in
def _saved(stats, tmp_path):
    path = tmp_path / "s.json"
    stats.save(path)
    return path


def test_stats_export_method_returns_the_same_object(stats):
    if not hasattr(prep.Stats, "export"):
        pytest.skip("Stats.export is not wired in yet")
    for target in TARGETS:
        assert stats.export(target) == export(stats, target)


def test_cli_export_prints_text_json_and_writes_files(stats, tmp_path):
    from helpers import run

    path = _saved(stats, tmp_path)
    result = run("export", path, "--to", "albumentations")
    if "No such command" in result.output:
        pytest.skip("prep export is not wired in yet")
    assert result.exit_code == 0, result.output
    assert result.output == render(export(stats, "albumentations")) + "\n"
    result = run("export", path, "--to", "dali", "--format", "json")
    assert json.loads(result.output) == export(stats, "dali")
    result = run("export", path, "--to", "keras", "--units", "unit", "--format", "json")
    assert json.loads(result.output)["units"] == "unit scale"
    assert run("export", path, "--to", "hf", "-o", tmp_path / "frag.json").exit_code == 0
    assert json.loads((tmp_path / "frag.json").read_text()) == export(stats, "hf")["preprocessor_config"]
    config = tmp_path / "preprocessor_config.json"
    config.write_text(json.dumps({"size": 224, "image_mean": [0.5]}))
    assert run("export", path, "--to", "hf", "--into", config).exit_code == 0
    assert json.loads(config.read_text())["size"] == 224
    bad = run("export", path, "--to", "dali", "--units", "unit")
    assert bad.exit_code == 2 and bad.output.strip().count("\n") == 0 and "--units" in bad.output
    bad = run("export", path, "--to", "timm", "--into", config)
    assert bad.exit_code == 2 and "--into" in bad.output
