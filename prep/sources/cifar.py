"""CIFAR-10/100 python pickles, as torchvision and the original archives lay them out.

Each batch file is a pickled dict whose ``data`` entry (``b"data"`` in the original Python 2
pickles, ``"data"`` in re-saved ones) is a uint8 array ``(N, 3072)``: 1024 red, 1024 green,
then 1024 blue values per 32x32 image. Only NumPy arrays, lists and plain values may be
unpickled: a file that asks for anything else is rejected instead of executed.

Before anything is built, the pickle's opcodes are read by
:func:`prep.sources.pickle_shape.check_pickle_shape` (plain Python, so Ctrl-C stops it, and linear
in the file's size): dict keys must be ``str`` or ``bytes`` (hashing anything else is where a
431-byte file can hang unpickling forever), there are no sets, no object contains itself, nesting
and the object count are bounded, and memo references may not expand the structure beyond a small
multiple of what the file spells out. Only a file that passes is unpickled, which then takes time
in proportion to its size.
"""

from __future__ import annotations

import io
import os
import pickle
from dataclasses import dataclass

import numpy as np

from prep.errors import SourceError, os_reason, printable
from prep.sources.arrays import ArraySource
from prep.sources.idx import open_regular_file
from prep.sources.pickle_shape import PickleShapeError, check_pickle_shape

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

# What NumPy's own pickles of arrays and scalars call, protocols 0 to 5, NumPy 1 and 2 names:
# _reconstruct (protocols 0 to 4), _frombuffer (protocol 5), _codecs.encode (bytes before protocol 3).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}
_MAX_KEYS_SHOWN = 20


def _key_text(key: object) -> str:
    """A dict key as a message shows it: ``str`` and UTF-8 ``bytes`` plainly, anything else by ``repr``."""
    if isinstance(key, bytes):
        text = key.decode("utf-8", "backslashreplace")
    elif isinstance(key, str):
        text = key
    else:
        return printable(repr(key))[:60]
    return text[:60] if text.isprintable() else printable(repr(key))[:60]


def _keys_text(entry: dict) -> str:
    keys = sorted(_key_text(k) for k in entry)
    more = f", ... ({len(keys) - _MAX_KEYS_SHOWN} more)" if len(keys) > _MAX_KEYS_SHOWN else ""
    return ", ".join(keys[:_MAX_KEYS_SHOWN]) + more if keys else "none"


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {printable(module)}.{printable(name)}")
        # the NumPy 2 name first (numpy.core.* warns there), the NumPy 1 name where numpy._core is missing
        legacy = module.replace("numpy._core.", "numpy.core.", 1)
        try:
            return super().find_class(legacy.replace("numpy.core.", "numpy._core.", 1), name)
        except (ImportError, AttributeError):
            return super().find_class(legacy, name)


def read_cifar_batch(path: str | os.PathLike) -> np.ndarray:
    """Read one CIFAR batch pickle as uint8 images ``(N, 3, 32, 32)``; ``SourceError`` names the file."""
    path = os.fspath(path)
    with open_regular_file(path, "CIFAR batch") as f:
        try:
            raw = f.read()
        except (OSError, MemoryError) as exc:
            raise SourceError(f"{path}: cannot read CIFAR batch ({os_reason(exc)})") from None
    try:
        check_pickle_shape(raw)  # before anything is built: unpickling cannot be interrupted
        entry = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except PickleShapeError as exc:
        raise SourceError(f"{path}: not a CIFAR python pickle ({printable(str(exc))})") from None
    except Exception as exc:  # any unpickling failure means the file is not a CIFAR batch
        reason = printable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        raise SourceError(f"{path}: not a CIFAR python pickle ({reason})") from None
    del raw
    if not isinstance(entry, dict):
        raise SourceError(f"{path}: expected a pickled dict with a 'data' entry; got {type(entry).__name__}")
    data = entry.get(b"data", entry.get("data"))
    if data is None:
        raise SourceError(f"{path}: no 'data' entry (keys: {_keys_text(entry)})")
    if not isinstance(data, np.ndarray):
        raise SourceError(f"{path}: 'data' must be a uint8 array of shape (N, 3072); got {type(data).__name__}")
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != CHANNELS * SIDE * SIDE:
        raise SourceError(f"{path}: 'data' must be uint8 of shape (N, 3072); got {data.dtype} {data.shape}")
    return data.reshape(-1, CHANNELS, SIDE, SIDE)


BYTES_PER_IMAGE = 3104  # a CIFAR pickle's size per image: 3072 pixels, label and filename (10,000 in 31 MB)


def estimate_images(path: str) -> int:
    """A CIFAR batch's image count guessed from its size, for the progress bar before it is read."""
    try:
        return max(1, round(os.path.getsize(path) / BYTES_PER_IMAGE))
    except OSError:
        return 0


def cifar_source(kind: str, folder: str | os.PathLike, split: str, files: tuple[str, ...]) -> ArraySource:
    """The images of CIFAR batch ``files`` in ``folder``, in order, as a source."""
    folder = os.fspath(folder)
    return ArraySource(kind, folder, split, folder, files, read_cifar_batch, "RGB", estimator=estimate_images)
