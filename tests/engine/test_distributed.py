"""prep.engine.distributed: shards measured on separate torch.distributed ranks (gloo, in
processes started here or by torchrun) merge into exactly the statistics of the whole; a rank that
fails fails every rank cleanly."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import prep
from helpers import assert_same_stats
from helpers.processes import free_port

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

WORLD = 2


def _images() -> np.ndarray:
    return np.random.default_rng(21).integers(0, 256, (40, 3, 6, 6), dtype=np.uint8)


def _rank(rank: int, port: int, out: str, options: dict | None = None) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        shard = _images()[rank::WORLD]  # each rank sees every other image
        local = prep.ChannelMoments(3, **(options or {})).update(torch.from_numpy(shard))
        merged = local.all_gather_merge()
        with open(f"{out}.{rank}", "w") as f:
            json.dump(merged.state_dict(), f)
    finally:
        dist.destroy_process_group()


def _gathered(tmp_path, options: dict | None = None) -> list[prep.ChannelMoments]:
    """What each of the WORLD ranks holds after ``all_gather_merge`` of its shard's state."""
    out = str(tmp_path / "state")
    mp.spawn(_rank, args=(free_port(), out, options), nprocs=WORLD, join=True)
    results = []
    for rank in range(WORLD):
        with open(f"{out}.{rank}") as f:
            results.append(prep.ChannelMoments.from_state_dict(json.load(f)))
    return results


def test_all_gather_merge_equals_the_whole_dataset(tmp_path):
    results = _gathered(tmp_path)
    whole = prep.ChannelMoments(3).update(torch.from_numpy(_images()))
    assert results[0] == results[1]  # every rank holds the same merged state
    got, want = results[0].compute(), whole.compute()
    assert (got.mean, got.std, got.min, got.max, got.count, got.images) == (
        want.mean,
        want.std,
        want.min,
        want.max,
        want.count,
        want.images,
    )


def test_all_gather_merge_keeps_the_covariance_and_the_image_moments(tmp_path):
    options = {"track_images": True, "covariance": True}
    results = _gathered(tmp_path, options)
    whole = prep.ChannelMoments(3, **options).update(torch.from_numpy(_images()))
    assert results[0] == results[1]
    merged = results[0]
    assert merged.cross is not None and merged.cross == whole.cross
    assert merged.image_moments is not None and merged.image_moments == whole.image_moments
    assert merged.compute() == whole.compute()
    source = {"kind": "tensors", "path": None, "split": None}
    got, want = (prep.Stats(source, None, "RGB", state) for state in (merged, whole))
    assert got.covariance == want.covariance and got.pca == want.pca


# ------------------------------------------------------------------ prep.compute_stats(distributed=True)


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
