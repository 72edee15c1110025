"""Fixtures in the real on-disk formats (idx, idx.gz, CIFAR pickles, image files), built in tmp_path."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prep.sources.cifar import write_cifar_batch
from prep.sources.idx import write_idx_images

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


class _Unchecked:
    """torchvision's CIFAR classes minus the md5 checks of the original archives (fixtures differ)."""

    def _check_integrity(self) -> bool:
        return True

    def _load_meta(self) -> None:
        self.classes = []


def torchvision_cifar(variant: str, root: Path, train: bool):
    """torchvision's own CIFAR10/CIFAR100 reader on fixture files."""
    import torchvision

    base = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[variant]
    return type(f"Unchecked{base.__name__}", (_Unchecked, base), {})(root, train=train)


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    labels = np.asarray(labels, np.uint8)
    path.write_bytes(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + labels.tobytes())


def make_mnist(root: Path, folder: str = "MNIST", n_train: int = 300, n_test: int = 70, gz: bool = False,
               seed: int = 0) -> dict[str, np.ndarray]:
    """MNIST-format images in torchvision's layout ROOT/<folder>/raw/, with label files."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, :4] = 0  # realistic: dark borders, many zero pixels
        suffix = ".gz" if gz else ""
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
        out[split] = images
    return out


def make_cifar10(root: Path, per_batch: int = 40, byte_keys: bool = False, seed: int = 1) -> dict[str, np.ndarray]:
    """CIFAR-10 python pickles (5 train batches + test) with batches.meta, as torchvision expects."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / name, images, rng.integers(0, 10, per_batch), byte_keys=byte_keys)
        if name != "test_batch":
            train.append(images)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return {"train": np.concatenate(train), "test": images}


def make_cifar100(root: Path, n: int = 50, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / split, images, rng.integers(0, 100, n), label_key="fine_labels", byte_keys=False)
        out[split] = images
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    return out


def make_folder(root: Path, n_per_class: int = 6, seed: int = 3) -> Path:
    """Class subfolders of real PNG/JPEG/BMP/TIFF files in several PIL modes and sizes."""
    rng = np.random.default_rng(seed)
    formats = [("png", "RGB"), ("jpg", "RGB"), ("png", "L"), ("png", "P"), ("bmp", "RGB"), ("png", "RGBA"),
               ("tiff", "RGB"), ("JPEG", "L")]
    for label in ("ants", "bees"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            h, w = int(rng.integers(8, 40)), int(rng.integers(8, 40))
            ext, mode = formats[(i + (label == "bees")) % len(formats)]
            img = Image.fromarray(rng.integers(0, 256, (h, w, 4 if mode == "RGBA" else 3), dtype=np.uint8))
            img = img.convert(mode) if mode != "RGBA" else img
            img.save(root / label / f"{label}{i}.{ext}")
    return root


def pil_pixels(path: Path, mode: str = "RGB") -> np.ndarray:
    """The reference conversion: torchvision ImageFolder's loader, as an (H*W, C) float64 array."""
    with Image.open(path) as img:
        arr = np.asarray(img.convert(mode), dtype=np.float64)
    return arr.reshape(-1, 1 if mode == "L" else 3)


def reference_stats(pixels: np.ndarray) -> dict[str, np.ndarray]:
    """float64 NumPy reference on (P, C) raw pixels in 0..255: unit-scale mean/std/min/max."""
    x = pixels.astype(np.float64) / 255.0
    return {"mean": x.mean(0), "std": x.std(0), "min": x.min(0), "max": x.max(0), "count": len(x)}


def exact_stats(pixels: np.ndarray) -> dict[str, list]:
    """Exact integer arithmetic on uint8 pixels (P, C): correctly rounded unit-scale mean and var."""
    out = {"mean": [], "var": []}
    for c in range(pixels.shape[1]):
        col = pixels[:, c].astype(np.int64)
        n, s, q = len(col), int(col.sum()), int((col * col).sum())
        out["mean"].append(s / (n * 255))
        out["var"].append((n * q - s * s) / (n * n * 255 * 255))
    return out


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


def assert_close(actual, expected, rel=1e-12, abs_=0.0):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rel, atol=abs_)


