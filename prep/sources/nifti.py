"""Medical volumes: NIfTI files (``.nii``, ``.nii.gz``), one case per volume, read by workers.

Three layouts, each listed once, sorted, into cases (a case: its channel files and its label map):

* a folder of NIfTI files: each file one case, 3-D ``(X, Y, Z)`` or 4-D with channels last;
  label maps, when asked for, from ``labels`` (``--labels DIR``) by the same file name;
* nnU-Net's raw layout: a folder holding ``imagesTr`` (and ``imagesTs``), or one of those
  folders itself; ``CASE_0000.nii.gz``, ``CASE_0001.nii.gz``... are the channels of case
  ``CASE`` (the 4-digit suffix is the channel), ``labelsTr/CASE.nii.gz`` its label map. ``split``
  ``train`` (the default) is ``imagesTr``, ``test`` ``imagesTs``; channel names come from the
  ``dataset.json`` beside them (``channel_names``) when there is one;
* a MONAI datalist: a JSON file ``{"training": [{"image": ..., "label": ...}], "validation":
  [...]}`` whose keys are the splits (``training`` by default); ``image`` is a path or a list of
  paths (the channels), relative to the JSON file's folder as MONAI's
  ``load_decathlon_datalist`` reads them.

Every voxel is read by :mod:`prep.decode.nifti` (nibabel) in the pass's workers
(:mod:`prep.engine.volumes`); the source lists files only. A case without its label map, when
the pass needs labels, is a one-line error naming the case (:meth:`VolumeSource.check_labels`).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import IO, Any

from prep.errors import OptionError, SourceError, os_reason
from prep.pixels import BANDS
from prep.sources.base import FileChunk, FileReader, TaskSource, open_regular
from prep.sources.fingerprint import fingerprint_listing

NIFTI_SUFFIXES = (".nii.gz", ".nii")
NNUNET_SPLITS = {"train": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}
DATALIST_SPLITS = ("training", "validation", "test")  # MONAI's usual keys, in order; any list key is a split
CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
MAX_DATALIST_BYTES = 64 << 20  # a datalist JSON larger than this is refused


def is_nifti_name(name: str) -> bool:
    return name.lower().endswith(NIFTI_SUFFIXES)


def strip_suffix(name: str) -> str:
    """``case.nii.gz`` -> ``case``."""
    lower = name.lower()
    for suffix in NIFTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_volume_dir(path: Path) -> bool:
    """A folder prep reads as volumes: nnU-Net's raw layout (``imagesTr``/``imagesTs`` in it, or
    the folder itself), or one whose first files are NIfTI files."""
    if not path.is_dir():
        return False
    if path.name in ("imagesTr", "imagesTs") or any((path / n).is_dir() for n in ("imagesTr", "imagesTs")):
        return True
    try:
        with os.scandir(path) as entries:
            names = sorted(e.name for e in entries if not e.name.startswith("."))
    except OSError:
        return False
    files = [n for n in names if not (path / n).is_dir()]
    return bool(files) and is_nifti_name(files[0])


def is_datalist(path: Path) -> bool:
    """A ``.json`` file holding a MONAI datalist (a list of ``{"image": ...}`` items under a key)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        data = _read_json(path)
    except SourceError:
        return False
    return isinstance(data, dict) and any(
        isinstance(v, list) and v and isinstance(v[0], dict) and "image" in v[0] for v in data.values()
    )


def datalist_splits(path: Path) -> tuple[str, ...]:
    """The keys of a datalist that hold lists of items (its splits), in the file's order."""
    data = _read_json(path)
    return tuple(k for k, v in data.items() if isinstance(v, list)) if isinstance(data, dict) else ()


def nnunet_splits(path: Path) -> tuple[str, ...]:
    return tuple(split for split, (images, _) in NNUNET_SPLITS.items() if (path / images).is_dir())


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_DATALIST_BYTES + 1)
    except OSError as exc:
        raise SourceError(f"{path}: {os_reason(exc)}") from None
    if len(raw) > MAX_DATALIST_BYTES:
        raise SourceError(f"{path}: a datalist of more than {MAX_DATALIST_BYTES} bytes")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise SourceError(f"{path}: not JSON ({exc})") from None


@dataclass(frozen=True)
class Case:
    """One volume: ``name``, its channel files (one 4-D file, or one file per channel) and its
    label map (None: none found), paths relative to the source's root."""

    name: str
    images: tuple[str, ...]
    label: str | None = None


@dataclass(frozen=True)
class CaseReader(FileReader):
    """The cases of a :class:`VolumeSource` by name, picklable: workers read their files
    themselves. ``open`` gives a case's first channel file; ``path`` any of its files."""

    root: str
    cases: tuple[Case, ...]

    @cached_property
    def _by_name(self) -> dict[str, Case]:
        return {case.name: case for case in self.cases}

    def case(self, name: str) -> Case:
        return self._by_name[name]

    def path(self, relative: str) -> str:
        return os.path.join(self.root, relative)

    def open(self, name: str) -> IO[bytes]:
        return open_regular(self.path(self.case(name).images[0]))

    def display(self, name: str) -> str:
        return self.path(self.case(name).images[0])


class VolumeSource(TaskSource):
    """NIfTI volumes in one of the module's layouts; ``labels`` a folder of label maps."""

    kind = "nifti"
    _native_mode = BANDS

    def __init__(self, path: str, split: str | None = None, labels: str | os.PathLike | None = None) -> None:
        super().__init__(path, split)
        self.labels_dir = None if labels is None else os.fspath(labels)
        where = Path(path)
        if where.is_file():
            self.layout = "datalist"
            self.root = str(where.parent)
            if labels is not None:
                raise OptionError(f"{path}: a datalist names its label maps; drop --labels")
        elif where.name in ("imagesTr", "imagesTs") or nnunet_splits(where):
            self.layout = "nnunet"
            base = where.parent if where.name in ("imagesTr", "imagesTs") else where
            if where.name in ("imagesTr", "imagesTs"):
                images = where.name
                if split is not None:
                    raise SourceError(f"{path}: the folder is one split already; drop --split {split}")
            else:
                pair = NNUNET_SPLITS.get(_nnunet_split(split))
                if pair is None or not (base / pair[0]).is_dir():
                    found = ", ".join(nnunet_splits(base)) or "none"
                    raise SourceError(f"{path}: no split {split!r} (imagesTr is train, imagesTs test; found: {found})")
                images = pair[0]
            self.root = str(base)
            self.images_dir = images
            default_labels = base / images.replace("images", "labels")
            if self.labels_dir is None and default_labels.is_dir():
                self.labels_dir = str(default_labels)
        else:
            self.layout = "folder"
            self.root = path
            if split is not None:
                raise SourceError(f"{path}: a folder of volumes has no splits; got --split {split}")
        self._cases: tuple[Case, ...] | None = None
        self._skipped: list[tuple[str, str]] = []
        self._stats: dict[str, os.stat_result] = {}

    # ------------------------------------------------------------------ listing
    @property
    def cases(self) -> tuple[Case, ...]:
        if self._cases is None:
            listed = {"datalist": self._list_datalist, "nnunet": self._list_nnunet}.get(self.layout, self._list_folder)
            self._cases = tuple(listed())
        return self._cases

    def _list_folder(self) -> list[Case]:
        cases = []
        for name in self._files(self.root, ""):
            cases.append(Case(strip_suffix(name), (name,), self._label_for(strip_suffix(name))))
        return cases

    def _list_nnunet(self) -> list[Case]:
        channels: dict[str, list[tuple[int, str]]] = {}
        for name in self._files(os.path.join(self.root, self.images_dir), self.images_dir + "/"):
            match = CHANNEL_SUFFIX.match(strip_suffix(os.path.basename(name)))
            if match is None:
                self._skipped.append((name, "no _XXXX channel suffix (nnU-Net's CASE_0000.nii.gz)"))
                continue
            channels.setdefault(match["case"], []).append((int(match["channel"]), name))
        cases = []
        for case in sorted(channels):
            files = sorted(channels[case])
            numbers = [n for n, _ in files]
            if numbers != list(range(len(numbers))):
                self._skipped.append(
                    (files[0][1], f"channels {numbers} of case {case}, not 0000 to {len(numbers) - 1:04d}")
                )
                continue
            cases.append(Case(case, tuple(name for _, name in files), self._label_for(case)))
        return cases

    def _list_datalist(self) -> list[Case]:
        assert self.path is not None
        data = _read_json(Path(self.path))
        split = self.split or "training"
        items = data.get(split) if isinstance(data, dict) else None
        if not isinstance(items, list):
            found = ", ".join(datalist_splits(Path(self.path))) or "none"
            raise SourceError(f"{self.path}: no list {split!r} (its splits: {found})")
        cases = []
        seen: set[str] = set()
        for k, item in enumerate(items):
            image = item.get("image") if isinstance(item, dict) else item
            images = [image] if isinstance(image, str) else image
            if not isinstance(images, list) or not images or not all(isinstance(p, str) for p in images):
                raise SourceError(f"{self.path}: {split}[{k}]: 'image' must be a path or a list of paths")
            label = item.get("label") if isinstance(item, dict) else None
            if label is not None and not isinstance(label, str):
                raise SourceError(f"{self.path}: {split}[{k}]: 'label' must be a path")
            name = strip_suffix(images[0])
            if name in seen:
                raise SourceError(f"{self.path}: {split}[{k}]: {images[0]} is listed twice")
            seen.add(name)
            for rel in [*images, *([label] if label else [])]:
                self._stat(rel)
            cases.append(Case(name, tuple(images), label))
        return cases

    def _stat(self, rel: str) -> None:
        try:
            self._stats[rel] = os.stat(os.path.join(self.root, rel))
        except OSError as exc:
            raise SourceError(f"{os.path.join(self.root, rel)}: {os_reason(exc)}") from None

    def _files(self, folder: str, prefix: str) -> list[str]:
        """The NIfTI files of ``folder`` (not recursive), sorted, as ``prefix + name``; others are
        listed as skipped."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise SourceError(f"{folder}: {os_reason(exc)}") from None
        names = []
        for entry in entries:
            rel = prefix + entry.name
            try:
                st = entry.stat()
            except OSError as exc:
                self._skipped.append((rel, f"cannot stat: {os_reason(exc)}"))
                continue
            if stat.S_ISDIR(st.st_mode) or entry.name.startswith("."):
                continue
            if not is_nifti_name(entry.name):
                if entry.name != "dataset.json":
                    self._skipped.append((rel, "not a NIfTI file (.nii, .nii.gz)"))
                continue
            self._stats[rel] = st
            names.append(rel)
        return names

    def _label_for(self, case: str) -> str | None:
        """The label map of ``case`` under the labels folder (``CASE.nii.gz`` or ``CASE.nii``), or None."""
        if self.labels_dir is None:
            return None
        for suffix in NIFTI_SUFFIXES:
            candidate = os.path.join(self.labels_dir, case + suffix)
            if os.path.isfile(candidate):
                rel = os.path.relpath(candidate, self.root)
                self._stats[rel] = os.stat(candidate)
                return rel
        return None

    def check_labels(self) -> None:
        """Refuse a pass that needs label maps when a case has none (one line naming it)."""
        for case in self.cases:
            if case.label is None:
                if self.layout == "datalist":
                    raise SourceError(f"{self.path}: case {case.name} has no 'label'")
                if self.labels_dir is None:
                    raise OptionError(
                        f"{self.where()}: measuring a foreground needs label maps: --labels DIR "
                        "(or nnU-Net's labelsTr beside imagesTr)"
                    )
                raise SourceError(f"{self.labels_dir}: no label map for case {case.name} ({case.name}.nii.gz)")

    # ------------------------------------------------------------------ the Source protocol
    def num_images(self) -> int:
        return len(self.cases)

    def fingerprint(self) -> dict:
        listed = {rel for case in self.cases for rel in (*case.images, *([case.label] if case.label else []))}
        return fingerprint_listing(
            (rel, st.st_size, st.st_mtime_ns) for rel, st in sorted(self._stats.items()) if rel in listed
        )

    def listed_skipped(self) -> list[tuple[str, str]]:
        _ = self.cases
        return list(self._skipped)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "layout": self.layout}

    def empty_message(self) -> str:
        return "no NIfTI volumes found (.nii, .nii.gz)"

    def label(self) -> str:
        name = os.path.basename(os.path.normpath(self.path or "")) or "volumes"
        return f"{name} {self.split}" if self.split else name

    def channel_names(self) -> tuple[str, ...] | None:
        """nnU-Net's ``dataset.json`` ``channel_names`` (``{"0": "CT"}``), in channel order, if any."""
        if self.layout != "nnunet":
            return None
        path = Path(self.root) / "dataset.json"
        if not path.is_file():
            return None
        try:
            names = _read_json(path).get("channel_names")
            return tuple(str(names[str(k)]) for k in range(len(names))) if isinstance(names, dict) else None
        except (SourceError, KeyError, AttributeError):
            return None

    def first_bands(self, probed: int = 16) -> tuple[int, tuple[str, ...] | None, str]:
        """The channel count, channel names and path of the first case whose headers read (of the
        first ``probed``), for :func:`prep.engine.bands.band_layout`."""
        from prep.decode.nifti import read_header

        failures = []
        for case in self.cases[:probed]:
            try:
                channels = sum(read_header(os.path.join(self.root, rel)).channels for rel in case.images)
            except Exception as exc:  # a damaged file: the next case; the pass lists it as skipped
                failures.append(f"{os.path.join(self.root, case.images[0])}: {exc}")
                continue
            names = self.channel_names()
            return (
                channels,
                names if names is not None and len(names) == channels else None,
                self.reader().display(case.name),
            )
        if failures:
            raise SourceError(f"none of the first {len(failures)} volumes reads ({failures[0]})")
        raise SourceError(f"{self.where()}: {self.empty_message()}")

    def reader(self) -> CaseReader:
        return CaseReader(self.root, self.cases)

    def iter_tasks(self, start: int, size: int, max_bytes: int | None = None) -> Iterator[FileChunk]:
        reader = self.reader()
        names = [case.name for case in self.cases]
        for i in range(start, len(names), size):
            yield FileChunk(reader, tuple(names[i : i + size]))


def volume_source_of(src: Any) -> VolumeSource | None:
    """The :class:`VolumeSource` under ``src`` (itself, or the source a shard or sample views)."""
    while not isinstance(src, VolumeSource) and hasattr(src, "inner"):
        src = src.inner
    return src if isinstance(src, VolumeSource) else None


def _nnunet_split(split: str | None) -> str:
    if split in (None, "train", "imagesTr"):
        return "train"
    if split in ("test", "imagesTs"):
        return "test"
    return str(split)
