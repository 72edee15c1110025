"""Which splits a source has, and the list that ``--split train,test`` or ``--split all`` asks for.

Named datasets have torchvision's ``train`` and ``test``; a folder has the split subfolders it
holds (:data:`~prep.sources.folder.SPLIT_FOLDERS`: ``train``, ``val``/``valid``/``validation``,
``test``), and so has a zip or tar of such a folder; other sources have none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prep.errors import OptionError
from prep.sources.folder import SPLIT_FOLDERS
from prep.sources.named import PRESETS, SPLITS

ALL = "all"


def available_splits(source: Any) -> tuple[str, ...]:
    """The splits of ``source`` in their usual order (train, val, test); ``()`` when it has none."""
    if not isinstance(source, str | os.PathLike):
        return ()
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".npz":
        from prep.sources.npy import npz_splits

        return npz_splits(path)
    from prep.sources.nifti import datalist_splits, is_datalist, is_volume_dir, nnunet_splits

    if is_datalist(path):
        return datalist_splits(path)
    if is_volume_dir(path):
        return nnunet_splits(path)
    if path.is_dir():
        return tuple(split for split, names in SPLIT_FOLDERS.items() if any((path / n).is_dir() for n in names))
    if path.is_file():
        from prep.sources.archive import archive_splits
        from prep.sources.archive_members import is_archive_name, list_archive

        if is_archive_name(path.name):
            return archive_splits(list_archive(os.fspath(path)))
    if not path.exists() and os.fspath(source).lower() in PRESETS:
        return SPLITS
    return ()


def parse_splits(text: str | None, source: Any) -> list[str | None]:
    """The splits that ``--split`` names: ``None`` (the source's default), one split, a comma list,
    or ``all`` (every split :func:`available_splits` finds). Repeats are dropped, order kept."""
    if text is None:
        return [None]
    names = [part.strip() for part in text.split(",")]
    if any(not name for name in names):
        raise OptionError(f"--split {text!r}: empty split name (write e.g. 'train,test' or 'all')")
    if ALL in names:
        if len(names) > 1:
            raise OptionError(f"--split {text!r}: 'all' cannot be combined with other splits")
        found = available_splits(source)
        if not found:
            raise OptionError(
                f"{os.fspath(source) if isinstance(source, str | os.PathLike) else type(source).__name__}: "
                "--split all: no splits found (a named dataset, or a folder with train/val/test subfolders)"
            )
        return list(found)
    return list(dict.fromkeys(names))
