"""Named datasets: where ``mnist``, ``cifar10``, ... live under ``--root``, and their download.

Each name maps to a preset that knows torchvision's layout for that dataset and opens it as a
source; ``--download`` fetches it through torchvision's own dataset class.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from prep.errors import DownloadError, SourceError
from prep.sources.arrays import ArraySource
from prep.sources.cifar import CIFAR10_LAYOUT, CIFAR100_LAYOUT, CifarLayout, cifar_source
from prep.sources.idx import idx_source

SPLITS = ("train", "test")


@dataclass(frozen=True)
class IdxPreset:
    """An MNIST-format dataset in torchvision's layout ``ROOT/<folder>/raw/``."""

    folder: str  # also the torchvision.datasets class name
    files: ClassVar[dict[str, str]] = {"train": "train-images-idx3-ubyte", "test": "t10k-images-idx3-ubyte"}

    @property
    def torchvision_class(self) -> str:
        return self.folder

    def open(self, name: str, root: Path, split: str) -> ArraySource:
        raw = root / self.folder / "raw"
        base = self.files[split]
        for candidate in (base, base + ".gz"):
            if (raw / candidate).is_file():
                return idx_source(raw / candidate, kind=name, split=split)
        raise SourceError(
            f"{raw / base}: {name} {split} split not found (nor {base}.gz); pass --root, or --download to fetch it"
        )


@dataclass(frozen=True)
class CifarPreset:
    """A CIFAR variant in torchvision's layout ``ROOT/<base_folder>/``."""

    layout: CifarLayout
    torchvision_class: str

    def open(self, name: str, root: Path, split: str) -> ArraySource:
        folder = root / self.layout.base_folder
        files = self.layout.splits[split]
        for f in files:
            if not (folder / f).is_file():
                raise SourceError(
                    f"{folder / f}: {name} {split} split not found; pass --root, or --download to fetch it"
                )
        return cifar_source(name, folder, split, files)


PRESETS: dict[str, IdxPreset | CifarPreset] = {
    "mnist": IdxPreset("MNIST"),
    "fashion-mnist": IdxPreset("FashionMNIST"),
    "kmnist": IdxPreset("KMNIST"),
    "cifar10": CifarPreset(CIFAR10_LAYOUT, "CIFAR10"),
    "cifar100": CifarPreset(CIFAR100_LAYOUT, "CIFAR100"),
}


def open_named(name: str, root: str | os.PathLike, split: str, download: bool = False) -> ArraySource:
    """The ``split`` of the named dataset under ``root``, fetched first when ``download``."""
    if split not in SPLITS:
        raise SourceError(f"split must be one of {', '.join(SPLITS)}; got {split!r}")
    if download:
        download_named(name, root, split)
    return PRESETS[name].open(name, Path(root), split)


def download_named(name: str, root: str | os.PathLike, split: str) -> None:
    """Fetch a named dataset into ``root`` with torchvision; one-line ``DownloadError`` on failure."""
    import torchvision.datasets

    cls = getattr(torchvision.datasets, PRESETS[name].torchvision_class)
    root = Path(root)
    before = set(root.iterdir()) if root.is_dir() else None
    try:
        cls(os.fspath(root), train=(split == "train"), download=True)
    except Exception as exc:  # network errors come in many types (URLError, HTTPError, RuntimeError)
        _remove_new_entries(root, before)
        raise DownloadError(f"cannot download {name} into {root}: {_error_text(exc)}") from None


def _error_text(exc: BaseException) -> str:
    """The first line of ``exc`` and, when they differ, the last line of the deepest error in its chain."""
    chain = [exc]
    while (inner := chain[-1].__cause__ or chain[-1].__context__) is not None and inner not in chain:
        chain.append(inner)
    lines = [line.strip() for e in chain for line in str(e).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[0] if lines[-1] == lines[0] else f"{lines[0].rstrip(':')}: {lines[-1]}"


def _remove_new_entries(root: Path, before: set[Path] | None) -> None:
    """Remove what a failed download created: ``root`` itself if it was new, else its new entries."""
    targets = [root] if before is None else [p for p in (root.iterdir() if root.is_dir() else ()) if p not in before]
    for path in targets:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
