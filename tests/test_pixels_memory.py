"""Colour JPEGs measured as L under --decoder auto / torchvision: PIL's luma, bit for bit, at
about the memory of PIL itself (the int32 arithmetic runs a slice of rows at a time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prep import pixels
from prep.pixels import convert_channels, luma


def pil_luma(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb, "RGB").convert("L"))


def test_every_colour_converts_as_pil_does():
    """All 2^24 colours, as one 4096x4096 image (in 64 slices of rows)."""
    codes = np.arange(1 << 24, dtype=np.uint32)
    rgb = np.stack([codes >> 16, (codes >> 8) & 255, codes & 255], axis=-1).astype(np.uint8).reshape(4096, 4096, 3)
    got = luma(torch.from_numpy(rgb).permute(2, 0, 1))  # torchvision.io's layout: a view of (H, W, 3)
    assert got.shape == (1, 4096, 4096) and got.dtype == torch.uint8
    np.testing.assert_array_equal(got[0].numpy(), pil_luma(rgb))


@pytest.mark.parametrize("slice_values", [1, 7, 100, 1 << 18])
@pytest.mark.parametrize("shape", [(5, 3, 13, 11), (3, 1, 1), (2, 4, 3, 9, 17), (3, 0, 4)])
def test_batches_and_slices_of_any_size(monkeypatch, shape, slice_values):
    monkeypatch.setattr(pixels, "LUMA_SLICE_VALUES", slice_values)
    rgb = torch.from_numpy(np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8))
    got = convert_channels(rgb, "L")
    assert got.shape == (*shape[:-3], 1, *shape[-2:]) and got.dtype == torch.uint8
    count = int(np.prod(shape[:-3]))
    flat, converted = rgb.reshape(count, 3, *shape[-2:]), got.reshape(count, *shape[-2:])
    for image, grey in zip(flat, converted):
        if image.numel():
            np.testing.assert_array_equal(grey.numpy(), pil_luma(np.ascontiguousarray(image.permute(1, 2, 0).numpy())))
    assert torch.equal(rgb, torch.from_numpy(np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)))


@pytest.mark.cuda
def test_luma_on_cuda_equals_the_cpu():
    rgb = torch.from_numpy(np.random.default_rng(3).integers(0, 256, (4, 3, 300, 500), dtype=np.uint8))
    assert torch.equal(luma(rgb.cuda()).cpu(), luma(rgb))


_PEAK = """
import sys
from prep.decode.decoders import make_decoder
from prep.engine.workers import reduce_chunk
from prep.sources.base import FileChunk, FolderReader

def resident(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))

folder, decoder_name, mode = sys.argv[1:4]
decoder, reader = make_decoder(decoder_name, covariance=True), FolderReader(folder)
reduce_chunk(FileChunk(reader, ("small.jpg",)), mode, decoder)  # imports, and auto's check of this kind
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the resident size
before = resident("VmRSS")
result = reduce_chunk(FileChunk(reader, ("big.jpg",)), mode, decoder)
assert not result.skipped, result.skipped
print(resident("VmHWM") - before)
"""


def peak_bytes_per_pixel(folder: Path, decoder: str, mode: str, pixels_: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(folder), decoder, mode], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip()) / pixels_


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's /proc/self/clear_refs")
def test_peak_memory_of_a_colour_jpeg_as_l(tmp_path):
    """A 4000x4000 colour JPEG: about 47 bytes per pixel under auto before, 5 under pil, 4.4 now."""
    side = 4000
    y, x = np.mgrid[0:side, 0:side]
    smooth = ((np.sin(x / 37.0) + np.cos(y / 53.0)) * 60 + 128).astype(np.uint8)
    rgb = np.stack([smooth, smooth[::-1], smooth[:, ::-1]], axis=-1)
    rgb += np.random.default_rng(0).integers(0, 16, rgb.shape, dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "big.jpg", quality=90)
    Image.fromarray(rgb[:64, :64]).save(tmp_path / "small.jpg", quality=90)
    pil = peak_bytes_per_pixel(tmp_path, "pil", "L", side * side)
    for decoder in ("auto", "torchvision"):
        peak = peak_bytes_per_pixel(tmp_path, decoder, "L", side * side)
        assert peak <= 1.3 * pil + 0.5, (decoder, peak, pil)
