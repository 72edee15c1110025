"""The new sources through the command line: archives, shards, NumPy arrays and their options."""

from __future__ import annotations

import tarfile
import zipfile

import numpy as np

import prep
from helpers import make_folder, run


def _stats(path):
    return prep.load_stats(path)


def _same(a, b):
    assert (a.mean, a.std, a.min, a.max, a.count, a.images) == (b.mean, b.std, b.min, b.max, b.count, b.images)


def test_zip_and_tar_shards_on_the_command_line_equal_the_folder(tmp_path):
    folder = make_folder(tmp_path / "data")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        for p in files:
            z.write(p, p.relative_to(folder).as_posix())
    shards = []
    for i in range(3):
        shards.append(tmp_path / "shards" / f"train-{i:06d}.tar")
        shards[-1].parent.mkdir(exist_ok=True)
        with tarfile.open(shards[-1], "w") as t:
            for j, p in enumerate(files[i::3]):
                t.add(p, f"{i:02d}{j:04d}{p.suffix.lower()}")
    folder_stats = prep.compute_stats(folder, workers=0)
    assert run("stats", tmp_path / "data.zip", "-o", tmp_path / "z.json", "--workers", 0).exit_code == 0
    _same(_stats(tmp_path / "z.json"), folder_stats)
    listed = run("stats", *shards, "-o", tmp_path / "s.json", "--workers", 0)
    assert listed.exit_code == 0, listed.stderr
    _same(_stats(tmp_path / "s.json"), folder_stats)
    braces = run("stats", str(tmp_path / "shards" / "train-{000000..000002}.tar"), "-q", "--workers", 0)
    assert braces.exit_code == 0 and braces.stdout.strip() == folder_stats.normalize_line()
    directory = run("stats", tmp_path / "shards", "--archives", "-q", "--workers", 0)
    assert directory.exit_code == 0 and directory.stdout.strip() == folder_stats.normalize_line()


def test_npz_key_layout_and_split_all_on_the_command_line(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 3, 6, 3), dtype=np.uint8) for s, n in (("train", 5), ("test", 2))}
    np.savez(tmp_path / "med.npz", **arrays)
    ambiguous = run("stats", tmp_path / "med.npz", "--key", "train_images")
    assert ambiguous.exit_code == 2 and "layout" in ambiguous.stderr
    out = tmp_path / "med-{split}.json"
    result = run("stats", tmp_path / "med.npz", "--layout", "NCHW", "--split", "all", "-o", out)
    assert result.exit_code == 0, result.stderr
    for split, images in arrays.items():
        saved = _stats(tmp_path / f"med-{split.removesuffix('_images')}.json")
        pixels = images.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64) / 255
        assert saved.images == len(images)
        np.testing.assert_allclose(saved.mean, pixels.mean(0), rtol=1e-12)
    keyed = run("stats", tmp_path / "med.npz", "--key", "test_images", "--layout", "NCHW", "-q")
    assert keyed.exit_code == 0
    assert keyed.stdout.strip() == _stats(tmp_path / "med-test.json").normalize_line()
