"""Readers against torchvision's own dataset classes reading the same files."""

from __future__ import annotations

import gzip
import pickle

import numpy as np
import pytest
import torchvision
from PIL import Image

import prep
from helpers import make_cifar10, make_cifar100, make_mnist, source_arrays, torchvision_cifar
from prep.errors import SourceError
from prep.sources import resolve_source
from prep.sources.arrays import ArraySource
from prep.sources.cifar import read_cifar_batch
from prep.sources.folder import FolderSource, list_images
from prep.sources.idx import read_idx_images


@pytest.mark.parametrize("split", ["train", "test"])
def test_idx_reader_equals_torchvision_mnist(tmp_path, split):
    make_mnist(tmp_path)
    tv = torchvision.datasets.MNIST(tmp_path, train=split == "train")
    src = resolve_source("mnist", root=tmp_path, split=split)
    (array,) = source_arrays(src)
    np.testing.assert_array_equal(array[:, 0], tv.data.numpy())


def test_gz_idx_equals_plain(tmp_path):
    images = make_mnist(tmp_path / "a", gz=True)["train"]
    path = tmp_path / "a" / "MNIST" / "raw" / "train-images-idx3-ubyte.gz"
    np.testing.assert_array_equal(read_idx_images(path), images)
    src = resolve_source(str(path))
    assert isinstance(src, ArraySource) and src.kind == "idx" and src.native_mode == "L"


@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_other_mnist_format_names(tmp_path, name, folder):
    images = make_mnist(tmp_path, folder=folder)["test"]
    (array,) = source_arrays(resolve_source(name, root=tmp_path, split="test"))
    np.testing.assert_array_equal(array[:, 0], images)


def test_cifar10_reader_equals_torchvision(tmp_path):
    make_cifar10(tmp_path)
    tv = torchvision_cifar("cifar10", tmp_path, train=True)
    arrays = source_arrays(resolve_source("cifar10", root=tmp_path))
    np.testing.assert_array_equal(np.concatenate(arrays).transpose(0, 2, 3, 1), tv.data)


def test_cifar_pickles_with_bytes_keys(tmp_path):
    images = make_cifar10(tmp_path, byte_keys=True)["test"]
    (array,) = source_arrays(resolve_source("cifar10", root=tmp_path, split="test"))
    np.testing.assert_array_equal(array, images)


def test_cifar100_reader_equals_torchvision(tmp_path):
    make_cifar100(tmp_path)
    tv = torchvision_cifar("cifar100", tmp_path, train=False)
    (array,) = source_arrays(resolve_source("cifar100", root=tmp_path, split="test"))
    np.testing.assert_array_equal(array.transpose(0, 2, 3, 1), tv.data)


def test_folder_listing_equals_image_folder(image_folder):
    (image_folder / "ants" / "notes.txt").write_text("not an image")
    (image_folder / "bees" / ".DS_Store").write_bytes(b"\0\0")
    listing = list_images(image_folder)
    tv = torchvision.datasets.ImageFolder(str(image_folder))
    assert [image_folder / p for p in listing.images] == sorted(image_folder / p for p, _ in tv.samples)
    assert ("ants/notes.txt", "not an image file extension") in listing.skipped
    assert ("bees/.DS_Store", "not an image file extension") in listing.skipped


def test_folder_extensions_are_case_insensitive(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "A.PNG")
    Image.new("RGB", (2, 2)).save(tmp_path / "b.JpEg", format="JPEG")
    assert list_images(tmp_path).images == ["A.PNG", "b.JpEg"]


def test_symlink_loop_is_skipped_not_followed_forever(tmp_path):
    Image.new("L", (2, 2)).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "self.png").symlink_to(tmp_path / "self.png")
    listing = list_images(tmp_path)
    assert listing.images == ["a.png"]
    reasons = dict(listing.skipped)
    assert reasons["sub/loop"].startswith("symlink loop")
    assert reasons["self.png"].startswith("symlink loop")


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "not an idx file"),
        (bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + b"12345", "expected an idx3-ubyte image file"),
        (bytes([0, 0, 8, 3]) + b"".join(n.to_bytes(4, "big") for n in (2, 2, 2)) + b"123", "file has 19 bytes"),
        (b"hello world, this is not idx", "not an idx file"),
    ],
)
def test_bad_idx_files_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(SourceError, match=message) as info:
        read_idx_images(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_idx_is_a_source_error(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(b"\0\0\x08\x03" + b"\0" * 30)[:-6])
    with pytest.raises(SourceError, match=str(path)):
        read_idx_images(path)


def test_cifar_pickle_without_data_key(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({"labels": [1, 2]}, f)
    with pytest.raises(SourceError, match=r"no 'data' entry \(keys: labels\)"):
        read_cifar_batch(path)


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(SourceError, match=r"refusing to load builtins\.print"):
        read_cifar_batch(path)


def test_unknown_name_and_missing_split(tmp_path):
    with pytest.raises(SourceError, match="not a dataset name"):
        resolve_source("imagenet-22k", root=tmp_path)
    with pytest.raises(SourceError, match=r"MNIST/raw/train-images-idx3-ubyte: mnist train split not found"):
        resolve_source("mnist", root=tmp_path)
    with pytest.raises(SourceError, match="split must be one of"):
        resolve_source("mnist", root=tmp_path, split="val")


def test_sample_is_shipped_with_the_package():
    src = resolve_source("sample")
    assert isinstance(src, FolderSource) and src.num_images() == 24


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
