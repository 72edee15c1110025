"""MNIST-format idx files (MNIST, Fashion-MNIST, KMNIST, EMNIST), plain or gzip-compressed.

Layout (big-endian): two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, one 4-byte size per dimension, then the values in C order. Images are stored as
``(N, H, W)`` uint8. A file is read into memory in one preallocated array of the size its
header declares, after the header has been checked against the file's size; ``.gz`` files are
decompressed in bounded pieces and refused as soon as they hold more bytes than declared.
"""

from __future__ import annotations

import gzip
import os
import stat
import zlib
from typing import Any, BinaryIO

import numpy as np

from prep.errors import SourceError, os_reason
from prep.sources.arrays import ArraySource

UBYTE_TYPE = 0x08
IMAGE_DIMS = 3
HEADER_BYTES = 4 + 4 * IMAGE_DIMS

# DEFLATE cannot expand more than 1032:1 (a 258-byte match costs at least two bits), so a
# header declaring more than this many bytes per compressed byte describes a truncated file.
_GZIP_MAX_RATIO = 1032
_READ_PIECE = 1 << 24  # bytes asked for per read() call: bounds the decompressor's output

_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular_file(path: str, what: str) -> BinaryIO:
    """``path`` opened for binary reading; ``SourceError`` naming the file unless it is a regular file.

    The file is opened non-blocking, so a FIFO or a device given as ``path`` is refused after
    ``fstat`` instead of waiting for a writer; a regular file is then read normally.
    """
    nonblock = getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, os.O_RDONLY | nonblock | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise SourceError(f"{path}: cannot read {what} ({os_reason(exc)})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _FILE_KINDS if test(mode)), "a special file")
            raise SourceError(f"{path}: cannot read {what}: not a regular file ({kind})")
        if nonblock:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except OSError as exc:
        os.close(fd)
        raise SourceError(f"{path}: cannot read {what} ({os_reason(exc)})") from None
    except BaseException:
        os.close(fd)
        raise


def _parse_header(path: str, header: bytes) -> tuple[int, int, int]:
    """The ``(N, H, W)`` an idx3-ubyte header declares; ``SourceError`` names the file otherwise."""
    if len(header) < 4 or header[0] != 0 or header[1] != 0:
        raise SourceError(f"{path}: not an idx file (expected a header 00 00 08 03)")
    if header[2] != UBYTE_TYPE or header[3] != IMAGE_DIMS:
        raise SourceError(
            f"{path}: expected an idx3-ubyte image file (type 0x08, 3 dims); "
            f"got type 0x{header[2]:02x} with {header[3]} dims"
        )
    if len(header) < HEADER_BYTES:
        raise SourceError(f"{path}: idx header cut short ({len(header)} of {HEADER_BYTES} bytes)")
    n, height, width = (int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(IMAGE_DIMS))
    return n, height, width


def _describe(shape: tuple[int, int, int]) -> str:
    n, h, w = shape
    return f"header says {n} images of {h}x{w} ({HEADER_BYTES + n * h * w} bytes)"


def _check_size(path: str, shape: tuple[int, int, int], file_size: int, gz: bool) -> int:
    """The data bytes ``shape`` declares, after refusing empty shapes and sizes the file cannot hold."""
    n, h, w = shape
    if h == 0 or w == 0:
        raise SourceError(f"{path}: header says {n} images of {h}x{w}: zero-size images")
    if n == 0:
        raise SourceError(f"{path}: header says 0 images of {h}x{w}: no images")
    nbytes = n * h * w  # Python int: no overflow however large the header's sizes
    if gz:
        if HEADER_BYTES + nbytes > _GZIP_MAX_RATIO * file_size:
            raise SourceError(f"{path}: {_describe(shape)}, more than a gzip file of {file_size} bytes can hold")
    elif HEADER_BYTES + nbytes != file_size:
        raise SourceError(f"{path}: {_describe(shape)}, file has {file_size} bytes")
    return nbytes


def _read_data(path: str, stream: Any, shape: tuple[int, int, int], nbytes: int, gz: bool) -> np.ndarray:
    """The ``nbytes`` after the header, read in bounded pieces into one preallocated array."""
    try:
        data = np.empty(nbytes, np.uint8)
    except MemoryError:
        raise SourceError(f"{path}: {_describe(shape)}, too large to read into memory") from None
    view = data.data  # a writable memoryview of the array
    got = 0
    while got < nbytes:
        n = stream.readinto(view[got : got + _READ_PIECE])
        if not n:
            break
        got += n
    if got < nbytes:
        where = "decompressed data ends" if gz else "file ended (truncated while reading?)"
        raise SourceError(f"{path}: {_describe(shape)}, {where} after {HEADER_BYTES + got} bytes")
    if stream.read(1):
        raise SourceError(f"{path}: file has more bytes than its header declares ({_describe(shape)})")
    return data.reshape(shape)


def _load(path: str, with_data: bool) -> np.ndarray | int:
    """The images of ``path`` (``with_data``) or only their count, every header check done either way."""
    gz = path.endswith(".gz")
    with open_regular_file(path, "idx file") as f:
        try:
            file_size = os.fstat(f.fileno()).st_size
            with gzip.GzipFile(fileobj=f, mode="rb") if gz else f as stream:
                shape = _parse_header(path, stream.read(HEADER_BYTES))
                nbytes = _check_size(path, shape, file_size, gz)
                if not with_data:
                    return shape[0]
                return _read_data(path, stream, shape, nbytes, gz)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"{path}: cannot read idx file ({os_reason(exc)})") from None


def count_idx_images(path: str | os.PathLike) -> int:
    """The image count from an idx3-ubyte header, checked against the file's size (no data is read)."""
    count = _load(os.fspath(path), with_data=False)
    assert isinstance(count, int)
    return count


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an idx3-ubyte image file into memory as a uint8 array ``(N, H, W)``; ``SourceError`` names the file.

    ``.gz`` files are decompressed in bounded pieces: one holding more (or fewer) bytes than its
    header declares is refused without decompressing the rest.
    """
    images = _load(os.fspath(path), with_data=True)
    assert isinstance(images, np.ndarray)
    return images


def idx_source(path: str | os.PathLike, kind: str = "idx", split: str | None = None) -> ArraySource:
    """The images of one idx3-ubyte file (plain or ``.gz``) as a source."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    return ArraySource(kind, path, split, folder or ".", [name], read_idx_images, "L", count_idx_images)
