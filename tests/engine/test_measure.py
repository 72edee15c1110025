"""compute_stats end to end against float64 NumPy on pixels read by torchvision's own classes; the
outputs of a pass checked before it starts, and a reused stats file under --strict."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torchvision.transforms import v2

import prep
from helpers import (
    assert_close,
    exact_stats,
    make_cifar10,
    make_mnist,
    pil_pixels,
    reference_stats,
    run,
    torchvision_cifar,
)
from prep.errors import ChannelMismatchError, PrepError
from prep.pixels import convert_channels


def _check(stats, pixels):
    ref, exact = reference_stats(pixels), exact_stats(pixels.astype(np.uint8))
    assert stats.count == (ref["count"],) * pixels.shape[1]
    assert_close(stats.mean, ref["mean"])
    assert_close(stats.std, ref["std"])
    assert list(stats.mean) == exact["mean"]
    assert_close(stats.min, ref["min"], rel=0)
    assert_close(stats.max, ref["max"], rel=0)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_matches_torchvision_mnist(tmp_path, gz):
    make_mnist(tmp_path, gz=gz)
    stats = prep.compute_stats("mnist", root=tmp_path, split="test", device="cpu")
    if not gz:  # torchvision reads only the uncompressed files
        tv = torchvision.datasets.MNIST(tmp_path, train=False)
        pixels = tv.data.numpy().reshape(-1, 1)
    else:
        pixels = make_mnist(tmp_path / "again", gz=False)["test"].reshape(-1, 1)
    _check(stats, pixels)
    assert stats.mode == "L" and stats.channels == 1 and stats.images == len(pixels) // 784


def test_cifar10_matches_torchvision_cifar10(tmp_path):
    make_cifar10(tmp_path)
    tv = torchvision_cifar("cifar10", tmp_path, train=True)
    stats = prep.compute_stats("cifar10", root=tmp_path, device="cpu", batch_size=17)
    _check(stats, tv.data.reshape(-1, 3))
    assert stats.images == 200


def test_folder_matches_image_folder_loader(image_folder):
    tv = torchvision.datasets.ImageFolder(str(image_folder))
    pixels = np.concatenate([pil_pixels(path) for path, _ in tv.samples])
    for workers in (0, 2):
        _check(prep.compute_stats(image_folder, workers=workers), pixels)


def test_folder_grey_mode_matches_pil_convert_l(image_folder):
    pixels = np.concatenate([pil_pixels(p, "L") for p in sorted(image_folder.rglob("*.*"))])
    _check(prep.compute_stats(image_folder, mode="L", workers=0), pixels)


def test_results_do_not_depend_on_batch_size_workers_or_order(tmp_path, image_folder):
    make_mnist(tmp_path)
    a = prep.compute_stats("mnist", root=tmp_path, batch_size=1)
    b = prep.compute_stats("mnist", root=tmp_path, batch_size=1000)
    assert (a.mean, a.std, a.min, a.max) == (b.mean, b.std, b.min, b.max)
    c = prep.compute_stats(image_folder, workers=0)
    d = prep.compute_stats(image_folder, workers=2)
    assert (c.mean, c.std, c.count) == (d.mean, d.std, d.count)


def test_cifar_in_grey_mode_matches_pil_luma(tmp_path):
    images = make_cifar10(tmp_path)["test"]
    grey = np.stack([np.asarray(Image.fromarray(im.transpose(1, 2, 0)).convert("L")) for im in images])
    converted = convert_channels(torch.from_numpy(images), "L").numpy()[:, 0]
    np.testing.assert_array_equal(converted, grey)
    _check(prep.compute_stats("cifar10", root=tmp_path, split="test", mode="L"), grey.reshape(-1, 1))


def test_mnist_in_rgb_mode_replicates_the_channel(tmp_path):
    images = make_mnist(tmp_path)["train"]
    stats = prep.compute_stats("mnist", root=tmp_path, mode="RGB")
    assert stats.channels == 3 and stats.mean[0] == stats.mean[1] == stats.mean[2]
    _check(stats, np.repeat(images.reshape(-1, 1), 3, axis=1))


def test_idx_file_path_source(tmp_path):
    images = make_mnist(tmp_path, gz=True)["train"]
    stats = prep.compute_stats(tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz")
    assert stats.source["kind"] == "idx"
    _check(stats, images.reshape(-1, 1))


def test_python_dataset_of_pil_images_and_of_tensors(image_folder):
    tv = torchvision.datasets.ImageFolder(str(image_folder))
    pixels = np.concatenate([pil_pixels(path) for path, _ in tv.samples])
    _check(prep.compute_stats(tv), pixels)  # (PIL image, label) pairs
    as_tensors = torchvision.datasets.ImageFolder(str(image_folder), transform=v2.PILToTensor())
    _check(prep.compute_stats(as_tensors), pixels)
    generator = (img for img, _ in tv)  # a plain iterable, no len
    stats = prep.compute_stats(generator)
    _check(stats, pixels)
    assert stats.source["kind"] == "dataset" and stats.fingerprint is None


def test_float_tensor_dataset_is_unit_scale():
    data = [torch.full((1, 2, 2), 0.25), torch.full((1, 2, 2), 0.75)]
    stats = prep.compute_stats(data)
    assert stats.mean == (0.5,) and stats.std == (0.25,) and stats.pixel_max == 1.0


def test_dataset_items_are_converted_to_the_mode_as_pil_converts_them():
    rgb = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (3, 5, 4), dtype=np.uint8))
    grey = torch.full((1, 5, 4), 7, dtype=torch.uint8)
    stats = prep.compute_stats([rgb, grey])  # mode RGB from the first item: grey is replicated
    pixels = np.concatenate([rgb.numpy().reshape(3, -1), np.repeat(grey.numpy().reshape(1, -1), 3, 0)], 1)
    assert list(stats.mean) == exact_stats(pixels.T)["mean"]
    as_l = prep.compute_stats([rgb, grey], mode="L")  # RGB becomes PIL's luma
    luma = np.asarray(Image.fromarray(rgb.numpy().transpose(1, 2, 0)).convert("L")).reshape(-1, 1)
    assert list(as_l.mean) == exact_stats(np.concatenate([luma, grey.numpy().reshape(-1, 1)]))["mean"]
    with pytest.raises(ChannelMismatchError, match=r"shape \(1, 2, 5, 4\)"):
        prep.compute_stats([rgb, torch.zeros(2, 5, 4, dtype=torch.uint8)])


def test_bad_options_are_prep_errors(tmp_path):
    make_mnist(tmp_path)
    with pytest.raises(PrepError, match="mode must be one of"):
        prep.compute_stats("mnist", root=tmp_path, mode="CMYK")
    if not torch.cuda.is_available():
        with pytest.raises(PrepError, match="CUDA is not available"):
            prep.compute_stats("mnist", root=tmp_path, device="cuda")
    with pytest.raises(PrepError, match="resume needs a checkpoint"):
        prep.compute_stats("mnist", root=tmp_path, resume=True)


def test_torchvision_dataset_object_equals_the_named_source(tmp_path):
    make_mnist(tmp_path)
    tv = torchvision.datasets.MNIST(tmp_path, train=True)  # yields (PIL "L" image, label)
    from_object = prep.compute_stats(tv)
    from_files = prep.compute_stats("mnist", root=tmp_path)
    assert from_object.mode == "L"
    assert (from_object.mean, from_object.std, from_object.min, from_object.max, from_object.count) == (
        from_files.mean,
        from_files.std,
        from_files.min,
        from_files.max,
        from_files.count,
    )
    assert_close(from_object.per_image_std_mean, from_files.per_image_std_mean, rel=1e-12)


def test_progress_factory_sees_every_image(tmp_path):
    make_mnist(tmp_path)
    seen = {}

    class Bar:
        def __init__(self, total, **kwargs):
            seen["total"], seen["done"] = total, 0

        def update(self, n):
            seen["done"] += n

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    prep.compute_stats("mnist", root=tmp_path, batch_size=64, progress=Bar)
    assert seen == {"total": 300, "done": 300}


def test_tensor_datasets_of_mixed_shapes_and_batches(tmp_path):
    rng = np.random.default_rng(8)
    items = [torch.from_numpy(rng.integers(0, 256, (3, 8, 8), dtype=np.uint8)) for _ in range(600)]
    items[100] = torch.from_numpy(rng.integers(0, 256, (3, 5, 9), dtype=np.uint8))  # breaks a run
    items.append(torch.from_numpy(rng.integers(0, 256, (4, 3, 2, 2), dtype=np.uint8)))  # a ready batch
    pixels = np.concatenate(
        [t.numpy().reshape(-1, 3, t.shape[-2] * t.shape[-1]).transpose(0, 2, 1).reshape(-1, 3) for t in items]
    )
    stats = prep.compute_stats(items)
    _check(stats, pixels)
    assert stats.images == 604


def test_batches_are_reduced_with_one_torch_thread_and_the_count_is_restored(tmp_path, monkeypatch):
    """One thread keeps the memory-bound reduction fast when other processes hold the cores."""
    import torch

    from helpers import make_mnist
    from prep.stats.moments import ChannelMoments

    make_mnist(tmp_path)
    seen = []
    real = ChannelMoments.update

    def spy(self, batch, pixel_max=None):
        seen.append(torch.get_num_threads())
        return real(self, batch, pixel_max)

    monkeypatch.setattr(ChannelMoments, "update", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        prep.compute_stats("mnist", root=tmp_path, device="cpu", batch_size=50)
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------ outputs and reuse


def test_the_same_path_for_checkpoint_and_output_is_refused(tmp_path, good_folder):
    result = run("stats", good_folder, "-o", tmp_path / "x.json", "--checkpoint", tmp_path / "x.json")
    assert result.exit_code == 2 and "must be different files" in result.stderr


def test_strict_fails_on_a_reused_file_that_lists_undecodable_images(tmp_path, good_folder):
    (good_folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out.json"
    assert run("stats", good_folder, "-o", out, "--workers", 0).exit_code == 0
    again = run("stats", good_folder, "-o", out, "--strict", "--workers", 0)
    assert again.exit_code == 1 and f"{good_folder}/broken.jpg: cannot decode" in again.stderr


def test_an_existing_output_that_is_not_a_stats_file_is_never_replaced(tmp_path, good_folder):
    image = good_folder / os.listdir(good_folder)[0]
    before = image.read_bytes()
    result = run("stats", good_folder, "-o", image, "--workers", 0)
    assert result.exit_code == 2 and "exists and is not a prep stats file" in result.stderr
    assert image.read_bytes() == before


@pytest.mark.parametrize("clash", ["out", "checkpoint"])
def test_the_per_image_report_cannot_share_a_path_with_another_output(tmp_path, good_folder, clash):
    out, ck = tmp_path / "s.json", tmp_path / "ck.json"
    report = out if clash == "out" else ck
    result = run("stats", good_folder, "-o", out, "--checkpoint", ck, "--per-image", report, "--workers", 0)
    assert result.exit_code == 2 and "must be different files" in result.stderr
    assert not out.exists()


def test_strict_refuses_a_reused_file_whose_undecodable_files_are_past_the_listed_ones(tmp_path, junk_folder):
    (junk_folder / "zz-broken.jpg").write_bytes(b"not a jpeg")  # listed after the 1,204 passed over in the listing
    out = tmp_path / "out.json"
    assert run("stats", junk_folder, "-o", out, "--workers", 0, "-q").exit_code == 0
    assert json.loads(out.read_text())["skipped"]["reasons"]["cannot decode"] == 1
    again = run("stats", junk_folder, "-o", out, "--strict", "--workers", 0, "-q")
    assert again.exit_code == 1 and "1 file(s) could not be read or decoded" in again.stderr


def test_a_folder_of_16_bit_images_warns_that_image_folder_clips_them(tmp_path):
    Image.fromarray(np.full((6, 5), 40000, np.uint16)).save(tmp_path / "a.png")
    Image.fromarray(np.full((6, 5, 3), 9, np.uint8)).save(tmp_path / "b.png")
    with pytest.warns(prep.PrepWarning, match=r"16-bit images.*ImageFolder.*clips them to 8 bits"):
        stats = prep.compute_stats(tmp_path, workers=0)
    assert stats.pixel_max == 65535
    eight = tmp_path / "eight"
    eight.mkdir()
    Image.fromarray(np.arange(90, dtype=np.uint8).reshape(6, 5, 3)).save(eight / "b.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error", prep.PrepWarning)
        prep.compute_stats(eight, workers=0)  # 8-bit only: ImageFolder gives the same pixels, nothing said
