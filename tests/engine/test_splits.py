"""prep.engine.splits: what prep stats does for several splits and under torchrun, from Python."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import prep
from prep.engine.splits import iter_split_stats, torchrun_session


def _split_folder(root):
    for split, n in (("train", 4), ("test", 2)):
        (root / split / "a").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((3, 3, 3), 40 * i + 7, np.uint8)).save(root / split / "a" / f"{i}.png")
    return root


def test_every_split_in_one_call_written_and_then_reused(tmp_path):
    root = _split_folder(tmp_path / "data")
    out = str(tmp_path / "s-{split}.json")
    results = list(iter_split_stats(root, "all", out, workers=0))
    assert [(r.split, r.stats.images, r.reused) for r in results] == [("train", 4, False), ("test", 2, False)]
    assert prep.load_stats(tmp_path / "s-train.json").images == 4
    again = list(iter_split_stats(root, "train,test", out, workers=0))
    assert all(r.reused for r in again) and again[1].out == str(tmp_path / "s-test.json")
    assert [r.stats.images for r in iter_split_stats(root, "test", workers=0)] == [2]  # nothing written


def test_a_bad_split_or_output_name_writes_nothing(tmp_path):
    root = _split_folder(tmp_path / "data")
    (root / "val").mkdir()  # a split folder without images
    with pytest.raises(prep.SourceError, match="split val"):
        list(iter_split_stats(root, "train,val", str(tmp_path / "s-{split}.json"), workers=0))
    with pytest.raises(prep.OptionError, match=r"several splits need '\{split\}'"):
        list(iter_split_stats(root, "train,test", str(tmp_path / "s.json"), workers=0))
    assert not list(tmp_path.glob("s*.json"))


def test_outside_torchrun_the_session_is_one_speaking_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with torchrun_session("cpu") as (distributed, speaks):
        assert (distributed, speaks) == (False, True)


def test_merge_refuses_to_write_over_one_of_its_parts(tmp_path):
    parts = []
    images = np.random.default_rng(1).integers(0, 256, (6, 1, 4, 4), np.uint8)
    import torch

    for i in range(2):
        path = tmp_path / f"p{i}.json"
        prep.compute_stats(torch.from_numpy(images), shard=f"{i}/2").save(path)
        parts.append(path)
    before = parts[0].read_bytes()
    with pytest.raises(prep.OutputError, match="is also one of the parts"):
        prep.merge_stats(parts, out=parts[0])
    assert parts[0].read_bytes() == before
    merged = prep.merge_stats(parts, out=tmp_path / "all.json")
    assert prep.load_stats(tmp_path / "all.json").images == merged.images == 6
