"""--per-image: one exact CSV row per image, written during the pass, and the suspicious images."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import make_folder, make_mnist, pil_pixels, run
from prep.errors import StatsFileError


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def odd_folder(tmp_path):
    """A folder with a constant image, a near-black one, a near-white one, a duplicate and a very
    bright image among ordinary ones."""
    root = make_folder(tmp_path / "data")
    rng = np.random.default_rng(5)
    odd = root / "odd"
    odd.mkdir()
    for i in range(30):
        Image.fromarray(rng.integers(90, 160, (10, 12, 3), dtype=np.uint8)).save(odd / f"plain{i:02d}.png")
    Image.fromarray(np.full((6, 6, 3), 128, np.uint8)).save(odd / "constant.png")
    Image.fromarray(rng.integers(0, 4, (6, 6, 3), dtype=np.uint8)).save(odd / "black.png")
    Image.fromarray(rng.integers(252, 256, (6, 6, 3), dtype=np.uint8)).save(odd / "white.png")
    shutil.copy(odd / "plain03.png", odd / "zcopy.png")
    return root


@pytest.mark.parametrize("workers", [0, 2])
def test_rows_are_exact_per_image_statistics_in_source_order(odd_folder, tmp_path, workers):
    report = tmp_path / "images.csv"
    stats = prep.compute_stats(odd_folder, per_image=report, workers=workers)
    rows = _rows(report)
    files = sorted(p.relative_to(odd_folder).as_posix() for p in odd_folder.rglob("*") if p.is_file())
    assert [r["name"] for r in rows] == files and [int(r["index"]) for r in rows] == list(range(len(files)))
    for row in rows:
        pixels = pil_pixels(odd_folder / row["name"]) / 255
        with Image.open(odd_folder / row["name"]) as img:
            assert (int(row["width"]), int(row["height"])) == img.size
        for c, name in enumerate("RGB"):
            assert float(row[f"mean_{name}"]) == pytest.approx(pixels[:, c].mean(), rel=1e-8)
            assert float(row[f"std_{name}"]) == pytest.approx(pixels[:, c].std(), rel=1e-8, abs=1e-12)
            assert float(row[f"min_{name}"]) == pytest.approx(pixels[:, c].min(), abs=1e-9)
            assert float(row[f"max_{name}"]) == pytest.approx(pixels[:, c].max(), abs=1e-9)
    assert stats.images == len(rows)


def test_suspicious_images_are_named_in_the_stats_file_and_summary(odd_folder, tmp_path):
    out = tmp_path / "s.json"
    result = run("stats", odd_folder, "--per-image", tmp_path / "i.csv", "-o", out, "--workers", 0)
    assert result.exit_code == 0, result.stderr
    outliers = prep.load_stats(out).outliers
    assert outliers["constant"] == {"count": 1, "images": ["odd/constant.png"]}
    assert outliers["near_black"]["images"] == ["odd/black.png"]
    assert outliers["near_white"]["images"] == ["odd/white.png"]
    assert outliers["duplicates"] == {"count": 1, "images": [["odd/zcopy.png", "odd/plain03.png"]]}
    assert "suspicious            1 duplicates: odd/zcopy.png = odd/plain03.png" in result.stdout
    data = json.loads(out.read_text())
    data["outliers"]["constant"]["images"] = ["a"] * 11
    out.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match=r"outliers\.constant\.images"):
        prep.load_stats(out)


def test_brightness_outliers_beyond_k_stds(tmp_path):
    images = [torch.full((1, 4, 4), 100 + (i % 5), dtype=torch.uint8) for i in range(60)]
    images[17] = torch.full((1, 4, 4), 250, dtype=torch.uint8)
    stats = prep.compute_stats(images, per_image=tmp_path / "r.csv", outlier_k=4)
    assert stats.outliers["brightness"] == {"count": 1, "k": 4.0, "images": ["17"]}
    assert len(_rows(tmp_path / "r.csv")) == 60


def test_batch_sources_get_rows_by_index(tmp_path):
    images = make_mnist(tmp_path)["train"]
    prep.compute_stats("mnist", root=tmp_path, per_image=tmp_path / "m.csv", batch_size=7)
    rows = _rows(tmp_path / "m.csv")
    assert [r["name"] for r in rows] == [str(i) for i in range(len(images))]
    means = images.reshape(len(images), -1).mean(1) / 255
    np.testing.assert_allclose([float(r["mean_L"]) for r in rows], means, rtol=1e-8)


def test_a_failed_pass_leaves_no_partial_report(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"broken")
    result = run("stats", folder, "--per-image", tmp_path / "r.csv", "--strict", "--workers", 0)
    assert result.exit_code == 1
    assert not (tmp_path / "r.csv").exists() and not list(tmp_path.glob(".prep-*"))
    refused = run("stats", folder, "--per-image", tmp_path, "--workers", 0)
    assert refused.exit_code == 2 and "per-image report" in refused.stderr


def test_the_report_gets_the_mode_the_umask_allows(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        prep.compute_stats("sample", per_image=tmp_path / "r.csv", workers=0)
    finally:
        os.umask(old)
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o644


def test_a_per_image_report_is_written_even_when_out_is_up_to_date(tmp_path, good_folder):
    out = tmp_path / "s.json"
    run("stats", good_folder, "-o", out, "--workers", 0)
    result = run("stats", good_folder, "-o", out, "--per-image", tmp_path / "r.csv", "--workers", 0)
    assert result.exit_code == 0 and (tmp_path / "r.csv").exists()
