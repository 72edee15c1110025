"""Shards measured on separate torch.distributed ranks merge into the statistics of the whole."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import prep

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gathered(tmp_path, options: dict | None = None) -> list[prep.ChannelMoments]:
    """What each of the WORLD ranks holds after ``all_gather_merge`` of its shard's state."""
    out = str(tmp_path / "state")
    mp.spawn(_rank, args=(_free_port(), out, options), nprocs=WORLD, join=True)
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
