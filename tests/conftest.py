"""Fixtures built in tmp_path from the helpers package, and the device parametrization."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import make_cifar10, make_folder, make_mnist

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


@pytest.fixture(autouse=True)
def _quiet_tqdm(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    yield
