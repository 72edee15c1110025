"""Fixtures built in tmp_path from the helpers package, shared by the test directories, and the
device parametrization."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import good_images, make_cifar10, make_folder, make_mnist

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` run where there is a GPU and are skipped where there is none."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each test that takes ``device`` runs on the CPU, and on CUDA where there is a GPU."""
    return request.param


@pytest.fixture
def mnist_root(tmp_path: Path):
    return tmp_path, make_mnist(tmp_path)


@pytest.fixture
def cifar_root(tmp_path: Path):
    return tmp_path, make_cifar10(tmp_path)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    return make_folder(tmp_path / "images")


@pytest.fixture
def good_folder(tmp_path: Path) -> Path:
    """Four small RGB PNG files."""
    good_images(tmp_path / "imgs", 4)
    return tmp_path / "imgs"


@pytest.fixture
def junk_folder(tmp_path):
    """Two images and 1,204 files that are not images (what a symlink to / brings in, in small)."""
    folder = tmp_path / "junk"
    good_images(folder, 2)
    (folder / "etc").mkdir()
    for i in range(1204):
        (folder / "etc" / f"conf{i:04d}.txt").write_text("x")
    return folder


@pytest.fixture
def slow_mnist(tmp_path):
    """A run that lasts long enough to interrupt: 60,000 images in batches of 5."""
    make_mnist(tmp_path, n_train=60_000, n_test=10)
    return tmp_path


@pytest.fixture(scope="module")
def shard_data(tmp_path_factory):
    """MNIST-format files (97 + 5 images) and an image folder with one file that is not an image."""
    root = tmp_path_factory.mktemp("shards")
    make_mnist(root, n_train=97, n_test=5)
    folder = make_folder(root / "folder")
    (folder / "notes.txt").write_text("not an image")  # a skipped entry, counted once
    return root, folder


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield
