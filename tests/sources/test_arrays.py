"""prep.sources.arrays: the fingerprint of idx and CIFAR files is of their pixels."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import prep
from helpers import make_cifar10, make_mnist
from prep.sources import resolve_source


def test_mnist_plain_and_gz_of_the_same_pixels_have_one_fingerprint(tmp_path):
    make_mnist(tmp_path / "gz", gz=True)
    raw = tmp_path / "gz" / "MNIST" / "raw"
    stats = prep.compute_stats("mnist", root=tmp_path / "gz")
    with gzip.open(raw / "train-images-idx3-ubyte.gz") as f:  # gunzip -k: torchvision needs the plain file
        (raw / "train-images-idx3-ubyte").write_bytes(f.read())
    saved = tmp_path / "s.json"
    stats.save(saved)
    prep.load_stats(saved, verify_against="mnist", root=tmp_path / "gz")  # same pixels: not stale
    (raw / "train-images-idx3-ubyte.gz").unlink()
    prep.load_stats(saved, verify_against="mnist", root=tmp_path / "gz")
    images = np.frombuffer((raw / "train-images-idx3-ubyte").read_bytes()[16:], np.uint8).copy()
    images[123] ^= 1  # one pixel changed
    (raw / "train-images-idx3-ubyte").write_bytes(
        (raw / "train-images-idx3-ubyte").read_bytes()[:16] + images.tobytes()
    )
    with pytest.raises(prep.StaleStatsError, match="data changed"):
        prep.load_stats(saved, verify_against="mnist", root=tmp_path / "gz")


def test_array_fingerprints_made_during_the_pass_equal_a_separate_read(tmp_path):
    make_cifar10(tmp_path, per_batch=7)
    during = prep.compute_stats("cifar10", root=tmp_path).fingerprint  # hashed as the pass read the files
    separate = resolve_source("cifar10", root=tmp_path)
    assert separate.num_images() is None  # CIFAR pickles do not say their size without being read
    assert separate.fingerprint() == during and during["bytes"] == 35 * 3072
    assert separate.num_images() == 35


def test_a_pass_left_early_leaves_no_fingerprint_and_a_later_one_is_right(tmp_path):
    """The files are hashed in a thread beside the pass; a pass given up half-way (the first
    batch of the first of five files) keeps no partial fingerprint."""
    make_cifar10(tmp_path, per_batch=7)
    src = resolve_source("cifar10", root=tmp_path)
    batches = src.iter_batches(0, "RGB", pixels_per_batch=3072 * 2)
    next(batches)
    batches.close()
    assert src._scan is None
    expected = resolve_source("cifar10", root=tmp_path).fingerprint()
    assert sum(n for _, n in src.iter_batches(0, "RGB", pixels_per_batch=3072 * 2)) == 35
    assert src.fingerprint() == expected and expected["bytes"] == 35 * 3072
