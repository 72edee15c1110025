"""CIFAR-10/100 python pickles, as torchvision and the original archives lay them out.

Each batch file is a pickled dict whose ``data`` entry (``b"data"`` in the original Python 2
pickles, ``"data"`` in re-saved ones) is a uint8 array ``(N, 3072)``: 1024 red, 1024 green,
then 1024 blue values per 32x32 image. Only NumPy arrays, lists and plain values may be
unpickled: a file that asks for anything else is rejected instead of executed.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass

import numpy as np

from ..errors import SourceError, os_reason
from .arrays import ArraySource

SIDE = 32
CHANNELS = 3


@dataclass(frozen=True)
class CifarLayout:
    """Where a CIFAR variant keeps its batch files under the dataset root."""

    base_folder: str
    splits: dict[str, tuple[str, ...]]


CIFAR10_LAYOUT = CifarLayout(
    "cifar-10-batches-py",
    {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
)
CIFAR100_LAYOUT = CifarLayout("cifar-100-python", {"train": ("train",), "test": ("test",)})

_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: str | os.PathLike) -> np.ndarray:
    """Read one CIFAR batch pickle as uint8 images ``(N, 3, 32, 32)``; ``SourceError`` names the file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            entry = _ArrayUnpickler(f, encoding="bytes").load()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read CIFAR batch ({os_reason(exc)})") from None
    except Exception as exc:  # any unpickling failure means the file is not a CIFAR batch
        raise SourceError(f"{path}: not a CIFAR python pickle ({type(exc).__name__}: {exc})") from None
    if not isinstance(entry, dict):
        raise SourceError(f"{path}: expected a pickled dict with a 'data' entry")
    data = entry.get(b"data", entry.get("data"))
    if data is None:
        keys = ", ".join(sorted(k.decode() if isinstance(k, bytes) else str(k) for k in entry))
        raise SourceError(f"{path}: no 'data' entry (keys: {keys or 'none'})")
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise SourceError(f"{path}: 'data' must be uint8 of shape (N, 3072); got {data.dtype} {data.shape}")
    return data.reshape(-1, CHANNELS, SIDE, SIDE)


def cifar_source(kind: str, folder: str | os.PathLike, split: str, files: tuple[str, ...]) -> ArraySource:
    """The images of CIFAR batch ``files`` in ``folder``, in order, as a source."""
    folder = os.fspath(folder)
    return ArraySource(kind, folder, split, folder, files, read_cifar_batch, "RGB")
