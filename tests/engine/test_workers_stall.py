"""A worker that stops making progress (SIGSTOP, a decoder that never returns) ends the pass with
a one-line error naming its files after a bounded time, never a wait for ever; a checkpoint
written before is kept and resumes."""

from __future__ import annotations

import io
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

import prep
from prep.decode.decoders import PILDecoder
from prep.engine import workers
from prep.engine.workers import map_ordered
from prep.errors import PrepError


def _sleepy(task, pid_dir):
    with open(os.path.join(pid_dir, f"{task}.pid"), "w") as f:
        f.write(str(os.getpid()))
    if task == "sleeps":
        time.sleep(120)
    if task == "stops":
        os.kill(os.getpid(), signal.SIGSTOP)
    if task == "slow":
        time.sleep(1.0)
    return task


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1][0] not in "ZX"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("stuck", ["sleeps", "stops"])
def test_a_stuck_worker_ends_the_pass_naming_its_task(tmp_path, stuck):
    tasks = ["a", "b", stuck, "c", "d", "e"]
    seen = []
    start = time.monotonic()
    with pytest.raises(PrepError) as info:
        for _task, result in map_ordered(_sleepy, tasks, 2, str(tmp_path), stall_timeout=1.5):
            seen.append(result)
    took = time.monotonic() - start
    assert seen == ["a", "b"]
    assert str(info.value) == (
        "no decoding worker finished a task in 1.5 s (a stopped process, or a decoder that does not return) "
        f"while reading {stuck}"
    )
    assert took < 15, took
    stuck_pid = int((tmp_path / f"{stuck}.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(stuck_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(stuck_pid)  # stopped or stuck, the worker was ended with the pass


def test_a_slow_task_within_the_bound_completes(tmp_path):
    got = [r for _, r in map_ordered(_sleepy, ["a", "slow", "b"], 2, str(tmp_path), stall_timeout=5)]
    assert got == ["a", "slow", "b"]


def test_the_default_bound_is_long_enough_for_a_huge_image():
    assert workers.STALL_SECONDS >= 600


@pytest.fixture
def folder_with_a_stalling_file(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(2)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    marker = PngInfo()
    marker.add_text("prep-test", "STALL")
    Image.fromarray(rng.integers(0, 256, (3, 4, 3), dtype=np.uint8)).save(folder / "999.png", pnginfo=marker)
    return folder


def test_a_stalled_pass_keeps_its_checkpoint_and_resumes(folder_with_a_stalling_file, tmp_path, monkeypatch):
    folder, ck = folder_with_a_stalling_file, tmp_path / "ck.json"
    decode = PILDecoder.__call__

    def stalling(self, fp, mode):
        data = fp.read()
        if b"STALL" in data:
            time.sleep(120)
        return decode(self, io.BytesIO(data), mode)

    monkeypatch.setattr(PILDecoder, "__call__", stalling)  # in the workers: they are forked
    monkeypatch.setattr(workers, "STALL_SECONDS", 1.5)
    with pytest.raises(PrepError, match=r"no decoding worker finished a task in 1\.5 s .* while reading .*"):
        prep.compute_stats(folder, workers=2, decoder="pil", checkpoint=ck, checkpoint_every=4)
    assert ck.exists()
    monkeypatch.undo()
    resumed = prep.compute_stats(folder, workers=2, decoder="pil", checkpoint=ck, checkpoint_every=4, resume=True)
    whole = prep.compute_stats(folder, workers=0, decoder="pil")
    assert (resumed.mean, resumed.std, resumed.count) == (whole.mean, whole.std, whole.count)
