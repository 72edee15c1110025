"""prep whiten on a nearly full disk: torch's zip writer fails with a RuntimeError, not an OSError;
it is one line and exit 2, and the older whitening file (or checkpoint) is kept."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run
from prep.transforms.whitening_file import load_whitening

ENFORCE = "[enforce fail at inline_container.cc:672] unexpected pos 2368 vs 2262"


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(4)
    (tmp_path / "imgs").mkdir()
    for i in range(30):  # more images than the 12 dimensions: a full-rank covariance
        Image.fromarray(rng.integers(0, 256, (2, 2, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"{i}.png")
    return tmp_path / "imgs"


def full_disk_save(monkeypatch) -> None:
    """torch.save as it fails on a full disk: part of the zip written, then the writer's RuntimeError
    (a traceback of C++ frames follows the first line)."""

    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04partial")
        raise RuntimeError(
            f"{ENFORCE}\nException raised from writeRecord at inline_container.cc:672 (most recent call first)"
        )

    monkeypatch.setattr(torch, "save", save)


def test_whiten_output_on_a_full_disk(tmp_path, folder, monkeypatch):
    out = tmp_path / "zca.pt"
    assert run("whiten", folder, "-o", out, "-q", "--workers", 0).exit_code == 0
    before = out.read_bytes()
    full_disk_save(monkeypatch)
    result = run("whiten", folder, "-o", out, "-q", "--workers", 0, "--eps", "0.01")
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"prep: error: {out}: cannot write the whitening file ({ENFORCE}; is the disk full?)"
    ]
    assert out.read_bytes() == before
    load_whitening(out)
    assert sorted(os.listdir(tmp_path)) == ["imgs", "zca.pt"]


def test_whiten_checkpoint_on_a_full_disk(tmp_path, folder, monkeypatch):
    out, ck = tmp_path / "zca.pt", tmp_path / "ck.pt"
    ck.write_bytes(b"an older checkpoint")
    full_disk_save(monkeypatch)
    result = run("whiten", folder, "-o", out, "-q", "--workers", 0, "--checkpoint", ck, "--checkpoint-every", 2)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"prep: error: {ck}: cannot write the checkpoint ({ENFORCE}; is the disk full?)"
    ]
    assert ck.read_bytes() == b"an older checkpoint"
    assert sorted(os.listdir(tmp_path)) == ["ck.pt", "imgs"]
