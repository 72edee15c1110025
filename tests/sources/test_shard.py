"""--shard I/N, prep merge and torch.distributed: parts combine into exactly the whole."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

import prep
from helpers import run
from helpers.processes import free_port
from helpers.reference import assert_same_stats
from prep.errors import OptionError
from prep.sources import resolve_source
from prep.sources.shard import shard_source
from prep.stats.moments import ChannelMoments


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
    assert missing.exit_code == 2 and "shards 1/3 are missing; pass --partial" in missing.stderr
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


def test_per_image_std_mean_is_exact_in_any_grouping():
    images = torch.from_numpy(np.random.default_rng(8).integers(0, 256, (50, 3, 5, 6), dtype=np.uint8))
    whole = ChannelMoments(3).update(images).compute()
    for step in (1, 7, 13):
        acc = ChannelMoments(3)
        for i in range(0, 50, step):
            acc = acc.merge(ChannelMoments(3).update(images[i : i + step]))
        assert acc.compute() == whole


def test_version_1_states_are_read(tmp_path):
    state = ChannelMoments(1).update(torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)).state_dict()
    old = {**state, "version": 1, "image_std_sum": [0.2887]}
    del old["histogram"]
    loaded = ChannelMoments.from_state_dict(old)
    assert loaded.histogram is None and loaded.compute().per_image_std_mean == pytest.approx((0.2887,), rel=1e-12)


# ------------------------------------------------------------------ torch.distributed


def _rank_main(rank, world, port, sources, out_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        stats = prep.compute_stats(sources[rank], distributed=True, workers=0)
        result = {"ok": stats.to_dict()}
    except prep.PrepError as exc:
        result = {"error": str(exc), "code": exc.exit_code}
    finally:
        dist.destroy_process_group()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


def _run_ranks(tmp_path, sources):
    import torch.multiprocessing as mp

    mp.start_processes(
        _rank_main, args=(2, free_port(), sources, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]


def test_a_two_process_gloo_job_equals_one_process(shard_data, tmp_path):
    _, folder = shard_data
    results = _run_ranks(tmp_path, [str(folder), str(folder)])
    whole = prep.compute_stats(folder, workers=0)
    for result in results:
        assert_same_stats(prep.Stats.from_dict(result["ok"]), whole)


def test_a_rank_whose_data_is_missing_fails_every_rank_cleanly(shard_data, tmp_path):
    _, folder = shard_data
    results = _run_ranks(tmp_path, [str(folder), str(tmp_path / "missing")])
    for result in results:
        assert result["code"] == 2 and result["error"].startswith("rank 1: ")
        assert "missing" in result["error"]


def test_torchrun_runs_prep_stats_and_rank_0_writes(tmp_path):
    out = tmp_path / "tr.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = subprocess.run(
        [*cmd, "-m", "prep", "stats", "sample", "-o", str(out), "--workers", "1", "-q"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("transforms.Normalize") == 1  # rank 0 alone prints
    assert_same_stats(prep.load_stats(out), prep.compute_stats("sample", workers=0))
    again = subprocess.run(
        [*cmd, "-m", "prep", "stats", "sample", "-o", str(out), "--workers", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode == 0 and again.stdout.count("is up to date") == 1


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
