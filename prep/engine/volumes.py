"""Volumes in the pass: which voxels of a case are measured, and the worker that measures them.

:class:`VoxelMask` is what ``--labels``, ``--foreground``, ``--ignore-label``, ``--label-values``
and ``--per-label`` ask for, as nnU-Net and MONAI define it:

* no label option: every voxel (``--nonzero``, MONAI's ``nonzero=True``, leaves out each
  channel's voxels equal to 0; it is the nodata value 0 of every channel);
* ``foreground``: voxels whose label is above 0 (nnU-Net's fingerprint), less ``ignore_label``;
* ``label_values``: voxels whose label is one of them (less ``ignore_label``);
* ``per_label``: also one set of statistics per label value measured (those values, or every
  value above 0 without them), in the same pass; stored as classes named by the value.

:func:`reduce_volumes` is the worker's function (as :func:`~prep.engine.workers.reduce_chunk`
for images): for each case of its chunk it reads the headers, checks the channels and the label
map (same shape, else the pass ends naming both files; an affine differing by more than
:data:`~prep.decode.nifti.AFFINE_TOLERANCE` is a warning), then streams the volume in slabs
(:mod:`prep.decode.nifti`) into a state of its own, counted as one image
(:meth:`~prep.stats.moments.ChannelMoments.as_one_image`: per-image statistics are per volume),
and merges it. A case whose mask holds no voxel is skipped with its reason, a damaged file
with its own; either way the pass goes on.
"""

from __future__ import annotations

import zlib
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np

from prep.decode.nifti import SLAB_VOXELS, SlabReader, VolumeFile, planes_per_slab, read_header, same_affine
from prep.engine.bands import BandLayout
from prep.engine.workers import ChunkResult, describe_failure
from prep.errors import BadImageError, OptionError, SourceError
from prep.pixels import RAW_MAX
from prep.sources.base import FileChunk
from prep.stats.moments import ChannelMoments

LABEL_VALUES_MAX = 1 << 16  # label values a label map may hold (bincount over 0..max)


@dataclass(frozen=True)
class VoxelMask:
    """Which voxels a volume pass measures (see the module)."""

    foreground: bool = False
    ignore_label: int | None = None
    label_values: tuple[int, ...] | None = None
    per_label: bool = False

    @property
    def needs_labels(self) -> bool:
        return self.foreground or self.label_values is not None or self.per_label or self.ignore_label is not None

    def rule(self) -> str:
        """What the measured voxels are, in words (messages, the stats file)."""
        if not self.needs_labels:
            return "every voxel"
        said = (
            f"label in {{{', '.join(map(str, self.label_values))}}}" if self.label_values is not None else "label > 0"
        )
        return said + (f", label != {self.ignore_label}" if self.ignore_label is not None else "")

    def region(self, labels: np.ndarray) -> np.ndarray:
        """The measured voxels of a slab of integer ``labels``."""
        if self.label_values is not None:
            inside = np.isin(labels, np.asarray(self.label_values, labels.dtype))
        else:
            inside = labels > 0
        if self.ignore_label is not None:
            inside &= labels != self.ignore_label
        return inside

    def describe(self) -> dict[str, Any]:
        return {
            "voxels": self.rule(),
            "foreground": self.foreground or (self.per_label and self.label_values is None),
            "ignore_label": self.ignore_label,
            "label_values": None if self.label_values is None else list(self.label_values),
            "per_label": self.per_label,
        }


def voxel_mask(foreground: bool, ignore_label: Any, label_values: Any, per_label: bool) -> VoxelMask | None:
    """The :class:`VoxelMask` of the options (None when none asks for labels)."""
    values = parse_label_values(label_values)
    if ignore_label is not None and (isinstance(ignore_label, bool) or not isinstance(ignore_label, int)):
        raise OptionError(f"--ignore-label must be an integer label value; got {ignore_label!r}")
    if foreground and values is not None:
        raise OptionError("--foreground (label > 0) and --label-values choose the voxels twice; give one")
    if values is not None and ignore_label in values:
        raise OptionError(f"--label-values {ignore_label} is also --ignore-label")
    mask = VoxelMask(bool(foreground), ignore_label, values, bool(per_label))
    return mask if mask.needs_labels else None


def parse_label_values(value: Any) -> tuple[int, ...] | None:
    """``"1,2"`` or ``[1, 2]`` -> ``(1, 2)`` (sorted, unique integers); None stays None."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        values = [int(str(p).strip()) for p in parts]
    except ValueError:
        raise OptionError(f"--label-values must be integers, e.g. 1,2; got {value!r}") from None
    if not values or any(not 0 <= v < LABEL_VALUES_MAX for v in values):
        raise OptionError(f"--label-values must be integers from 0 to {LABEL_VALUES_MAX - 1}; got {value!r}")
    return tuple(sorted(set(values)))


def reduce_volumes(
    chunk: FileChunk,
    layout: BandLayout,
    mask: VoxelMask | None,
    track_images: bool = False,
    covariance: bool = False,
    slab_voxels: int = SLAB_VOXELS,
) -> ChunkResult:
    """Measure the cases of ``chunk`` (a :class:`~prep.sources.nifti.CaseReader`'s) in a worker."""
    result = ChunkResult(ChannelMoments(layout.channels, track_images, covariance, nodata=layout.nodata))
    reader: Any = chunk.reader
    for name in chunk.names:
        case = reader.case(name)
        try:
            _reduce_case(result, reader, case, layout, mask, track_images, covariance, slab_voxels)
        except (BadImageError, OSError, EOFError, zlib.error, ValueError) as exc:
            reason = f"cannot decode: {exc}" if isinstance(exc, BadImageError) else describe_failure(exc)
            result.skipped.append((name, reason))
    return result


def _reduce_case(
    result: ChunkResult,
    reader: Any,
    case: Any,
    layout: BandLayout,
    mask: VoxelMask | None,
    track_images: bool,
    covariance: bool,
    slab_voxels: int,
) -> None:
    files = [read_header(reader.path(rel)) for rel in case.images]
    first = files[0]
    for other in files[1:]:
        if other.shape != first.shape:
            raise SourceError(
                f"{other.path}: a volume of {other.describe_shape()}, but {first.path} (a channel of the same "
                f"case) is {first.describe_shape()}"
            )
    streams = [(f, c) for f in files for c in range(f.channels)]
    if layout.bands is not None:
        if max(layout.bands) >= len(streams):
            raise SourceError(f"{first.path}: {len(streams)} channel(s); --bands asks for {max(layout.bands) + 1}")
        streams = [streams[b] for b in layout.bands]
    if len(streams) != layout.channels:
        raise SourceError(f"{first.path}: {len(streams)} channel(s), but {layout.first} has {layout.channels}")
    label: VolumeFile | None = None
    if mask is not None:
        label = read_header(reader.path(case.label))
        if label.shape != first.shape or label.channels != 1:
            raise SourceError(
                f"{label.path}: a label map of {label.describe_shape()}, but its image {first.path} is "
                f"{'x'.join(map(str, first.shape))}"
            )
        if not same_affine(label, first):
            result.warnings.append(
                f"{label.path}: its affine differs from {first.path}'s (the voxels are paired as stored)"
            )
    for f in files:
        scaling = f.scaling or (1.0, 0.0)
        result.scaling[scaling] = result.scaling.get(scaling, 0) + 1
    part = ChannelMoments(layout.channels, track_images, covariance, nodata=layout.nodata)
    labels: dict[int, ChannelMoments] = {}
    planes = planes_per_slab(first, slab_voxels)
    with ExitStack() as stack:
        readers = [stack.enter_context(SlabReader(f, c)) for f, c in streams]
        label_reader = None if label is None else stack.enter_context(SlabReader(label))
        for z0 in range(0, first.shape[2], planes):
            n = min(planes, first.shape[2] - z0)
            slabs = [r.read(n) for r in readers]
            data = np.stack([_common(s, slabs) for s in slabs])
            region = None
            if label_reader is not None and mask is not None:
                values = _label_values(label_reader.read(n), label_reader.volume.path)
                region = mask.region(values)
                if not region.any():
                    continue
                if mask.per_label:
                    _per_label(labels, values, region, data, part)
            part.update_image(data, RAW_MAX, region)
    if not part.count.any():
        why = f"no voxel with {mask.rule()}" if mask is not None else "every voxel is nodata"
        result.skipped.append((case.name, f"empty foreground: {why}" if mask is not None else why))
        return
    result.state = result.state.merge(part.as_one_image())
    for value, state in sorted(labels.items()):
        key = str(value)
        state.as_one_image()
        mine = result.classes.get(key)
        result.classes[key] = state if mine is None else mine.merge(state)


def _common(slab: np.ndarray, slabs: list[np.ndarray]) -> np.ndarray:
    """``slab`` in a dtype every channel's slab fits (channels of several files may differ)."""
    kinds = {s.dtype for s in slabs}
    if len(kinds) == 1:
        return slab
    return slab.astype(np.result_type(*kinds), copy=False)


def _label_values(raw: np.ndarray, path: str) -> np.ndarray:
    """A label slab as integers; a label map holding other than whole numbers is refused."""
    if raw.dtype.kind == "f":
        whole = np.rint(raw)
        if not np.array_equal(whole, raw):
            raise BadImageError(f"{path}: label map holds values that are not whole numbers")
        return whole.astype(np.int64)
    return raw.astype(np.int64, copy=False) if raw.dtype.kind == "u" and raw.dtype.itemsize >= 8 else raw


def _per_label(
    labels: dict[int, ChannelMoments], values: np.ndarray, region: np.ndarray, data: np.ndarray, like: ChannelMoments
) -> None:
    """Fold the slab's voxels of each label value in ``region`` into that value's state."""
    inside = values[region]
    if inside.size == 0:
        return
    low, high = int(inside.min()), int(inside.max())
    if low < 0 or high >= LABEL_VALUES_MAX:
        raise BadImageError(f"label values from {low} to {high}; per-label statistics take 0 to {LABEL_VALUES_MAX - 1}")
    for value in np.flatnonzero(np.bincount(inside)):
        state = labels.get(int(value))
        if state is None:
            state = labels[int(value)] = ChannelMoments(
                like.channels, like.image_moments is not None, like.cross is not None, nodata=like.nodata
            )
        state.update_image(data, RAW_MAX, region & (values == value))
