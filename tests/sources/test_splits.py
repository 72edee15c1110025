"""prep.sources.splits: --split NAME, a list of splits and --split all, each checked before any
file is written."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import prep
from helpers import make_mnist, run, split_folder


def test_split_selects_the_folder_of_that_split(tmp_path):
    root = split_folder(tmp_path / "data")
    assert prep.compute_stats(root, workers=0).images == 6  # no --split: the whole folder
    test = prep.compute_stats(root, split="test", workers=0)
    assert test.images == 1 and test.source["split"] == "test"
    assert test.mean == prep.compute_stats(root / "test", workers=0).mean
    assert prep.compute_stats(root, split="val", workers=0).images == 2  # val finds valid/
    result = run("stats", root / "train", "--split", "test")
    assert result.exit_code == 2 and "no 'test' split" in result.stderr


def test_split_all_writes_one_file_per_split_folder(tmp_path):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, "--split", "all", "-o", tmp_path / "s-{split}.json", "--workers", 0)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("s-*.json")) == ["s-test.json", "s-train.json", "s-val.json"]
    for split, images in (("train", 3), ("val", 2), ("test", 1)):
        saved = prep.load_stats(tmp_path / f"s-{split}.json")
        alone = prep.compute_stats(root, split=split, workers=0)
        assert (saved.source["split"], saved.images, saved.mean, saved.std) == (split, images, alone.mean, alone.std)
        assert f"== split {split} ==" in result.stdout
    again = run("stats", root, "--split", "val,test", "-o", tmp_path / "s-{split}.json", "-q", "--workers", 0)
    assert again.exit_code == 0
    assert [line.split(":")[0] for line in again.stdout.splitlines()] == ["val", "test"]


def test_split_list_of_a_named_dataset(tmp_path):
    make_mnist(tmp_path)
    out = tmp_path / "m-{split}.json"
    assert run("stats", "mnist", "--root", tmp_path, "--split", "train,test", "-o", out, "-q").exit_code == 0
    for split in ("train", "test"):
        assert prep.load_stats(tmp_path / f"m-{split}.json").mean == (
            prep.compute_stats("mnist", root=tmp_path, split=split).mean
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--split", "train,test", "-o", "one.json"), "several splits need '{split}'"),
        (("--split", "train,test", "--checkpoint", "ck.json"), "several splits need '{split}'"),
        (("--split", "train,,test"), "empty split name"),
        (("--split", "all,test"), "'all' cannot be combined"),
    ],
)
def test_bad_split_lists_are_refused_before_any_work(tmp_path, args, message):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, *[str(tmp_path / a) if a.endswith(".json") else a for a in args])
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.json"))


def test_split_all_needs_splits(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "a.png")
    result = run("stats", folder, "--split", "all")
    assert result.exit_code == 2 and "--split all: no splits found" in result.stderr
    assert prep.sources.available_splits(folder) == ()
    assert prep.sources.available_splits("mnist") == ("train", "test")


def test_several_splits_are_all_checked_before_any_file_is_written(tmp_path):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, "--split", "train,bogus", "-o", tmp_path / "x-{split}.json")
    assert result.exit_code == 2 and "no 'bogus' split" in result.stderr
    (root / "test" / "cls" / "0.png").unlink()
    (root / "test" / "cls" / "notes.txt").write_text("not an image")
    empty = run("stats", root, "--split", "all", "-o", tmp_path / "x-{split}.json")
    assert empty.exit_code == 2 and "split test: no image files found" in empty.stderr
    assert not list(tmp_path.glob("x-*.json"))
