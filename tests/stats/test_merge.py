"""prep.stats.merge (prep merge): the statistics of shards merge into exactly those of the whole,
in any order; incomplete, repeated and foreign parts are refused."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import prep
from helpers import assert_same_stats, run
from prep.errors import MismatchError


@pytest.mark.parametrize("source_kind", ["folder", "mnist", "tensors"])
def test_merged_shards_equal_one_pass_bit_for_bit_in_any_order(shard_data, tmp_path, source_kind):
    root, folder = shard_data
    tensors = [
        torch.from_numpy(np.random.default_rng(i).integers(0, 256, (3, 9, 7), dtype=np.uint8)) for i in range(23)
    ]
    source, options = {
        "folder": (folder, {"workers": 2}),
        "mnist": ("mnist", {"root": root, "batch_size": 5}),
        "tensors": (tensors, {"batch_size": 4}),
    }[source_kind]
    whole = prep.compute_stats(source, **options)
    parts = [prep.compute_stats(source, shard=f"{i}/4", **options) for i in range(4)]
    assert [p.source["shard"] for p in parts] == ["0/4", "1/4", "2/4", "3/4"]
    for order in (parts, parts[::-1], random.Random(3).sample(parts, 4)):
        merged = prep.merge_stats(order)
        assert_same_stats(merged, whole)
        assert "shard" not in merged.source


def test_merge_on_the_command_line_and_its_refusals(shard_data, tmp_path):
    root, folder = shard_data
    for i in range(3):
        assert run("stats", folder, "--shard", f"{i}/3", "-o", tmp_path / f"p{i}.json", "--workers", 0).exit_code == 0
    parts = [tmp_path / f"p{i}.json" for i in range(3)]
    result = run("merge", *parts, "-o", tmp_path / "all.json")
    assert result.exit_code == 0, result.stderr
    assert_same_stats(prep.load_stats(tmp_path / "all.json"), prep.compute_stats(folder, workers=0))
    missing = run("merge", parts[0], parts[2], "-o", tmp_path / "x.json")
    assert missing.exit_code == 2 and "shard 1 of 3 is missing; pass --partial" in missing.stderr
    with pytest.raises(MismatchError, match="shard 1 of 3 is missing"):
        prep.merge_stats([parts[0], parts[2]])
    with pytest.raises(MismatchError, match="shards 1, 2 of 3 are missing"):
        prep.merge_stats([parts[0]])
    assert not (tmp_path / "x.json").exists()
    partial = run("merge", parts[0], parts[2], "-o", tmp_path / "x.json", "--partial")
    assert partial.exit_code == 0 and "missing 1" in partial.stderr
    assert prep.load_stats(tmp_path / "x.json").source["shard"] == "0,2/3"
    twice = run("merge", *parts, parts[1], "-o", tmp_path / "y.json")
    assert twice.exit_code == 2 and "shard 1/3 is also in" in twice.stderr
    run("stats", "mnist", "--root", root, "--shard", "1/3", "-o", tmp_path / "m1.json")
    other = run("merge", parts[0], tmp_path / "m1.json", parts[2], "-o", tmp_path / "z.json")
    assert other.exit_code == 2 and "differs from" in other.stderr
    run("stats", folder, "-o", tmp_path / "whole.json", "--workers", 0)
    not_a_part = run("merge", tmp_path / "whole.json", "-o", tmp_path / "w.json")
    assert not_a_part.exit_code == 2 and "not the statistics of a shard" in not_a_part.stderr
    run("stats", folder, "--shard", "1/2", "-o", tmp_path / "h1.json", "--workers", 0)
    mixed = run("merge", parts[0], tmp_path / "h1.json", "-o", tmp_path / "v.json")
    assert mixed.exit_code == 2 and "is of 2 shards" in mixed.stderr


def test_merge_accepts_parts_made_from_other_working_directories_and_never_overwrites_one(shard_data, tmp_path):
    _, folder = shard_data
    run("stats", folder, "--shard", "0/2", "-o", tmp_path / "a.json", "--workers", 0)
    run("stats", str(folder) + "/", "--shard", "1/2", "-o", tmp_path / "b.json", "--workers", 0)
    merged = run("merge", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "all.json")
    assert merged.exit_code == 0, merged.stderr  # the same data (fingerprint) under another path spelling
    before = (tmp_path / "a.json").read_bytes()
    clash = run("merge", tmp_path / "a.json", tmp_path / "b.json", "-o", tmp_path / "a.json")
    assert clash.exit_code == 2 and "is also one of the parts" in clash.stderr
    assert (tmp_path / "a.json").read_bytes() == before
