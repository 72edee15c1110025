"""Statistics of what the model sees: --resize / --center-crop and compute_stats(transform=...)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

import prep
from helpers import assert_close, exact_stats, make_folder, make_mnist, run
from prep.errors import OptionError
from prep.transforms.measurement import measurement_transform, parse_size


def _reference(tensors, transform):
    """Each (C, H, W) uint8 image through ``transform`` alone, pooled as (P, C) raw pixels."""
    out = [transform(t).numpy().reshape(t.shape[0], -1).T for t in tensors]
    return np.concatenate(out)


def _folder_tensors(root, mode="RGB"):
    tensors = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        with Image.open(path) as img:
            arr = np.asarray(img.convert(mode))
        tensors.append(torch.from_numpy(arr.reshape(*arr.shape[:2], -1).transpose(2, 0, 1).copy()))
    return tensors


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_stats_after_resize_and_crop_equal_torchvision_per_image(tmp_path, workers):
    root = make_folder(tmp_path / "data")
    transform = measurement_transform(resize=20, center_crop="12x10")
    stats = prep.compute_stats(root, transform=transform, workers=workers)
    pixels = _reference(_folder_tensors(root), transform)
    exact = exact_stats(pixels)
    assert stats.count == (len(pixels),) * 3 and stats.images == len(_folder_tensors(root))
    assert list(stats.mean) == exact["mean"]
    assert_close(np.square(stats.std), exact["var"], rel=1e-15)
    assert stats.count[0] == stats.images * 12 * 10
    plain = prep.compute_stats(root, workers=0)
    assert stats.std != plain.std  # antialiased resizing changes the std


def test_batch_sources_are_transformed_batch_wise_as_image_wise(tmp_path):
    images = make_mnist(tmp_path)["train"]
    transform = measurement_transform(resize=14)
    stats = prep.compute_stats("mnist", root=tmp_path, transform=transform, batch_size=7)
    pixels = _reference([torch.from_numpy(im[None]) for im in images], transform)
    assert list(stats.mean) == exact_stats(pixels)["mean"]
    assert stats.count == (len(images) * 14 * 14,)


def test_sixteen_bit_images_are_transformed_as_float_raw_values(tmp_path):
    rng = np.random.default_rng(4)
    arrays = [rng.integers(0, 65536, (30, 26), dtype=np.uint16) for _ in range(3)]
    for i, a in enumerate(arrays):
        Image.fromarray(a).save(tmp_path / f"{i}.png")
    transform = measurement_transform(resize=11)
    stats = prep.compute_stats(tmp_path, mode="L", transform=transform, workers=0)
    ref = np.concatenate([transform(torch.from_numpy(a.astype(np.float32))[None]).numpy().ravel() for a in arrays])
    assert_close(stats.mean, [ref.astype(np.float64).mean() / 65535])
    assert_close(stats.std, [ref.astype(np.float64).std() / 65535], rel=1e-10)


def test_cli_records_the_transform_and_reuses_only_for_the_same_one(tmp_path):
    out = tmp_path / "s.json"
    first = run("stats", "sample", "--resize", 16, "--center-crop", 12, "-o", out, "--workers", 0)
    assert first.exit_code == 0, first.stderr
    saved = json.loads(out.read_text())
    assert (
        "Resize(size=[16]" in saved["options"]["transform"]
        and "CenterCrop(size=(12, 12))" in saved["options"]["transform"]
    )
    assert prep.load_stats(out).count == (24 * 12 * 12,) * 3
    again = run("stats", "sample", "--resize", 16, "--center-crop", 12, "-o", out, "--workers", 0)
    assert "is up to date" in again.stdout
    other = run("stats", "sample", "--resize", 18, "--center-crop", 12, "-o", out, "--workers", 0)
    assert other.exit_code == 0 and "transform changed" in other.stderr
    plain = run("stats", "sample", "-o", out, "--workers", 0)
    assert "transform changed" in plain.stderr and prep.load_stats(out).transform is None


@pytest.mark.parametrize(
    ("transform", "message"),
    [
        (v2.ToDtype(torch.float32, scale=True), "must return a torch.uint8 tensor"),
        (v2.Grayscale(), "with 3 channel"),
        (lambda x: 1 / 0, "ZeroDivisionError"),
        ("Resize(16)", "must be callable"),
    ],
)
def test_transforms_that_change_the_pixels_kind_are_refused_before_the_pass(transform, message):
    with pytest.raises(OptionError, match=message):
        prep.compute_stats("sample", transform=transform, workers=0)


def test_an_unpicklable_transform_is_applied_in_process_with_a_warning(caplog):
    crop = v2.CenterCrop(8)
    stats = prep.compute_stats("sample", transform=lambda x: crop(x), workers=2)
    assert stats.mean == prep.compute_stats("sample", transform=crop, workers=2).mean
    assert "not picklable" in caplog.text


@pytest.mark.parametrize("text", ["0", "x", "16x", "1x2x3", "-4", "1000001"])
def test_bad_sizes_are_one_line_errors(text):
    with pytest.raises(OptionError, match="must be a size"):
        parse_size(text, "resize")
    result = run("stats", "sample", "--resize", text)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_a_center_crop_larger_than_the_image_is_refused_not_padded(tmp_path):
    make_mnist(tmp_path)
    result = run("stats", "mnist", "--root", tmp_path, "--center-crop", 40)
    assert result.exit_code == 2 and "smaller than the center crop 40x40" in result.stderr
    assert run("stats", "mnist", "--root", tmp_path, "--resize", 48, "--center-crop", 40, "-q").exit_code == 0
