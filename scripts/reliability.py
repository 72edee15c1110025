"""Figures for the reliability page of the docs (docs/reliability.md), measured on this machine.

* Peak memory per pixel of decoding and reducing one large image, by kind: 8-bit RGB JPEG
  (as RGB and as L, under --decoder pil and auto), 8-bit RGB PNG with --resize, 16-bit grey PNG
  read as L and as RGB, float32 TIFF read as L and RGB. Each is measured in a fresh process
  after a warm-up on a small image of the same kind: the peak resident size (VmHWM, reset
  through /proc/self/clear_refs; Linux) minus the resident size before, divided by the
  image's pixels.
* Time to fail when a decoding worker dies: ``prep stats FOLDER --workers 2`` on a folder of
  slow-to-decode images, one worker killed with SIGKILL once the pass runs; the seconds from the
  kill to prep's exit (exit code 2), median of --reps runs.

    python scripts/reliability.py --side 6000 --reps 3
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

_MEASURE = """
import sys
from prep.decode.decoders import TransformedDecoder, make_decoder
from prep.transforms.measurement import measurement_transform
from prep.sources.base import FileChunk, FolderReader
from prep.engine.workers import reduce_chunk

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

folder, name, small, mode, resize, decoder_name = sys.argv[1:7]
if resize != "0":
    decoder = TransformedDecoder(measurement_transform(resize=int(resize)))
else:
    decoder = make_decoder(decoder_name)
reader = FolderReader(folder)
reduce_chunk(FileChunk(reader, (small,)), mode, decoder)
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # reset the peak (VmHWM) to the current resident size
before = status("VmRSS")
reduce_chunk(FileChunk(reader, (name,)), mode, decoder)
print(status("VmHWM") - before)
"""


def _images(folder: Path, side: int) -> list[tuple[str, str, str, int, str, str]]:
    """Write the test images; (label, file, small file, resize, mode, decoder) per measurement."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:side, 0:side]
    smooth = ((np.sin(x / 37.0) + np.cos(y / 53.0)) * 60 + 128).astype(np.uint8)
    rgb = np.stack([smooth, smooth[::-1], smooth[:, ::-1]], axis=-1)
    noise = rng.integers(0, 16, rgb.shape, dtype=np.uint8)
    files = {
        "jpg": Image.fromarray(rgb + noise),
        "png": Image.fromarray(rgb + noise),
        "i16.png": Image.fromarray((smooth.astype(np.uint16) * 257) ^ rng.integers(0, 64, smooth.shape, np.uint16)),
        "f.tif": Image.fromarray(smooth.astype(np.float32) / 255),
    }
    for ext, img in files.items():
        img.save(folder / f"big.{ext}")
        img.resize((64, 64)).save(folder / f"small.{ext}")
    return [
        ("8-bit RGB JPEG", "big.jpg", "small.jpg", 0, "RGB", "pil"),
        ("8-bit RGB JPEG, --decoder auto", "big.jpg", "small.jpg", 0, "RGB", "auto"),
        ("8-bit RGB JPEG as L", "big.jpg", "small.jpg", 0, "L", "pil"),
        ("8-bit RGB JPEG as L, --decoder auto", "big.jpg", "small.jpg", 0, "L", "auto"),
        ("8-bit RGB PNG, --resize 256", "big.png", "small.png", 256, "RGB", "pil"),
        ("16-bit grey PNG as L", "big.i16.png", "small.i16.png", 0, "L", "pil"),
        ("16-bit grey PNG as RGB", "big.i16.png", "small.i16.png", 0, "RGB", "pil"),
        ("float32 TIFF as L", "big.f.tif", "small.f.tif", 0, "L", "pil"),
        ("float32 TIFF as RGB", "big.f.tif", "small.f.tif", 0, "RGB", "pil"),
    ]


def peak_memory(side: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"| image ({side}x{side}) | peak RSS over baseline (MiB) | bytes per pixel |")
        print("|---|---|---|")
        for label, name, small, resize, mode, decoder in _images(folder, side):
            out = subprocess.run(
                [sys.executable, "-c", _MEASURE, str(folder), name, small, mode, str(resize), decoder],
                capture_output=True,
                text=True,
                check=True,
                timeout=600,
            )
            grown = int(out.stdout.strip())
            print(f"| {label} | {grown / 2**20:.0f} | {grown / side / side:.1f} |")


def _worker_pids(parent: int) -> list[int]:
    children = Path(f"/proc/{parent}/task/{parent}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def time_to_fail(reps: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        rng = np.random.default_rng(1)
        for i in range(400):
            Image.fromarray(rng.integers(0, 256, (600, 600, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
        times = []
        for _ in range(reps):
            proc = subprocess.Popen(
                [sys.executable, "-m", "prep", "stats", str(folder), "--workers", "2", "-q"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            deadline = time.monotonic() + 60
            workers: list[int] = []
            while len(workers) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
                workers = _worker_pids(proc.pid)
            time.sleep(0.5)  # the pass is running
            os.kill(workers[0], signal.SIGKILL)
            killed = time.monotonic()
            _, err = proc.communicate(timeout=60)
            times.append(time.monotonic() - killed)
            assert proc.returncode == 2, (proc.returncode, err)
        print(
            f"worker killed -> prep exits 2: median {statistics.median(times):.2f} s over {reps} runs "
            f"(max {max(times):.2f} s); message: {err.strip()[:120]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--side", type=int, default=6000, help="side of the large test images")
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    peak_memory(args.side)
    time_to_fail(args.reps)


if __name__ == "__main__":
    main()
