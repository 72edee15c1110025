"""``prep`` in other processes: started, waited on, signalled, and their worker processes seen."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from helpers.formats import good_images


def prep_process(*args, **kwargs):
    """``python -m prep ARGS`` started (stdout, stderr piped as text), with its progress bar on."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    return subprocess.Popen(
        [sys.executable, "-m", "prep", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def slow_mnist_args(root, out, ck, every: int) -> list:
    """``prep stats mnist`` over ``root`` in batches of 5, checkpointing every ``every`` images."""
    return [
        "stats",
        "mnist",
        "--root",
        root,
        "-o",
        out,
        "--batch-size",
        5,
        "--checkpoint",
        ck,
        "--checkpoint-every",
        every,
    ]


def children(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return f.read().split()
    except OSError:
        return []


def process_state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def running_with_workers(tmp_path):
    """``prep stats`` on 300 images with 2 workers, returned once the workers run."""
    folder = tmp_path / "many"
    good_images(folder, 300)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prep", "stats", str(folder), "--workers", "2", "-q"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not children(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
