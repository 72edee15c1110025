"""Splits of a zip or tar of an ImageFolder tree, as for the extracted folder."""

from __future__ import annotations

import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

import prep
from helpers import run


def _tree(root, top: str = ""):
    rng = np.random.default_rng(3)
    base = root / top if top else root
    for split, n in (("train", 5), ("val", 3)):
        for label in ("cat", "dog"):
            folder = base / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (base / "train" / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    return base


@pytest.mark.parametrize("top", ["", "pets"])
@pytest.mark.parametrize("kind", ["zip", "tar.gz", "tar"])
def test_each_split_of_an_archive_equals_the_extracted_folder(tmp_path, top, kind):
    folder = _tree(tmp_path / "src", top)
    archive = tmp_path / f"data.{kind}"
    if kind == "zip":
        with zipfile.ZipFile(archive, "w") as zf:
            for file in sorted(folder.rglob("*")):
                if file.is_file():
                    zf.write(file, f"{top}/{file.relative_to(folder)}" if top else file.relative_to(folder))
    else:
        with tarfile.open(archive, "w:gz" if kind == "tar.gz" else "w") as tf:
            tf.add(folder, arcname=top or ".")
    for split in ("train", "val"):
        with pytest.warns(prep.PrepWarning) if split == "train" else _nothing():
            got = prep.compute_stats(archive, split=split, workers=0)
        with pytest.warns(prep.PrepWarning) if split == "train" else _nothing():
            want = prep.compute_stats(folder, split=split, workers=0)
        assert got.state.state_dict() == want.state.state_dict()
        assert got.source["split"] == split and got.images == (10 if split == "train" else 6)
    assert (got.skipped_count, want.skipped_count) == (0, 0)


def test_split_all_and_a_missing_split_of_an_archive(tmp_path):
    folder = _tree(tmp_path / "src")
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(folder))
    result = run("stats", archive, "--split", "all", "-o", tmp_path / "s-{split}.json", "-q", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert prep.load_stats(tmp_path / "s-train.json").images == 10
    assert prep.load_stats(tmp_path / "s-val.json").images == 6
    missing = run("stats", archive, "--split", "test", "--workers", 0)
    assert missing.exit_code == 2 and "no 'test' split" in missing.stderr


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
