"""Under torchrun, a rank whose data is missing makes every rank end with its one-line error
(exit 2): no rank is left in a collective that its peer never joins."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest
import torch.distributed as dist

from helpers import good_images

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs gloo")

WORLD = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ranks(args_of_rank) -> list[subprocess.CompletedProcess]:
    """``prep`` in WORLD processes joined as torchrun joins them (its environment variables)."""
    port = _free_port()
    procs = []
    for rank in range(WORLD):
        env = {
            **os.environ,
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(WORLD),
            "LOCAL_WORLD_SIZE": str(WORLD),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
        command = [sys.executable, "-m", "prep", *map(str, args_of_rank(rank))]
        procs.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=180)
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    return done


def test_a_rank_whose_data_is_missing_ends_every_rank_in_one_line(tmp_path):
    """With -o the source is resolved before rank 0 decides about the output: inside the first
    collective, or rank 0 is left in it when rank 1 exits (a gloo traceback, exit 1)."""
    good_images(tmp_path / "imgs", 6)
    missing = tmp_path / "not-mounted-on-this-node"
    out = tmp_path / "stats.json"

    def args(rank):
        source = tmp_path / "imgs" if rank == 0 else missing
        return ["stats", source, "--device", "cpu", "--workers", 0, "-q", "-o", out]

    ranks = run_ranks(args)
    for rank, done in enumerate(ranks):
        assert done.returncode == 2, (rank, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"prep: error: rank 1: {missing}"), (rank, done.stderr)
        assert "Traceback" not in done.stderr
    assert not out.exists()


def test_an_output_rank_0_cannot_write_ends_every_rank_in_one_line(tmp_path):
    good_images(tmp_path / "imgs", 6)
    (tmp_path / "out-is-a-directory").mkdir()

    ranks = run_ranks(
        lambda rank: [
            "stats",
            tmp_path / "imgs",
            "--device",
            "cpu",
            "--workers",
            0,
            "-q",
            "-o",
            tmp_path / "out-is-a-directory",
        ]
    )
    for rank, done in enumerate(ranks):
        assert done.returncode == 2, (rank, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("prep: error: rank 0: "), (rank, done.stderr)
        assert "is not a regular file" in lines[0]
