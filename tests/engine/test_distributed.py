"""Shards measured on separate torch.distributed ranks merge into the statistics of the whole."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import prep
from helpers.processes import free_port

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

WORLD = 2


def _images() -> np.ndarray:
    return np.random.default_rng(21).integers(0, 256, (40, 3, 6, 6), dtype=np.uint8)


def _rank(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        shard = _images()[rank::WORLD]  # each rank sees every other image
        local = prep.ChannelMoments(3).update(torch.from_numpy(shard))
        merged = local.all_gather_merge()
        with open(f"{out}.{rank}", "w") as f:
            json.dump(merged.state_dict(), f)
    finally:
        dist.destroy_process_group()


def test_all_gather_merge_equals_the_whole_dataset(tmp_path):
    out = str(tmp_path / "state")
    mp.spawn(_rank, args=(free_port(), out), nprocs=WORLD, join=True)
    whole = prep.ChannelMoments(3).update(torch.from_numpy(_images()))
    results = []
    for rank in range(WORLD):
        with open(f"{out}.{rank}") as f:
            results.append(prep.ChannelMoments.from_state_dict(json.load(f)))
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
