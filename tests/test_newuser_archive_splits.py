"""Splits of a zip made by macOS's Finder (its ``__MACOSX/`` folder of resource forks beside the
one top folder), as for the extracted folder."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from PIL import Image

import prep
from helpers import run

APPLE_DOUBLE = b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        " + bytes(40)  # a ._name resource fork


def _finder_zip(tmp_path):
    rng = np.random.default_rng(21)
    top = tmp_path / "src" / "pets"
    for split, n in (("train", 4), ("val", 3)):
        for label in ("cat", "dog"):
            (top / split / label).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (5 + i, 7, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(top / split / label / f"{i}.png")
    archive = tmp_path / "pets.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(top.rglob("*.png")):
            name = file.relative_to(top.parent).as_posix()
            zf.write(file, name)
            folder, _, base = name.rpartition("/")
            zf.writestr(f"__MACOSX/{folder}/._{base}", APPLE_DOUBLE)
    return archive, top


_NUMBERS = ("mean", "std", "min", "max", "count", "per_image_std_mean", "percentiles", "covariance", "pca", "pixel_max")


@pytest.mark.parametrize("split", ["train", "val"])
def test_a_finder_zip_splits_as_its_extracted_folder(tmp_path, split):
    archive, folder = _finder_zip(tmp_path)
    got = prep.compute_stats(archive, split=split, workers=0)
    want = prep.compute_stats(folder, split=split, workers=0)
    assert got.state.state_dict() == want.state.state_dict()  # bit for bit
    assert got.images == (8 if split == "train" else 6) and got.skipped_count == 0
    assert got.source["split"] == split


def test_split_all_of_a_finder_zip(tmp_path):
    archive, folder = _finder_zip(tmp_path)
    out = tmp_path / "z-{split}.json"
    result = run("stats", archive, "--split", "all", "-o", out, "-q", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("train: ") and result.stdout.splitlines()[1].startswith("val: ")
    for split in ("train", "val"):
        zipped = prep.load_stats(tmp_path / f"z-{split}.json").to_dict()
        extracted = prep.compute_stats(folder, split=split, workers=0).to_dict()
        assert {k: zipped[k] for k in _NUMBERS} == {k: extracted[k] for k in _NUMBERS}
