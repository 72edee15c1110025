"""Volumes' constants for nnU-Net, MONAI and torchio, and the CT scheme on (C, X, Y, Z) tensors.

Each is checked against a NumPy reference over exactly the measured voxels, and against the
library itself where it is installed: nnU-Net's ``CTNormalization`` (its code, step for step,
as the reference where nnunetv2 is absent), MONAI's ``ScaleIntensityRanged`` and
``NormalizeIntensity``, torchio's ``RescaleIntensity``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import prep
from helpers import run

pytest.importorskip("nibabel")  # NIfTI volumes need the medical extra

from helpers.nifti_files import IGNORE, ct_dataset
from prep.insight.exports import NNUNET_KEYS, export, render


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    data = ct_dataset(root, cases=3)
    stats = prep.compute_stats(str(root), workers=0, foreground=True, ignore_label=IGNORE)
    foreground = np.concatenate([hu[(lab > 0) & (lab != IGNORE)] for hu, lab in data.values()])
    return root, data, stats, foreground


def nnunet_ct_normalization(image: np.ndarray, props: dict) -> np.ndarray:
    """nnU-Net v2's CTNormalization.run (default_normalization_schemes.py), step for step."""
    image = image.astype(np.float32, copy=False)
    np.clip(image, props["percentile_00_5"], props["percentile_99_5"], out=image)
    image -= props["mean"]
    image /= max(props["std"], 1e-8)
    return image


def test_nnunet_block_has_its_keys_and_exact_values(ct):
    _, _, stats, fg = ct
    out = export(stats, "nnunet")
    props = out["foreground_intensity_properties_per_channel"]["0"]
    assert tuple(sorted(props)) == NNUNET_KEYS
    f64 = fg.astype(np.float64)
    assert props["mean"] == f64.mean() and props["std"] == pytest.approx(f64.std(), rel=1e-12)
    assert props["median"] == np.median(fg) and props["min"] == fg.min() and props["max"] == fg.max()
    assert props["percentile_00_5"] == np.percentile(fg, 0.5)
    assert props["percentile_99_5"] == np.percentile(fg, 99.5)
    assert json.loads(out["snippet"]) == {"foreground_intensity_properties_per_channel": {"0": props}}


def test_ct_normalize_is_nnunets_ct_normalization(ct):
    _, data, stats, _ = ct
    props = export(stats, "nnunet")["foreground_intensity_properties_per_channel"]["0"]
    transform = stats.ct_normalize()
    for hu, _ in data.values():
        got = transform(torch.from_numpy(hu[None]))
        assert got.dtype == torch.float32 and got.shape == (1, *hu.shape)
        assert np.array_equal(got[0].numpy(), nnunet_ct_normalization(hu.copy(), props))


def test_ct_normalize_against_nnunetv2_itself(ct):
    schemes = pytest.importorskip("nnunetv2.preprocessing.normalization.default_normalization_schemes")
    _, data, stats, _ = ct
    props = export(stats, "nnunet")["foreground_intensity_properties_per_channel"]["0"]
    norm = schemes.CTNormalization(use_mask_for_norm=False, intensityproperties=props)
    hu, _ = next(iter(data.values()))
    assert np.array_equal(stats.ct_normalize()(hu[None])[0].numpy(), norm.run(hu.copy()))


def test_normalize_clips_and_standardizes_volumes(ct):
    _, data, stats, fg = ct
    low, high = np.percentile(fg, 0.5), np.percentile(fg, 99.5)
    clamped = np.clip(fg.astype(np.float64), low, high)
    transform = stats.normalize(clip_percentiles=(0.5, 99.5))
    assert transform.low == [low] and transform.high == [high]
    assert transform.mean[0] == pytest.approx(clamped.mean(), rel=1e-12)
    assert transform.std[0] == pytest.approx(clamped.std(), rel=1e-12)
    plain = stats.normalize()
    hu, _ = next(iter(data.values()))
    want = ((hu.astype(np.float32) - np.float32(stats.mean[0])) / np.float32(stats.std[0]))[None]
    assert np.array_equal(plain(torch.from_numpy(hu[None])).numpy(), want)


def test_monai_export_gains_the_percentile_range_and_matches_monai(ct):
    transforms = pytest.importorskip("monai.transforms")
    _, data, stats, fg = ct
    out = export(stats, "monai")
    (scale,) = out["scale_intensity_range"]
    assert scale == {
        "a_min": np.percentile(fg, 0.5),
        "a_max": np.percentile(fg, 99.5),
        "b_min": 0.0,
        "b_max": 1.0,
        "clip": True,
    }
    assert "ScaleIntensityRanged(keys=['image'], a_min=" in out["snippet"]
    hu, _ = next(iter(data.values()))
    image = torch.from_numpy(hu[None].astype(np.float32))
    scaled = transforms.ScaleIntensityRanged(keys=["image"], **scale)({"image": image})["image"]
    want = np.clip((hu.astype(np.float64) - scale["a_min"]) / (scale["a_max"] - scale["a_min"]), 0, 1)
    assert np.allclose(np.asarray(scaled)[0], want, atol=1e-6)
    normalized = transforms.NormalizeIntensity(out["subtrahend"], out["divisor"], channel_wise=True)(image)
    assert np.allclose(np.asarray(normalized)[0], (hu - stats.mean[0]) / stats.std[0], atol=1e-5)


def test_torchio_export(ct):
    _, data, stats, fg = ct
    out = export(stats, "torchio")
    assert out["in_min_max"] == [[np.percentile(fg, 0.5), np.percentile(fg, 99.5)]]
    assert "tio.Clamp(out_min=" in out["snippet"] and "tio.RescaleIntensity(out_min_max=(0.0, 1.0)" in out["snippet"]
    tio = pytest.importorskip("torchio")
    hu, _ = next(iter(data.values()))
    image = tio.ScalarImage(tensor=torch.from_numpy(hu[None].astype(np.float32)))
    low, high = out["in_min_max"][0]
    pipeline = tio.Compose(
        [tio.Clamp(out_min=low, out_max=high), tio.RescaleIntensity((0.0, 1.0), in_min_max=(low, high))]
    )
    rescaled = pipeline(image).data[0].numpy()
    want = (np.clip(hu.astype(np.float64), low, high) - low) / (high - low)
    assert np.allclose(rescaled, want, atol=1e-5) and rescaled.min() >= 0.0 and rescaled.max() <= 1.0


def test_cli_export_to_nnunet_and_units_are_fixed(ct, tmp_path):
    _, _, stats, _ = ct
    path = tmp_path / "s.json"
    stats.save(path)
    result = run("export", path, "--to", "nnunet", "--format", "json")
    assert result.exit_code == 0, result.output
    block = json.loads(result.output)["foreground_intensity_properties_per_channel"]
    assert block == export(stats, "nnunet")["foreground_intensity_properties_per_channel"]
    assert render(export(stats, "nnunet")).startswith("# nnunet: mean/std in the data's own values")
    result = run("export", path, "--to", "nnunet", "--units", "unit")
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_export_drops_into_an_nnunet_plans_file(ct, tmp_path):
    _, _, stats, _ = ct
    plans = {"dataset_name": "Dataset001_CT", "foreground_intensity_properties_per_channel": {"0": {}}}
    plans.update(export(stats, "nnunet"))
    del plans["target"], plans["snippet"]
    props = plans["foreground_intensity_properties_per_channel"]["0"]
    assert set(props) == set(NNUNET_KEYS) and all(isinstance(v, float) for v in props.values())


NNUNET_FINGERPRINT = """
import json, sys
from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor
extractor = DatasetFingerprintExtractor(999, num_processes=1)
extractor.num_foreground_voxels_for_intensitystats = float(sys.argv[1])
print(json.dumps(extractor.run(overwrite_existing=True)["foreground_intensity_properties_per_channel"]))
"""


def test_nnunetv2_fingerprint_lies_within_its_sampling_error_of_prep_exact_values(tmp_path):
    pytest.importorskip("nnunetv2")
    import os
    import subprocess
    import sys

    raw = tmp_path / "raw"
    data = ct_dataset(raw / "Dataset999_CT", cases=3)
    env = {
        **os.environ,
        "nnUNet_raw": str(raw),
        "nnUNet_preprocessed": str(tmp_path / "pre"),
        "nnUNet_results": str(tmp_path / "results"),
    }
    samples = 300_000
    done = subprocess.run(
        [sys.executable, "-c", NNUNET_FINGERPRINT, str(samples)], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = json.loads(done.stdout.strip().splitlines()[-1])["0"]
    # nnU-Net's foreground is every label > 0 (its ignore label included): measure the same voxels
    stats = prep.compute_stats(str(raw / "Dataset999_CT"), workers=0, foreground=True)
    ours = export(stats, "nnunet")["foreground_intensity_properties_per_channel"]["0"]
    assert set(ours) == set(theirs) == set(NNUNET_KEYS)  # the block drops into nnU-Net's plans as it is
    fg = np.concatenate([hu[lab > 0] for hu, lab in data.values()]).astype(np.float64)
    assert ours["mean"] == fg.mean() and ours["percentile_99_5"] == np.percentile(fg, 99.5)
    error = fg.std() / np.sqrt(samples)  # the standard error of a sampled mean
    assert abs(theirs["mean"] - ours["mean"]) < 6 * error
    assert abs(theirs["std"] - ours["std"]) < 0.02 * ours["std"]
    assert ours["min"] <= theirs["min"] and theirs["max"] <= ours["max"]
    span = ours["max"] - ours["min"]
    for key in ("percentile_00_5", "median", "percentile_99_5"):
        assert abs(theirs[key] - ours[key]) < 0.02 * span, key
