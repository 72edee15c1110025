"""Independent references: torchvision's own readers, PIL's conversion, float64 NumPy and exact
integer arithmetic."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


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


def assert_close(actual, expected, rel=1e-12, abs_=0.0):
    np.testing.assert_allclose(np.asarray(actual, np.float64), np.asarray(expected, np.float64), rtol=rel, atol=abs_)


def source_arrays(src) -> list[np.ndarray]:
    """Each file of an array source as one (N, C, H, W) array, read through its batch protocol."""
    return [batch.numpy() for batch, _ in src.iter_batches(0, src.native_mode, pixels_per_batch=1 << 40)]


EXACT_FIELDS = ("count", "mean", "std", "min", "max", "per_image_std_mean", "nonfinite", "percentiles")


def assert_same_stats(a, b):
    """Two Stats with the same exact fields, image count, histogram and skipped totals."""
    da, db = a.to_dict(), b.to_dict()
    for name in EXACT_FIELDS:
        assert da[name] == db[name], name
    assert da["source"]["images"] == db["source"]["images"]
    np.testing.assert_array_equal(a.histogram, b.histogram)
    assert da["skipped"]["count"] == db["skipped"]["count"] and da["skipped"]["reasons"] == db["skipped"]["reasons"]
