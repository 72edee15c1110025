"""prep.sources.shard: --shard I/N puts every image in exactly one part, names per-image rows by
their index in the whole dataset, and reuses a part's file only for the same part."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import prep
from helpers import run
from prep.errors import OptionError
from prep.sources import resolve_source
from prep.sources.shard import shard_source


def _names(src):
    return [n for chunk in src.iter_tasks(0, 4) for n in chunk.names]


@pytest.mark.parametrize("count", [1, 2, 3, 7])
def test_every_image_is_in_exactly_one_shard(shard_data, count):
    _, folder = shard_data
    whole = _names(resolve_source(folder))
    parts = [_names(shard_source(resolve_source(folder), (i, count))) for i in range(count)]
    assert sorted(n for part in parts for n in part) == sorted(whole)
    assert parts[0] == whole[0::count]  # image i is in shard i mod N
    assert [shard_source(resolve_source(folder), (i, count)).num_images() for i in range(count)] == [
        len(p) for p in parts
    ]


@pytest.mark.parametrize("shard", ["4/4", "x", "1/0", "-1/2", "1/2/3"])
def test_bad_shards_are_one_line_errors(shard):
    result = run("stats", "sample", "--shard", shard, "--workers", 0)
    assert result.exit_code == 2 and "shard" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(OptionError):
        prep.compute_stats("sample", shard=shard)


def test_a_shard_file_is_reused_only_for_the_same_shard(shard_data, tmp_path):
    _, folder = shard_data
    out = tmp_path / "p.json"
    run("stats", folder, "--shard", "0/2", "-o", out, "--workers", 0)
    assert "is up to date" in run("stats", folder, "--shard", "0/2", "-o", out, "--workers", 0).stdout
    other = run("stats", folder, "--shard", "1/2", "-o", out, "--workers", 0)
    assert "source shard changed (0/2 -> 1/2)" in other.stderr


def test_per_image_rows_of_a_shard_or_sample_are_named_by_dataset_index(tmp_path):
    import csv

    images = [torch.full((1, 2, 2), i, dtype=torch.uint8) for i in range(10)]
    prep.compute_stats(images, shard="1/4", per_image=tmp_path / "s.csv")
    with open(tmp_path / "s.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == ["1", "5", "9"]
    assert [round(float(r["mean_L"]) * 255) for r in rows] == [1, 5, 9]
    prep.compute_stats(images, sample=3, seed=4, per_image=tmp_path / "p.csv")
    with open(tmp_path / "p.csv") as f:
        names = [r["name"] for r in csv.DictReader(f)]
    assert names == [str(i) for i in np.sort(np.random.default_rng(4).choice(10, 3, replace=False))]
