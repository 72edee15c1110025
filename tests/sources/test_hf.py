"""prep.sources.hf: ``hf:NAME`` loads through ``datasets.load_dataset`` from the local cache, or
fails in one line."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import prep
from helpers import exact_stats
from prep.errors import SourceError
from prep.sources import resolve_source

RNG = np.random.default_rng(5)
ARRAYS = [RNG.integers(0, 256, (int(RNG.integers(4, 12)), 7, 3), dtype=np.uint8) for _ in range(9)]
IMAGES = [Image.fromarray(a) for a in ARRAYS]


def check(stats) -> None:
    pixels = np.concatenate([a.reshape(-1, 3) for a in ARRAYS])
    ref = exact_stats(pixels)
    np.testing.assert_allclose(stats.mean, ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(np.square(stats.std), ref["var"], rtol=1e-9)
    assert stats.images == len(ARRAYS)


def test_hf_name_without_the_library_or_cache_is_one_line(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *args, **kwargs):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    with pytest.raises(SourceError) as info:
        resolve_source("hf:user/some-set", split="train")
    assert str(info.value) == (
        "hf:user/some-set: reading Hugging Face datasets needs the 'datasets' library (pip install 'prep[hf]')"
    )


def test_hf_name_loads_offline_through_load_dataset(monkeypatch):
    """``load_dataset`` is asked for the split, reusing the cache, with the libraries offline."""
    import os
    import sys
    import types

    calls = []
    fake = types.ModuleType("datasets")

    class Loaded(list):
        _fingerprint = "abc123"

    def load_dataset(name, split, download_mode):
        calls.append((name, split, download_mode, os.environ.get("HF_DATASETS_OFFLINE")))
        if name == "missing":
            raise FileNotFoundError("Couldn't find a dataset script at missing\nmore lines")
        return Loaded({"img": image} for image in IMAGES)

    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, "datasets", fake)
    src = resolve_source("hf:user/set", split="test")
    assert calls == [("user/set", "test", "reuse_cache_if_exists", "1")]
    assert src.describe() == {"kind": "huggingface", "path": "hf:user/set", "split": "test"}
    assert src.fingerprint() == {"dataset_id": "hf:user/set:test:abc123", "images": len(IMAGES)}
    check(prep.compute_stats(src))
    check(prep.compute_stats(resolve_source("hf:user/set", image_key="img")))  # --image-key applies to hf:
    with pytest.raises(SourceError) as info:
        resolve_source("hf:missing")
    assert str(info.value) == (
        "hf:missing: cannot load split train: Couldn't find a dataset script at missing "
        "(only the local cache is read; pass --download to fetch it)"
    )
