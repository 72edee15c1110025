"""Turning what a user typed or passed into a :class:`~prep.sources.base.Source`.

An existing path wins over a dataset name. Paths are matched against :data:`PATH_KINDS` in
order, names against :data:`~prep.sources.named.PRESETS` and ``sample``; anything iterable is a
Python dataset. A new kind of source is one more line here. The folder options
(``follow_symlinks``, ``checksum``) reach folder sources, ``sample`` included; ``key`` reaches
archives (a WebDataset sample's image extension) and ``.npz`` files (the array), ``layout``
``.npy``/``.npz`` arrays, ``image_key`` Python datasets; other sources ignore them.

Several archives are one source (WebDataset shards): a list or tuple of paths, a brace pattern
(``shards/train-{000000..000127}.tar``) that is not itself an existing path, or a directory with
``archives=True`` (its ``.tar``/``.tar.gz``/``.tgz``/``.zip`` files, sorted). ``hf:NAME`` is a
Hugging Face dataset from the local cache (:mod:`.hf`).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prep.errors import OptionError, SourceError
from prep.sources.archive import ArchiveSource
from prep.sources.archive_members import is_archive_name
from prep.sources.base import Source
from prep.sources.dataset import DatasetSource
from prep.sources.folder import FolderSource
from prep.sources.idx import idx_source
from prep.sources.named import PRESETS, open_named
from prep.sources.nifti import VolumeSource, is_datalist, is_volume_dir
from prep.sources.npy import NumpySource, is_numpy_name
from prep.sources.shard_patterns import expand_braces, has_braces, shard_paths, shards_in

SAMPLE_DIR = Path(__file__).resolve().parent.parent / "sample_data"

# (does this existing path hold this kind?, open it with a split or None and the options
# (follow_symlinks, checksum, key, layout, archives), each kind taking its own); the first match wins
PATH_KINDS: tuple[tuple[Callable[[Path], bool], Callable[..., Source]], ...] = (
    (is_volume_dir, lambda path, split, **o: VolumeSource(path, split, labels=o["labels"])),
    (is_datalist, lambda path, split, **o: VolumeSource(path, split, labels=o["labels"])),
    (Path.is_dir, lambda path, split, **o: _open_dir(path, split, **o)),
    (lambda p: "idx3-ubyte" in p.name, lambda path, split, **o: _open_idx(path, split)),
    (lambda p: is_archive_name(p.name), lambda path, split, **o: _open_archives([path], split, path, **o)),
    (lambda p: is_numpy_name(p.name), lambda path, split, **o: NumpySource(path, split, o["key"], o["layout"])),
)
PATH_KIND_NAMES = (
    "a directory, an *-idx3-ubyte[.gz] file, an archive (.zip, .tar, .tar.gz, .tgz), a NumPy file (.npy, .npz) "
    "or a MONAI datalist (.json)"
)


def _open_dir(path: str, split: str | None, *, follow_symlinks, checksum, archives, key, **_) -> Source:
    if archives:
        return _open_archives(shards_in(path), split, path, samples=True, key=key)
    return FolderSource(path, split=split, follow_symlinks=follow_symlinks, checksum=checksum)


def _open_archives(
    paths: list[str], split: str | None, where: str, *, samples: bool = False, key: str | None = None, **_
) -> Source:
    return ArchiveSource(paths, samples=samples, key=key, path=where, split=split)


def _no_split(path: str, split: str | None) -> None:
    """Refuse ``--split`` for a source that is one file."""
    if split:
        raise SourceError(f"{path}: a single file has no splits; got --split {split}")


def _open_idx(path: Path, split: str | None) -> Source:
    _no_split(str(path), split)
    return idx_source(path)


def dataset_names() -> list[str]:
    return [*PRESETS, "sample"]


def resolve_source(
    source: Any,
    root: str | os.PathLike = "data",
    split: str | None = None,
    download: bool = False,
    *,
    follow_symlinks: bool = True,
    checksum: bool = False,
    key: str | None = None,
    layout: str | None = None,
    archives: bool = False,
    image_key: str | None = None,
    labels: str | os.PathLike | None = None,
) -> Source:
    """Turn a path, a dataset name, a Dataset/iterable or a Source into a :class:`Source`.

    ``split``: for named datasets ``train`` (the default) or ``test``; for folders, the split
    subfolder to measure (default: the whole folder); for ``.npz`` files MedMNIST's
    ``<split>_images`` array; for ``hf:NAME`` the dataset's split (default ``train``); refused
    for other single files and archives.
    ``follow_symlinks``, ``checksum``: for folders and ``sample``, see
    :class:`~prep.sources.folder.FolderSource`.
    ``key``: for archives, the extension of each WebDataset sample's image (``"jpg"``; implies
    sample rules, :mod:`.archive`); for ``.npz`` files, the array to read.
    ``layout``: ``"NHWC"`` or ``"NCHW"`` for NumPy arrays whose shape fits both (:mod:`.npy`).
    ``archives``: a directory is a set of WebDataset shards (its archive files), not a folder.
    ``image_key``: the image's key in dict items of Python datasets (:class:`DatasetSource`).
    ``labels``: for NIfTI volumes (:mod:`.nifti`), the folder of label maps.
    An option given for a source of a kind it does not apply to is an :class:`OptionError`
    (``key`` for a folder, say); Source objects (already made) ignore them.
    """
    src = _resolve(source, root, split, download, follow_symlinks, checksum, key, layout, archives, image_key, labels)
    if not isinstance(source, Source):
        _check_options_apply(src, key=key, layout=layout, archives=archives, image_key=image_key, labels=labels)
    return src


def _check_options_apply(src: Source, *, key, layout, archives, image_key, labels=None) -> None:
    """Refuse the source options that ``src``'s kind does not use, rather than ignore them."""
    where = src.where()
    if labels is not None and not isinstance(src, VolumeSource):
        raise OptionError(f"{where}: labels (--labels) is for NIfTI volumes, not a {src.kind} source")
    if key is not None and not (isinstance(src, ArchiveSource) or getattr(src, "kind", "") == "npz"):
        raise OptionError(f"{where}: key (--key) is for WebDataset shards and .npz files, not a {src.kind} source")
    if key is not None and getattr(src, "kind", "") == "npz" and src.split and isinstance(src, NumpySource):
        raise OptionError(f"{where}: give key (--key) or split (--split), not both: split picks <split>_images")
    if layout is not None and not isinstance(src, NumpySource):
        raise OptionError(f"{where}: layout (--layout) is for NumPy arrays, not a {src.kind} source")
    if archives and not isinstance(src, ArchiveSource):
        raise OptionError(f"{where}: archives (--archives) is for a directory of tar shards")
    if image_key is not None and not (isinstance(src, DatasetSource) or src.kind == "huggingface"):
        raise OptionError(f"{where}: image_key (--image-key) is for datasets of dict items, not a {src.kind} source")


def _resolve(
    source, root, split, download, follow_symlinks, checksum, key, layout, archives, image_key, labels=None
) -> Source:
    """:func:`resolve_source` before its check of the options."""
    options = {
        "follow_symlinks": follow_symlinks,
        "checksum": checksum,
        "key": key,
        "layout": layout,
        "archives": archives,
        "labels": labels,
    }
    if isinstance(source, Source):
        return source
    if isinstance(source, list | tuple) and source and all(isinstance(p, str | os.PathLike) for p in source):
        paths = shard_paths(source)
        where = paths[0] if len(paths) == 1 else f"{paths[0]} and {len(paths) - 1} more"
        return _open_archives(paths, split, where, samples=True, key=key)
    if isinstance(source, str | os.PathLike):
        text = os.fspath(source)
        path = Path(text)
        if path.exists():
            for matches, opener in PATH_KINDS:
                if matches(path):
                    return opener(text, split, **options)
            raise SourceError(f"{text}: not {PATH_KIND_NAMES}")
        if has_braces(text):
            return _open_archives(shard_paths(expand_braces(text)), split, text, samples=True, key=key)
        if text.startswith("hf:"):
            from prep.sources.hf import hf_source

            return hf_source(text, split, download=download, image_key=image_key)
        name = text.lower()
        if name == "sample":
            return FolderSource(str(SAMPLE_DIR), kind="sample", follow_symlinks=follow_symlinks, checksum=checksum)
        if name in PRESETS:
            return open_named(name, root, split or "train", download=download)
        raise SourceError(
            f"{text}: no such file or directory, and not a dataset name "
            f"({', '.join(dataset_names())}){_did_you_mean(name)}"
        )
    if hasattr(source, "__getitem__") or hasattr(source, "__iter__"):
        return DatasetSource(source, image_key=image_key)
    raise SourceError(f"cannot read images from a {type(source).__name__}")


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, dataset_names(), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
