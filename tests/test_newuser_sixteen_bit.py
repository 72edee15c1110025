"""Files beyond 8 bits: the warning that ImageFolder's default loader does not give prep's
numbers for them, and the loader the docs give instead."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import run

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _sixteen_bit_folder(root: Path) -> Path:
    rng = np.random.default_rng(11)
    (root / "scan").mkdir(parents=True)
    for i in range(3):
        Image.fromarray(rng.integers(0, 65536, (12, 10), dtype=np.uint16)).save(root / "scan" / f"{i}.png")
    return root


def test_sixteen_bit_files_warn_with_a_measuring_transform_too(tmp_path):
    folder = _sixteen_bit_folder(tmp_path / "scans")
    transform = prep.measurement_transform(resize=6)
    with pytest.warns(prep.PrepWarning, match=r"holds 16-bit images.*ImageFolder's\) clips them to 8 bits"):
        stats = prep.compute_stats(folder, transform=transform, workers=0)
    assert stats.pixel_max == 65535 and stats.transform is not None
    result = run("stats", folder, "--resize", "6", "--center-crop", "5", "--workers", 0, "-q")
    assert result.exit_code == 0 and result.stderr.count("holds 16-bit images") == 1


def test_float_files_warn_that_image_folder_truncates_them(tmp_path):
    folder = tmp_path / "floats" / "cls"
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6) * (i + 1) / 2).save(folder / f"{i}.tif")
    with pytest.warns(prep.PrepWarning, match=r"holds float images.*truncates them to 8-bit integers"):
        stats = prep.compute_stats(folder.parent, workers=0, mode="RGB")  # a TIFF folder's default: bands
    assert stats.pixel_max == 1.0
    loaded = np.asarray(Image.open(folder / "1.tif").convert("RGB"))  # ImageFolder's default loader
    assert set(np.unique(loaded)) <= {0, 1}  # what the warning says
    arrays = torch.from_numpy(np.random.default_rng(1).random((2, 1, 4, 4), dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error", prep.PrepWarning)
        prep.compute_stats(arrays)  # float tensors are no files for ImageFolder: nothing said


def _docs_loader_block() -> str:
    text = (DOCS / "decoders.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    return next(b for b in blocks if "def load_like_prep" in b)


def test_the_docs_loader_makes_image_folder_see_what_prep_measured(tmp_path, monkeypatch):
    from torchvision.datasets import ImageFolder

    root = _sixteen_bit_folder(tmp_path / "scans")
    rng = np.random.default_rng(12)
    Image.fromarray(rng.integers(0, 256, (8, 9, 3), dtype=np.uint8)).save(root / "scan" / "colour.png")
    Image.fromarray(rng.random((7, 5), dtype=np.float32)).save(root / "scan" / "depth.tif")
    assert run("stats", root, "-o", tmp_path / "scans.stats.json", "--workers", 0, "-q").exit_code == 0
    stats = prep.load_stats(tmp_path / "scans.stats.json")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_docs_loader_block(), "docs/decoders.md", "exec"), namespace)
    data = namespace["data"]
    assert isinstance(data, ImageFolder) and len(data) == 5
    pixels = torch.cat([data[i][0].flatten(1) for i in range(len(data))], dim=1).double()
    assert pixels.shape[1] == stats.summary.count[0]
    np.testing.assert_allclose(pixels.mean(1).numpy(), 0.0, atol=1e-6)  # standardized by prep's constants
    np.testing.assert_allclose(pixels.std(1, unbiased=False).numpy(), 1.0, rtol=1e-6)
    default = ImageFolder(root, transform=namespace["v2"].PILToTensor())
    assert Path(default.samples[0][0]).name == "0.png"
    raw = np.asarray(Image.open(root / "scan" / "0.png")).astype(np.int64)
    clipped = torch.from_numpy(np.minimum(raw, 255).astype(np.uint8))
    assert all(torch.equal(channel, clipped) for channel in default[0][0])  # why the warning is given
