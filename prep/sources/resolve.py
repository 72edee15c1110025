"""Turning what a user typed or passed into a :class:`~prep.sources.base.Source`.

An existing path wins over a dataset name. Paths are matched against :data:`PATH_KINDS` in
order, names against :data:`~prep.sources.named.PRESETS` and ``sample``; anything iterable is a
Python dataset. A new kind of source is one more line here.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import SourceError
from .base import Source
from .dataset import DatasetSource
from .folder import FolderSource
from .idx import idx_source
from .named import PRESETS, open_named

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"

# (does this existing path hold this kind?, open it); the first match wins
# (does this existing path hold this kind?, open it with a split or None); the first match wins
PATH_KINDS: tuple[tuple[Callable[[Path], bool], Callable[[str, str | None], Source]], ...] = (
    (Path.is_dir, lambda path, split: FolderSource(path, split=split)),
    (lambda p: "idx3-ubyte" in p.name, lambda path, split: idx_source(path, split=_no_split(path, split))),
)
PATH_KIND_NAMES = "a directory or an *-idx3-ubyte[.gz] file"


def _no_split(path: str, split: str | None) -> None:
    if split:
        raise SourceError(f"{path}: a single file has no splits; got --split {split}")


def dataset_names() -> list[str]:
    return [*PRESETS, "sample"]


def resolve_source(
    source: Any, root: str | os.PathLike = "data", split: str | None = None, download: bool = False
) -> Source:
    """Turn a path, a dataset name, a Dataset/iterable or a Source into a :class:`Source`.

    ``split``: for named datasets ``train`` (the default) or ``test``; for folders, the split
    subfolder to measure (default: the whole folder); refused for single files.
    """
    if isinstance(source, Source):
        return source
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        path = Path(text)
        if path.exists():
            for matches, opener in PATH_KINDS:
                if matches(path):
                    return opener(text, split)
            raise SourceError(f"{text}: not {PATH_KIND_NAMES}")
        name = text.lower()
        if name == "sample":
            return FolderSource(str(SAMPLE_DIR), kind="sample")
        if name in PRESETS:
            return open_named(name, root, split or "train", download=download)
        raise SourceError(
            f"{text}: no such file or directory, and not a dataset name "
            f"({', '.join(dataset_names())}){_did_you_mean(name)}"
        )
    if hasattr(source, "__getitem__") or hasattr(source, "__iter__"):
        return DatasetSource(source)
    raise SourceError(f"cannot read images from a {type(source).__name__}")


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, dataset_names(), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
