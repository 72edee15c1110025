"""prep check and prep compare: do constants fit the data, does B drift from A."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import make_folder, make_mnist, run
from prep.errors import MismatchError
from prep.insight.checks import judge
from prep.insight.known import KNOWN, KnownConstants


@pytest.fixture
def folders(tmp_path):
    """A folder, its stats file, and a brightened copy of the folder."""
    root = make_folder(tmp_path / "data")
    bright = tmp_path / "bright"
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB")).astype(np.int16)
        target = bright / path.relative_to(root).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(arr + 60, 0, 255).astype(np.uint8)).save(target)
    run("stats", root, "-o", tmp_path / "data.json", "--workers", 0)
    run("stats", bright, "-o", tmp_path / "bright.json", "--workers", 0)
    return root, bright, tmp_path / "data.json", tmp_path / "bright.json"


def test_check_on_the_data_the_file_was_made_from_passes(folders):
    root, _, stats_file, _ = folders
    result = prep.check_stats(stats_file, root, workers=0)
    assert result.ok and result.fingerprint == "matches the file"
    assert max(abs(m) for m in result.normalized_mean) < 1e-6
    assert max(abs(s - 1) for s in result.normalized_std) < 1e-6
    cli = run("check", stats_file, root, "--workers", 0)
    assert cli.exit_code == 0 and "verdict: ok" in cli.stdout


def test_check_on_brightened_data_fails_with_exit_1(folders):
    _, bright, stats_file, _ = folders
    result = prep.check_stats(stats_file, bright, workers=0)
    assert not result.ok and result.fingerprint.startswith("differs from the file")
    data = prep.compute_stats(bright, workers=0)
    reference = prep.load_stats(stats_file)
    expected = [(m - rm) / rs for m, rm, rs in zip(data.mean, reference.mean, reference.std)]
    np.testing.assert_allclose(result.normalized_mean, expected, rtol=1e-12)
    cli = run("check", stats_file, bright, "--workers", 0, "--format", "json")
    assert cli.exit_code == 1
    report = json.loads(cli.stdout)
    assert report["ok"] is False and len(report["normalized_mean"]) == 3 and report["tol"] == 0.05


def test_check_applies_the_normalization_it_reports(folders):
    """The reported numbers are what Normalize does to every pixel (up to float32 rounding)."""
    _, bright, stats_file, _ = folders
    pipeline = prep.load_stats(stats_file).normalize()
    pixels = np.concatenate(
        [pipeline(Image.open(p)).numpy().reshape(3, -1) for p in sorted(bright.rglob("*.png"))], axis=1
    )
    result = prep.check_stats(stats_file, bright, workers=0)
    np.testing.assert_allclose(result.normalized_mean, pixels.astype(np.float64).mean(1), atol=1e-5)
    np.testing.assert_allclose(result.normalized_std, pixels.astype(np.float64).std(1), atol=1e-5)


def test_published_constants_are_checked_in_their_mode(tmp_path, folders):
    root = folders[0]
    result = prep.check_stats("mnist", root, workers=0)
    assert result.mode == "L" and len(result.normalized_mean) == 1  # a colour folder read as grey
    grey = prep.compute_stats(root, mode="L", workers=0)
    assert result.normalized_mean[0] == pytest.approx((grey.mean[0] - 0.1307) / 0.3081, rel=1e-12)
    copied = prep.check_stats("cifar10-copied", root, workers=0)
    assert any("mean of per-image stds" in note for note in copied.notes)
    assert run("check", "imagenet", root, "--workers", 0).exit_code in (0, 1)


def _says_per_image(data, reference) -> bool:
    return any("computed per image" in note for note in judge(data, reference, "ref").notes)


def test_a_std_that_matches_per_image_stds_is_named_only_for_references_of_unknown_provenance(folders):
    rng = np.random.default_rng(8)  # images of different brightness: per-image stds well below the pooled one
    levels = rng.integers(40, 216, (12, 3, 1, 1)) + rng.integers(-30, 31, (12, 3, 8, 8))
    data = prep.compute_stats(torch.from_numpy(levels.astype(np.uint8)))
    assert all(abs(p - s) > 0.05 * s for p, s in zip(data.per_image_std_mean, data.std))  # a strong gap
    unknown = KnownConstants("pasted", data.mean, data.per_image_std_mean, "RGB", "from a forum", per_image_std=None)
    assert _says_per_image(data, unknown)
    pooled = KnownConstants("paper", data.mean, data.per_image_std_mean, "RGB", "pooled, says the paper")
    assert not _says_per_image(data, pooled)  # known to be pooled: the data drifted, nothing more
    assert not _says_per_image(data, data)  # prep's own files are pooled
    for name in ("mnist", "fashion-mnist", "cifar10", "cifar100"):
        assert not _says_per_image(
            data if KNOWN[name].mode == "RGB" else prep.compute_stats(folders[0], mode="L", workers=0), KNOWN[name]
        )


def test_drift_of_a_few_percent_is_no_evidence_of_a_per_image_std():
    """MNIST's test split: pooled std 0.3115, per-image 0.3066, reference 0.3081 (pooled, drifted)."""
    from dataclasses import replace

    data = prep.compute_stats(
        torch.zeros(1, 1, 2, 2, dtype=torch.uint8) + torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    )
    summary = replace(data.summary, std=(0.3115,), per_image_std_mean=(0.3066,))
    object.__setattr__(data, "summary", summary)  # the figures of the MNIST test split
    unknown = KnownConstants("pasted", (0.1307,), (0.3081,), "L", "unknown", per_image_std=None)
    assert not _says_per_image(data, unknown)


def test_show_against_a_constant_set_reads_no_data(folders, tmp_path):
    stats_file = folders[2]
    result = run("show", stats_file, "--against", "cifar10")
    assert result.exit_code == 0
    assert "reference                 cifar10" in result.stdout and "normalized mean" in result.stdout
    assert run("show", stats_file, "--against", "mnist").exit_code == 2  # 1 channel vs 3


def test_compare_a_file_with_itself_and_with_drifted_data(folders):
    _, _, data_file, bright_file = folders
    same = prep.compare_stats(data_file, data_file)
    assert same.ok and same.mean_shift == (0.0,) * 3 and same.std_ratio == (1.0,) * 3
    assert same.wasserstein == (0.0,) * 3 and same.ks == (0.0,) * 3
    assert run("compare", data_file, data_file).exit_code == 0
    drift = run("compare", data_file, bright_file, "--format", "json")
    assert drift.exit_code == 1
    report = json.loads(drift.stdout)
    assert report["ok"] is False and all(w > 0.1 for w in report["wasserstein"])
    a, b = prep.load_stats(data_file), prep.load_stats(bright_file)
    assert report["mean_shift"] == [(mb - ma) / s for ma, mb, s in zip(a.mean, b.mean, a.std)]


def test_compare_refuses_different_channel_counts_and_unknown_references(tmp_path, folders):
    make_mnist(tmp_path)
    run("stats", "mnist", "--root", tmp_path, "-o", tmp_path / "m.json")
    result = run("compare", folders[2], tmp_path / "m.json")
    assert result.exit_code == 2 and "m.json: 1-channel statistics cannot be compared with" in result.stderr
    with pytest.raises(MismatchError, match="1-channel statistics cannot be compared"):
        prep.compare_stats(folders[2], tmp_path / "m.json")
    with pytest.raises(MismatchError, match=r"mnist has 1 channel\(s\), the data 3"):
        judge(prep.load_stats(folders[2]), KNOWN["mnist"], "mnist")
    unknown = run("check", "imagenett", folders[0])
    assert unknown.exit_code == 2 and "not a published constant set" in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1


def test_known_constants_are_the_published_ones():
    assert KNOWN["cifar10"].std == (0.2470, 0.2435, 0.2616)
    assert KNOWN["cifar10-copied"].std == (0.2023, 0.1994, 0.2010) and KNOWN["cifar10-copied"].per_image_std
    assert KNOWN["imagenet"].mean == (0.485, 0.456, 0.406) and KNOWN["mnist"].mode == "L"


def test_json_reports_are_strict_json_when_a_std_is_zero(tmp_path, folders):
    flat = tmp_path / "flat"
    flat.mkdir()
    for i in range(2):
        Image.fromarray(np.full((5, 5, 3), 90, np.uint8)).save(flat / f"{i}.png")
    run("stats", flat, "-o", tmp_path / "flat.json", "--workers", 0)
    result = run("compare", tmp_path / "flat.json", folders[2], "--format", "json")
    report = json.loads(result.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert report["mean_shift"] == [None, None, None] and report["ok"] is False
    checked = run("check", tmp_path / "flat.json", folders[0], "--format", "json", "--workers", 0)
    report = json.loads(checked.stdout, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert any("std 0" in note for note in report["notes"])


def test_check_against_imagenet_prints_the_eigenvalues():
    result = run("check", "imagenet", "sample", "--workers", 0)
    assert "PCA eigenvalues of this data" in result.stdout and "0.2175, 0.0188, 0.0045" in result.stdout


def test_two_classes_of_one_file_compare_as_two_files(tmp_path):
    from helpers import make_class_folder

    make_class_folder(tmp_path / "pets")
    out = tmp_path / "pets.json"
    with pytest.warns(prep.PrepWarning):
        prep.compute_stats(tmp_path / "pets", per_class=True, workers=0).save(out)
    stats = prep.load_stats(out)
    same = prep.compare_stats(f"{out}:cats", f"{out}:cats")
    assert same.ok and same.a == f"{out}:cats" and same.wasserstein == (0.0,) * 3
    drift = prep.compare_stats(f"{out}:cats", stats.class_stats("night"))
    assert not drift.ok and all(shift < -2 for shift in drift.mean_shift)
    cats, night = stats.class_stats("cats"), stats.class_stats("night")
    assert drift.mean_shift == tuple((b - a) / s for a, b, s in zip(cats.mean, night.mean, cats.std))
    with pytest.raises(prep.OptionError, match=r"pets\.json: no class 'cow'; the classes are birds, cats, dogs"):
        prep.compare_stats(f"{out}:cats", f"{out}:cow")
