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

from ..errors import os_reason, SourceError

UBYTE_TYPE = 0x08
IMAGE_DIMS = 3
HEADER_BYTES = 4 + 4 * IMAGE_DIMS


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """Read an idx3-ubyte image file as a uint8 array ``(N, H, W)``; ``SourceError`` names the file."""
    path = os.fspath(path)
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                data = f.read()
            header, payload = data[:HEADER_BYTES], None
        else:
            with open(path, "rb") as f:
                header = f.read(HEADER_BYTES)
            data = None
    except (OSError, EOFError, zlib.error) as exc:
        raise SourceError(f"{path}: cannot read idx file ({os_reason(exc)})") from None
    if len(header) < 4 or header[0] != 0 or header[1] != 0:
        raise SourceError(f"{path}: not an idx file (expected a header 00 00 08 03)")
    if header[2] != UBYTE_TYPE or header[3] != IMAGE_DIMS or len(header) < HEADER_BYTES:
        raise SourceError(
            f"{path}: expected an idx3-ubyte image file (type 0x08, 3 dims); "
            f"got type 0x{header[2]:02x} with {header[3]} dims"
        )
    shape = tuple(int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(IMAGE_DIMS))
    expected = HEADER_BYTES + int(np.prod(shape, dtype=np.int64))
    actual = len(data) if data is not None else os.path.getsize(path)
    if actual != expected:
        raise SourceError(
            f"{path}: header says {shape[0]} images of {shape[1]}x{shape[2]} ({expected} bytes), "
            f"file has {actual} bytes"
        )
    if data is not None:
        payload = np.frombuffer(data, dtype=np.uint8, offset=HEADER_BYTES)
        return payload.reshape(shape)
    if expected == HEADER_BYTES:
        return np.zeros(shape, np.uint8)
    return np.memmap(path, dtype=np.uint8, mode="r", offset=HEADER_BYTES, shape=shape)


def write_idx_images(path: str | os.PathLike, images: np.ndarray) -> None:
    """Write ``(N, H, W)`` uint8 images as an idx3-ubyte file (gzip when ``path`` ends in .gz)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != IMAGE_DIMS:
        raise ValueError(f"expected (N, H, W) images; got shape {images.shape}")
    header = bytes([0, 0, UBYTE_TYPE, IMAGE_DIMS]) + b"".join(d.to_bytes(4, "big") for d in images.shape)
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + images.tobytes())
