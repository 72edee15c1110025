"""NumPy image arrays: ``.npy`` files and arrays inside ``.npz`` files (MedMNIST and the like).

Shapes: ``(N, H, W)`` (grey), ``(N, H, W, C)`` (``NHWC``) or ``(N, C, H, W)`` (``NCHW``). With
``C`` 1, 3 or 4 the native mode is ``L`` (one channel) or ``RGB``, and a fourth channel is alpha,
dropped as PIL's ``convert("RGB")`` drops it; any other ``C`` (up to 1,024: multispectral bands)
is measured in the bands mode, every channel in its own values. The channel axis is the one of
1, 3 or 4 values, else the one smaller than both image sides (``(N, 13, 256, 256)`` is NCHW);
when the shape leaves it open (``(N, 3, H, 3)``, ``(N, 32, 32, 32)``) ``layout="NHWC"`` or
``"NCHW"`` says which; without it that is a one-line error. dtypes: uint8 (divided by 255),
other integers (16-bit values, 0..65535, divided by 65535) and floats (unit scale already), by
:mod:`prep.pixels`' rule (in the bands mode, every dtype as it is); object arrays are refused
(files are read with ``allow_pickle=False``, never unpickled).

Memory: a ``.npy`` file is memory-mapped and batches are zero-copy views of the map (an NHWC
batch is a permuted view), so an array larger than memory is read a batch at a time. In an
``.npz`` (a zip of ``.npy`` members) a member stored uncompressed (``np.savez``) is
memory-mapped the same way, at its offset in the zip; a compressed member (``np.savez_compressed``)
is decompressed as a stream, one batch at a time, in order (resuming at image ``k`` decompresses
the ``k`` images before it again). Only a Fortran-ordered compressed member is loaded whole.

Which array of an ``.npz``: ``key``; else, with ``split`` (``train``, ``val``, ``test``), MedMNIST's
``<split>_images``; else the only array, or ``train_images`` when there is one.
The fingerprint (``{"files": 1, "bytes", "sha256"}``) hashes the file's size and modification
time, the array's name, shape, dtype and the layout: no read of the data.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from prep.errors import SourceError, os_reason
from prep.sources.base import BatchSource

if TYPE_CHECKING:
    import torch

LAYOUTS = ("NHWC", "NCHW")
CHANNEL_COUNTS = (1, 3, 4)  # grey, RGB, RGBA: the modes L and RGB
MAX_BANDS = 1024  # prep.stats.moments.MAX_CHANNELS
NPY_SUFFIXES = (".npy", ".npz")


def is_numpy_name(name: str) -> bool:
    return name.lower().endswith(NPY_SUFFIXES)


def image_layout(shape: tuple[int, ...], layout: str | None, where: str) -> str:
    """``"NHW"``, ``"NHWC"`` or ``"NCHW"``: how an array of ``shape`` holds images.

    >>> [image_layout(s, None, "x") for s in ((5, 28, 28), (5, 32, 32, 3), (5, 3, 32, 32))]
    ['NHW', 'NHWC', 'NCHW']
    >>> image_layout((5, 3, 8, 3), "NCHW", "x")
    'NCHW'
    """
    if layout is not None and layout.upper() not in LAYOUTS:
        raise SourceError(f"{where}: layout must be NHWC or NCHW; got {layout!r}")
    expected = f"(N, H, W), (N, H, W, C) or (N, C, H, W) with C from 1 to {MAX_BANDS}"
    if len(shape) == 3:
        return "NHW"
    if len(shape) != 4:
        raise SourceError(f"{where}: array of shape {shape} is not {expected}")
    channels = {"NHWC": shape[3], "NCHW": shape[1]}
    if layout is not None:
        if not 1 <= channels[layout.upper()] <= MAX_BANDS:
            raise SourceError(f"{where}: array of shape {shape} is not {layout.upper()} with C from 1 to {MAX_BANDS}")
        return layout.upper()
    fits = [name for name, c in channels.items() if c in CHANNEL_COUNTS]
    if not fits:  # bands: the axis smaller than both image sides
        fits = [
            name
            for name, c, sides in (("NHWC", shape[3], shape[1:3]), ("NCHW", shape[1], shape[2:4]))
            if c <= MAX_BANDS and c < min(sides)
        ]
    if not fits:
        raise SourceError(f"{where}: array of shape {shape} is not {expected}; pass layout= (--layout) if it is")
    if len(fits) > 1:
        raise SourceError(f"{where}: array of shape {shape} could be NHWC or NCHW; pass layout= (--layout)")
    return fits[0]


def npz_splits(path: str | os.PathLike) -> tuple[str, ...]:
    """The MedMNIST splits an ``.npz`` file holds (``train``, ``val``, ``test`` with a ``<split>_images``
    array), in that order; ``()`` for anything else."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return ()
    return tuple(s for s in ("train", "val", "test") if f"{s}_images.npy" in names)


def check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise SourceError(f"{where}: object arrays are not read (they would need unpickling)")
    if dtype.kind not in "uif" or (dtype.kind == "f" and dtype.itemsize > 8) or dtype.fields:
        raise SourceError(f"{where}: cannot read pixels of dtype {dtype}; use uint8, 16-bit integers or floats")


class NumpySource(BatchSource):
    """The images of a ``.npy`` file, or of one array in a ``.npz`` file (see the module's rules)."""

    path: str  # always a file or folder here

    def __init__(self, path: str, split: str | None = None, key: str | None = None, layout: str | None = None) -> None:
        super().__init__(path, split)
        self.kind = "npz" if path.lower().endswith(".npz") else "npy"
        self.key = key
        self.requested_layout = layout
        self._stat = _stat(path)
        if self.kind == "npy":
            if split:
                raise SourceError(f"{path}: a .npy file has no splits; got --split {split}")
            self._where = path
            self._member: zipfile.ZipInfo | None = None
            array = self._open_npy()
            self._map: np.ndarray | None = array  # None: a compressed member, read as a stream
            shape, dtype, fortran = array.shape, array.dtype, False
        else:
            self._member = self._pick_member()
            self._where = f"{path}:{self._member.filename[:-4]}"
            self._map, shape, dtype, fortran = self._open_npz_member()
        self.shape: tuple[int, ...] = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._fortran = fortran
        check_dtype(self.dtype, self._where)
        self.layout = image_layout(self.shape, layout, self._where)
        channels = 1 if self.layout == "NHW" else self.shape[3 if self.layout == "NHWC" else 1]
        self.stored_channels = channels
        self.channels = min(channels, 3) if channels in CHANNEL_COUNTS else channels
        self._native_mode = {1: "L", 3: "RGB", 4: "RGB"}.get(channels, "bands")

    # ---------------------------------------------------------------- opening
    def _open_npy(self) -> np.ndarray:
        try:
            array = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise SourceError(f"{self.path}: not a readable .npy array ({_first_line(exc)})") from None
        if not isinstance(array, np.ndarray):
            raise SourceError(f"{self.path}: not a .npy array")
        return array

    def _pick_member(self) -> zipfile.ZipInfo:
        try:
            with zipfile.ZipFile(self.path) as zf:
                members = {i.filename[:-4]: i for i in zf.infolist() if i.filename.endswith(".npy")}
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise SourceError(f"{self.path}: not a readable .npz file ({_first_line(exc)})") from None
        names = ", ".join(members) or "none"
        if self.key is not None:
            if self.key not in members:
                raise SourceError(f"{self.path}: no array '{self.key}' (it has {names})")
            return members[self.key]
        if self.split:
            name = f"{self.split}_images"
            if name not in members:
                raise SourceError(f"{self.path}: no '{name}' array for split {self.split} (it has {names})")
            return members[name]
        if len(members) == 1:
            return next(iter(members.values()))
        if "train_images" in members:
            self.split = "train"
            return members["train_images"]
        raise SourceError(f"{self.path}: holds several arrays ({names}); pass key= (--key) or a split")

    def _open_npz_member(self) -> tuple[np.ndarray | None, tuple, np.dtype, bool]:
        """A memory map of a stored member, else None; and the member's shape, dtype, Fortran order."""
        info = self._member
        assert info is not None
        try:
            with open(self.path, "rb") as f:
                if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
                    f.seek(info.header_offset)
                    header = f.read(30)
                    if len(header) != 30 or header[:4] != b"PK\x03\x04":
                        raise ValueError("bad local file header")
                    name_len, extra_len = struct.unpack("<HH", header[26:30])
                    f.seek(info.header_offset + 30 + name_len + extra_len)
                    shape, fortran, dtype = _read_npy_header(f)
                    check_dtype(dtype, self._where)
                    if not int(np.prod(shape)):
                        return np.empty(shape, dtype), shape, dtype, fortran
                    array = np.memmap(f, dtype, "r", f.tell(), shape, "F" if fortran else "C")
                    return array, shape, dtype, fortran
            with self._member_stream() as stream:
                shape, fortran, dtype = _read_npy_header(stream)
            return None, shape, dtype, fortran
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
            raise SourceError(f"{self._where}: not a readable .npy member ({_first_line(exc)})") from None

    @contextmanager
    def _member_stream(self) -> Iterator[IO[bytes]]:
        assert self._member is not None  # an .npz member source
        with zipfile.ZipFile(self.path) as zf, zf.open(self._member) as stream:
            yield stream

    # ---------------------------------------------------------------- protocol
    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "split": self.split}

    def where(self) -> str:
        return self._where

    def label(self) -> str:
        return os.path.basename(self._where)

    def num_images(self) -> int:
        return self.shape[0]

    def empty_message(self) -> str:
        return "the array holds no images"

    def fingerprint(self) -> dict:
        size, mtime_ns = self._stat
        member = None if self._member is None else self._member.filename
        text = f"numpy\t{size}\t{mtime_ns}\t{member}\t{self.shape}\t{self.dtype.str}\t{self.layout}\n"
        digest = hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()
        return {"files": 1, "bytes": size, "sha256": digest}

    def iter_batches(
        self, start: int, mode: str, pixels_per_batch: int, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, int]]:
        if _stat(self.path) != self._stat:
            raise SourceError(f"{self.path}: the file changed since it was opened")
        per_image = int(np.prod(self.shape[1:]))
        size = batch_size or max(1, pixels_per_batch // max(1, per_image))
        for block in self._blocks(start, size):
            yield self._tensor(block, mode), len(block)

    def _blocks(self, start: int, size: int) -> Iterator[np.ndarray]:
        """``(n, ...)`` blocks of the array from image ``start`` on: views of the map, or read."""
        count = self.shape[0]
        if self._map is not None:
            for i in range(start, count, size):
                yield self._map[i : i + size]
            return
        with self._member_stream() as stream:
            _read_npy_header(stream)
            if self._fortran:  # no image is contiguous in a Fortran-ordered stream: read it whole
                whole = _read_exact(stream, int(np.prod(self.shape)) * self.dtype.itemsize, self._where)
                array = np.frombuffer(whole, self.dtype).reshape(self.shape, order="F")
                for i in range(start, count, size):
                    yield array[i : i + size]
                return
            image_bytes = int(np.prod(self.shape[1:])) * self.dtype.itemsize
            _skip(stream, start * image_bytes, self._where)
            for i in range(start, count, size):
                n = min(size, count - i)
                data = _read_exact(stream, n * image_bytes, self._where)
                yield np.frombuffer(data, self.dtype).reshape(n, *self.shape[1:])

    def _tensor(self, block: np.ndarray, mode: str = "RGB") -> torch.Tensor:
        from prep.engine.devices import tensor_view

        if not block.dtype.isnative:
            block = block.astype(block.dtype.newbyteorder("="))
        batch = tensor_view(block)
        if self.layout == "NHW":
            return batch.unsqueeze(1)
        if self.layout == "NHWC":
            batch = batch.permute(0, 3, 1, 2)
        if mode == "bands":
            return batch
        return batch[:, :3]  # a fourth channel is alpha: dropped


def _read_npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(f)
    return np.lib.format.read_array_header_2_0(f)


def _read_exact(stream: IO[bytes], size: int, where: str) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise SourceError(f"{where}: the array data is truncated")
    return data


def _skip(stream: IO[bytes], size: int, where: str) -> None:
    while size > 0:
        got = len(stream.read(min(size, 1 << 24)))
        if got == 0:
            raise SourceError(f"{where}: the array data is truncated")
        size -= got


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise SourceError(f"{path}: {os_reason(exc)}") from None
    return st.st_size, st.st_mtime_ns


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__
