"""MNIST-format idx files (MNIST, Fashion-MNIST, KMNIST, EMNIST), plain or gzip-compressed.

Layout (big-endian): two zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, one 4-byte size per dimension, then the values in C order. Images are stored as
``(N, H, W)`` uint8. Plain files are memory-mapped, ``.gz`` files are decompressed once.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from ..errors import SourceError, os_reason
from .arrays import ArraySource

UBYTE_TYPE = 0x08
IMAGE_DIMS = 3
HEADER_BYTES = 4 + 4 * IMAGE_DIMS


def _read_header(path: str) -> bytes:
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            return f.read(HEADER_BYTES)
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{path}: cannot read idx file ({os_reason(exc)})") from None


def _parse_header(path: str, header: bytes) -> tuple[int, int, int]:
    """The ``(N, H, W)`` an idx3-ubyte header declares; ``SourceError`` names the file otherwise."""
    if len(header) < 4 or header[0] != 0 or header[1] != 0:
        raise SourceError(f"{path}: not an idx file (expected a header 00 00 08 03)")
    if header[2] != UBYTE_TYPE or header[3] != IMAGE_DIMS or len(header) < HEADER_BYTES:
        raise SourceError(
            f"{path}: expected an idx3-ubyte image file (type 0x08, 3 dims); "
            f"got type 0x{header[2]:02x} with {header[3]} dims"
        )
    return tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(IMAGE_DIMS))


def count_idx_images(path: str | os.PathLike) -> int:
    """The image count from an idx3-ubyte header alone (the data is checked when it is read)."""
    path = os.fspath(path)
    return _parse_header(path, _read_header(path))[0]


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an idx3-ubyte image file as a uint8 array ``(N, H, W)``; ``SourceError`` names the file.

    Plain files are memory-mapped (nothing is read until the pixels are used); ``.gz`` files
    are decompressed once into memory.
    """
    path = os.fspath(path)
    if path.endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                data = f.read()
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"{path}: cannot read idx file ({os_reason(exc)})") from None
        header = data[:HEADER_BYTES]
    else:
        data, header = None, _read_header(path)
    shape = _parse_header(path, header)
    expected = HEADER_BYTES + int(np.prod(shape, dtype=np.int64))
    actual = len(data) if data is not None else os.path.getsize(path)
    if actual != expected:
        raise SourceError(
            f"{path}: header says {shape[0]} images of {shape[1]}x{shape[2]} ({expected} bytes), "
            f"file has {actual} bytes"
        )
    if data is not None:
        return np.frombuffer(data, dtype=np.uint8, offset=HEADER_BYTES).reshape(shape)
    if expected == HEADER_BYTES:
        return np.zeros(shape, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER_BYTES, shape=shape)


def idx_source(path: str | os.PathLike, kind: str = "idx", split: str | None = None) -> ArraySource:
    """The images of one idx3-ubyte file (plain or ``.gz``) as a source."""
    path = os.fspath(path)
    folder, name = os.path.split(path)
    return ArraySource(kind, path, split, folder or ".", [name], read_idx_images, "L", count_idx_images)
