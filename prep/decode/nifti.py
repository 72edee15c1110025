"""NIfTI volumes (``.nii``, ``.nii.gz``) read by nibabel in slabs along Z, in their stored dtype.

nibabel (an optional extra: ``pip install 'prep[medical]'``) reads each file's header:
:func:`read_header` gives its shape ``(X, Y, Z)`` or ``(X, Y, Z, C)`` (channels last), the stored
dtype with its byte order, where the voxels start (``img.dataobj.offset``), the header's
``scl_slope``/``scl_inter`` and the affine, and refuses what prep cannot read before anything
is allocated: 2-D images and 5-D ones, unsupported dtypes, more than :data:`MAX_PLANE_VOXELS`
voxels in one Z plane or :data:`MAX_VOLUME_VOXELS` in one channel, and a file too small to
hold what its header declares (a ``.nii`` shorter than its voxels, a ``.nii.gz`` that even
deflate's best ratio, :data:`DEFLATE_MAX_RATIO`, could not expand to them).

:class:`SlabReader` then reads what ``img.dataobj`` holds, slab by slab: NIfTI stores voxels in
Fortran order (X fastest), so Z planes ``z0:z1`` of a channel are one contiguous run of bytes,
read sequentially through nibabel's opener (gzip is decompressed as a stream, never seeked
backwards; one opener per channel). A slab holds about :data:`SLAB_VOXELS` voxels per channel
(16 Mi: 32 MiB of int16 CT a channel; the pass's reductions use about 8 bytes a voxel more), so
memory stays bounded whatever the volume's size, and a gzip bomb is never expanded beyond the
voxels its header declares. A short read is a truncated file (:class:`~prep.errors.BadImageError`).

Scaling: ``value = raw * scl_slope + scl_inter`` exactly, as nibabel applies it. When slope and
intercept are integers and the data is integer (CT stored as int16 or uint16 with intercept
-1024), the result stays integer (int32 arithmetic), so Hounsfield units keep prep's exact 16-bit
statistics; otherwise it is computed in float64 and stored as float32, as nnU-Net's
``get_fdata().astype(float32)`` gives it. No scaling (slope 0 or NaN, or 1 and 0) keeps the
stored values untouched.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from prep.errors import BadImageError, SourceError

MEDICAL_EXTRA = "reading NIfTI volumes needs nibabel: pip install 'prep[medical]'"
SLAB_VOXELS = 1 << 24  # voxels per channel a slab holds at most (one Z plane at least)
MAX_PLANE_VOXELS = 1 << 26  # voxels of one Z plane (8192 x 8192): beyond, a header is absurd
MAX_VOLUME_VOXELS = 1 << 32  # voxels of one channel (2048 x 2048 x 1024)
DEFLATE_MAX_RATIO = 1032  # deflate expands at most this much (RFC 1951's longest match per bit pattern)
AFFINE_TOLERANCE = 1e-3  # mm: image and label affines differing more than this are warned about
READABLE_KINDS = "biuf"  # bool, signed and unsigned integers, floats (complex and RGB are not read)


def nibabel_module() -> Any:
    """nibabel, or a one-line :class:`SourceError` naming the extra that installs it."""
    try:
        import nibabel
    except ImportError:
        raise SourceError(MEDICAL_EXTRA) from None
    return nibabel


@dataclass(frozen=True)
class VolumeFile:
    """A NIfTI file's facts from its header: ``shape`` ``(X, Y, Z)``, ``channels`` (the 4th
    dimension, or 1), the stored ``dtype`` (with its byte order), ``offset`` of the first voxel,
    ``slope``/``inter`` (None: unscaled) and the ``affine``."""

    path: str
    shape: tuple[int, int, int]
    channels: int
    dtype: np.dtype
    offset: int
    slope: float | None
    inter: float | None
    affine: tuple[tuple[float, ...], ...]

    @property
    def plane_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.dtype.itemsize

    @property
    def scaling(self) -> tuple[float, float] | None:
        """``(slope, inter)`` when the header scales the values, else None."""
        if self.slope is None or (self.slope == 1 and not self.inter):
            return None
        return self.slope, self.inter or 0.0

    def describe_shape(self) -> str:
        return "x".join(map(str, self.shape)) + (f"x{self.channels}" if self.channels > 1 else "")


def read_header(path: str) -> VolumeFile:
    """The :class:`VolumeFile` of ``path``; :class:`BadImageError` (one line) for a file prep
    cannot read as a volume, decided from the header before any voxel is read."""
    nib = nibabel_module()
    try:
        img = nib.load(path)
    except Exception as exc:  # nibabel raises many types for damaged files
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadImageError(f"not a readable NIfTI file ({text})") from None
    if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
        raise BadImageError(f"not a NIfTI-1 or NIfTI-2 image ({type(img).__name__})")
    header = img.header
    shape = tuple(int(n) for n in header.get_data_shape())
    while len(shape) > 4 and shape[-1] == 1:  # trailing unit dimensions hold nothing
        shape = shape[:-1]
    if len(shape) < 3:
        raise BadImageError(f"a {len(shape)}-D image ({'x'.join(map(str, shape))}), not a volume (X, Y, Z)")
    if len(shape) > 4:
        raise BadImageError(
            f"a {len(shape)}-D image ({'x'.join(map(str, shape))}); prep reads volumes (X, Y, Z) or (X, Y, Z, C)"
        )
    if min(shape) < 1:
        raise BadImageError(f"header declares an empty volume ({'x'.join(map(str, shape))})")
    dtype = np.dtype(header.get_data_dtype())
    if dtype.kind not in READABLE_KINDS or dtype.fields is not None:
        raise BadImageError(f"data type {dtype} is not read (integers and floats are)")
    x, y, z = shape[:3]
    channels = shape[3] if len(shape) == 4 else 1
    if x * y > MAX_PLANE_VOXELS or x * y * z > MAX_VOLUME_VOXELS:
        raise BadImageError(
            f"header declares {'x'.join(map(str, shape))} voxels, beyond prep's limits "
            f"({MAX_PLANE_VOXELS} a plane, {MAX_VOLUME_VOXELS} a channel)"
        )
    offset = int(img.dataobj.offset)
    declared = x * y * z * channels * dtype.itemsize
    size = os.path.getsize(path)
    if path.lower().endswith(".gz"):
        if declared > DEFLATE_MAX_RATIO * size + offset:
            raise BadImageError(
                f"header declares {declared} bytes of voxels, more than a {size}-byte gzip file can hold "
                "(truncated, or a damaged header)"
            )
    elif offset + declared > size:
        raise BadImageError(f"truncated: header declares {offset + declared} bytes, the file has {size}")
    # nibabel moves scl_slope/scl_inter from the header to the data proxy as it loads (1 and 0 unscaled)
    slope, inter = getattr(img.dataobj, "slope", None), getattr(img.dataobj, "inter", None)
    if slope is not None and (not math.isfinite(float(slope)) or float(slope) == 0):
        slope, inter = None, None
    affine = tuple(tuple(float(v) for v in row) for row in np.asarray(img.affine, np.float64))
    return VolumeFile(
        path,
        (x, y, z),
        channels,
        dtype,
        offset,
        None if slope is None else float(slope),
        None if inter is None else float(inter),
        affine,
    )


def scaled(raw: np.ndarray, scaling: tuple[float, float] | None) -> np.ndarray:
    """``raw * slope + inter`` (see the module's rules); ``raw`` itself when unscaled."""
    if scaling is None:
        return raw
    slope, inter = scaling
    if raw.dtype.kind in "biu" and float(slope).is_integer() and float(inter).is_integer():
        wide = np.int64 if raw.dtype.itemsize >= 4 else np.int32
        out: np.ndarray = raw.astype(wide)
        if slope != 1:
            out = out * wide(int(slope))
        if inter:
            out = out + wide(int(inter))
        return out
    return (raw.astype(np.float64) * slope + inter).astype(np.float32)


class SlabReader:
    """Channel ``channel`` of a :class:`VolumeFile`, read plane by plane in order (see the module).

    ``read(planes)`` gives the next ``planes`` Z planes as ``(X, Y * planes)`` in native byte
    order (Fortran order flattened: voxel ``(x, y, z)`` at ``[x, y + Y * z]``), scaled by the
    header when ``scale``. Use it as a context manager.
    """

    def __init__(self, volume: VolumeFile, channel: int = 0, scale: bool = True) -> None:
        nib = nibabel_module()
        self.volume = volume
        self.scale = scale
        self.native = volume.dtype.newbyteorder("=")
        self._file = nib.openers.ImageOpener(volume.path, "rb")
        start = volume.offset + channel * volume.plane_bytes * volume.shape[2]
        try:
            self._file.seek(start)
        except Exception:
            self._file.close()
            raise

    def read(self, planes: int) -> np.ndarray:
        v = self.volume
        want = v.plane_bytes * planes
        data = self._file.read(want)
        if len(data) < want:
            raise BadImageError(f"truncated: the voxel data ends before the {v.describe_shape()} its header declares")
        raw = np.frombuffer(data, v.dtype).reshape((v.shape[0], v.shape[1] * planes), order="F")
        raw = raw.astype(self.native, copy=False)
        return scaled(raw, v.scaling) if self.scale else raw

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SlabReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def planes_per_slab(volume: VolumeFile, slab_voxels: int = SLAB_VOXELS) -> int:
    """Z planes in a slab of about ``slab_voxels`` voxels per channel (at least one)."""
    return max(1, min(volume.shape[2], slab_voxels // (volume.shape[0] * volume.shape[1])))


def iter_slabs(readers: list[SlabReader], depth: int, planes: int) -> Iterator[tuple[int, list[np.ndarray]]]:
    """``(z0, [slab of each reader])`` for Z planes ``0..depth`` in slabs of ``planes``."""
    for z0 in range(0, depth, planes):
        n = min(planes, depth - z0)
        yield z0, [reader.read(n) for reader in readers]


def same_affine(a: VolumeFile, b: VolumeFile, tolerance: float = AFFINE_TOLERANCE) -> bool:
    """True when the affines of ``a`` and ``b`` agree within ``tolerance`` (mm) in every entry."""
    return all(
        math.isclose(p, q, rel_tol=0, abs_tol=tolerance)
        for row_a, row_b in zip(a.affine, b.affine)
        for p, q in zip(row_a, row_b)
    )
