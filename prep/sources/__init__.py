"""Sources: where images come from, resolved from what the user typed or passed.

=================  ==============================================================  ==========
``SOURCE``          what it reads                                                   native mode
=================  ==============================================================  ==========
a directory         image files below it, recursively (:mod:`prep.sources.folder`)  RGB
``*idx3-ubyte[.gz]`` one MNIST-format image file (MNIST, EMNIST, ...)               L
``mnist``, ``fashion-mnist``, ``kmnist``  ``ROOT/<Class>/raw/*-idx3-ubyte[.gz]``     L
``cifar10``, ``cifar100``  ``ROOT/cifar-10-batches-py/``, ``ROOT/cifar-100-python/``  RGB
``sample``          the small image folder shipped inside prep                       RGB
a Dataset/iterable  PIL images or image tensors, or ``(image, target)`` pairs        by content
=================  ==============================================================  ==========

An existing path wins over a dataset name. Array sources (idx, CIFAR) yield large uint8
batches; folders are listed and decoded by workers; Python datasets are iterated in order.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from ..errors import DownloadError, SourceError
from .cifar import CIFAR10, CIFAR100, CifarLayout, read_cifar_batch
from .fingerprint import fingerprint_files
from .folder import FolderListing, list_images
from .idx import count_idx_images, read_idx_images

SPLITS = ("train", "test")
SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"


class Source:
    """Common description of a source: what it is, where, which split, and its fingerprint."""

    kind: str = ""
    native_mode: str = "RGB"

    def __init__(self, path: str | None, split: str | None = None) -> None:
        self.path = path
        self.split = split

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "split": self.split}

    def fingerprint(self) -> dict | None:
        return None

    def num_images(self) -> int | None:
        return None


class ArraySource(Source):
    """Sources held as uint8 arrays ``(N, C, H, W)``, one file at a time: idx files and CIFAR pickles.

    Files are read when iteration reaches them and released after, so memory holds one file.
    """

    def __init__(self, kind: str, path: str, split: str | None, root: Path, files: Sequence[str],
                 reader: Callable[[str], np.ndarray], native_mode: str,
                 counter: Callable[[str], int] | None = None) -> None:
        super().__init__(path, split)
        self.kind = kind
        self.root = root
        self.files = list(files)
        self.native_mode = native_mode
        self._reader = reader
        self._counter = counter

    def read(self, name: str) -> np.ndarray:
        array = self._reader(os.path.join(self.root, name))
        return array[:, None] if array.ndim == 3 else array

    def arrays(self) -> list[np.ndarray]:
        """Every file's images (all in memory at once; iteration uses :meth:`iter_batches`)."""
        return [self.read(f) for f in self.files]

    def num_images(self) -> int | None:
        """The image count when the file headers tell it without reading the data, else None."""
        if self._counter is None:
            return None
        return sum(self._counter(os.path.join(self.root, f)) for f in self.files)

    def fingerprint(self) -> dict:
        return fingerprint_files(self.root, self.files)

    def iter_batches(self, start: int, batch_size: int | None, pixels_per_batch: int) -> Iterator[np.ndarray]:
        """Yield consecutive uint8 batches ``(n, C, H, W)`` from image index ``start`` on.

        Without ``batch_size``, a batch holds about ``pixels_per_batch`` pixels.
        """
        offset = 0
        for name in self.files:
            array = self.read(name)
            size = batch_size or max(1, pixels_per_batch // max(1, int(np.prod(array.shape[1:]))))
            for i in range(max(start - offset, 0), len(array), size):
                yield array[i : i + size]
            offset += len(array)
            del array


class FolderSource(Source):
    """A directory of image files."""

    kind = "folder"

    def __init__(self, path: str, kind: str = "folder") -> None:
        super().__init__(path)
        self.kind = kind
        self._listing: FolderListing | None = None

    @property
    def listing(self) -> FolderListing:
        if self._listing is None:
            self._listing = list_images(self.path)
        return self._listing

    def num_images(self) -> int:
        return len(self.listing.images)

    def fingerprint(self) -> dict:
        return self.listing.fingerprint()


class DatasetSource(Source):
    """A ``torch.utils.data.Dataset`` or any iterable of PIL images / image tensors."""

    kind = "dataset"

    def __init__(self, dataset: Any) -> None:
        super().__init__(path=None)
        self.dataset = dataset
        self.name = type(dataset).__name__

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.name}

    def num_images(self) -> int | None:
        try:
            return len(self.dataset)
        except TypeError:
            return None

    def iter_items(self, start: int) -> Iterator[tuple[int, Any]]:
        if hasattr(self.dataset, "__getitem__") and self.num_images() is not None:
            for i in range(start, len(self.dataset)):
                yield i, self.dataset[i]
            return
        for i, item in enumerate(self.dataset):
            if i >= start:
                yield i, item


# --------------------------------------------------------------------------- named datasets
@dataclass(frozen=True)
class IdxDataset:
    """An MNIST-format dataset in torchvision's layout ``ROOT/<folder>/raw/``."""

    folder: str  # also the torchvision.datasets class name
    native_mode = "L"
    files = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}

    def open(self, name: str, root: Path, split: str) -> Source:
        raw = root / self.folder / "raw"
        base = self.files[split]
        for candidate in (base, base + ".gz"):
            if (raw / candidate).is_file():
                return ArraySource(name, str(raw / candidate), split, raw, [candidate], read_idx_images, "L",
                                   count_idx_images)
        raise SourceError(
            f"{raw / base}: {name} {split} split not found (nor {base}.gz); "
            "pass --root, or --download to fetch it"
        )


@dataclass(frozen=True)
class CifarDataset:
    layout: CifarLayout
    torchvision_class: str
    native_mode = "RGB"

    def open(self, name: str, root: Path, split: str) -> Source:
        folder = root / self.layout.base_folder
        files = self.layout.splits[split]
        for f in files:
            if not (folder / f).is_file():
                raise SourceError(
                    f"{folder / f}: {name} {split} split not found; pass --root, or --download to fetch it"
                )
        return ArraySource(name, str(folder), split, folder, files, read_cifar_batch, "RGB")


NAMED_DATASETS: dict[str, Any] = {
    "mnist": IdxDataset("MNIST"),
    "fashion-mnist": IdxDataset("FashionMNIST"),
    "kmnist": IdxDataset("KMNIST"),
    "cifar10": CifarDataset(CIFAR10, "CIFAR10"),
    "cifar100": CifarDataset(CIFAR100, "CIFAR100"),
}


def torchvision_class(name: str) -> str:
    spec = NAMED_DATASETS[name]
    return spec.folder if isinstance(spec, IdxDataset) else spec.torchvision_class


def download(name: str, root: str | os.PathLike, split: str) -> None:
    """Fetch a named dataset into ``root`` with torchvision; one-line ``DownloadError`` on failure."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, torchvision_class(name))
    try:
        cls(os.fspath(root), train=(split == "train"), download=True)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, RuntimeError)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DownloadError(f"cannot download {name} into {root}: {message}") from None


def resolve_source(source: Any, root: str | os.PathLike = "data", split: str = "train",
                   download_missing: bool = False) -> Source:
    """Turn a path, a dataset name, a Dataset/iterable or a Source into a :class:`Source`."""
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        path = Path(text)
        if path.is_dir():
            return FolderSource(text)
        if path.exists():
            if "idx3-ubyte" in path.name:
                return ArraySource("idx", text, None, path.parent, [path.name], read_idx_images, "L",
                                   count_idx_images)
            raise SourceError(f"{text}: not a directory or an *-idx3-ubyte[.gz] file")
        name = text.lower()
        if name == "sample":
            return FolderSource(str(SAMPLE_DIR), kind="sample")
        if name in NAMED_DATASETS:
            if split not in SPLITS:
                raise SourceError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
            if download_missing:
                download(name, root, split)
            return NAMED_DATASETS[name].open(name, Path(root), split)
        names = ", ".join([*NAMED_DATASETS, "sample"])
        raise SourceError(f"{text}: no such file or directory, and not a dataset name ({names})")
    if isinstance(source, torch.utils.data.Dataset) or hasattr(source, "__iter__"):
        return DatasetSource(source)
    raise SourceError(f"cannot read images from a {type(source).__name__}")


__all__ = [
    "ArraySource", "DatasetSource", "FolderSource", "NAMED_DATASETS", "SPLITS", "Source",
    "download", "fingerprint_files", "list_images", "read_cifar_batch", "read_idx_images", "resolve_source",
]
