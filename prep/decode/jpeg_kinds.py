"""What kind of JPEG an encoded file holds, read from its header alone (no decoding).

A *kind* is a hashable description of everything in a JPEG header that could make two decoders
disagree about its pixels: the frame type (baseline, extended, progressive, ...), sample
precision, components and their sampling factors, the Adobe colour transform and the component
ids (libjpeg guesses RGB from ids ``R``, ``G``, ``B`` when no marker says).
:mod:`prep.decode.decoders` uses kinds to decide, once per kind, whether torchvision.io's pixels
equal PIL's. Files that are not JPEGs (PNGs always go to PIL), or whose header cannot be parsed,
have no kind (``None``) and are always decoded by PIL.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

JPEG_MAGIC = b"\xff\xd8\xff"

# SOF markers: C0 baseline, C1 extended sequential, C2 progressive, C3 lossless; C5-C7 and
# CD-CF hierarchical; C9-CB arithmetic-coded. C4 (DHT), C8 (JPG) and CC (DAC) are not frames.
_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_MAX_SEGMENTS = 4096  # markers read before the frame header at most; a file with more has no kind


class JpegKind(NamedTuple):
    """Everything in a JPEG header that could make two decoders disagree about its pixels."""

    format: str  # "jpeg"
    marker: int  # the SOF marker: 0xC0 baseline, 0xC1 extended, 0xC2 progressive, ...
    precision: int  # bits per sample
    components: int  # 1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK
    sampling: tuple[int, ...]  # each component's sampling factors (0xHV)
    adobe: int | None  # the Adobe transform flag, when the file has that marker
    ids: tuple[int, ...]  # the component ids


def read_header(data: bytes) -> tuple[JpegKind, int, int] | None:
    """``(kind, width, height)`` of the JPEG in ``data``, or None."""
    if not data.startswith(JPEG_MAGIC):
        return None
    try:
        return _jpeg_kind(data)
    except (struct.error, IndexError, ValueError):
        return None


def jpeg_components(kind: JpegKind | None) -> int | None:
    """The number of colour components of a JPEG kind (1 grey, 3 YCbCr/RGB, 4 CMYK/YCCK), else None."""
    return kind.components if kind is not None else None


def _jpeg_kind(data: bytes) -> tuple[JpegKind, int, int] | None:
    pos, adobe = 2, None
    for _ in range(_MAX_SEGMENTS):
        if data[pos] != 0xFF:  # every segment starts with a marker; anything else: no kind
            return None
        while pos < len(data) and data[pos] == 0xFF:  # the marker's 0xFF and fill bytes
            pos += 1
        if pos >= len(data):
            return None
        marker = data[pos]
        pos += 1
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            continue
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2:
            return None
        if marker == 0xEE and data[pos + 2 : pos + 7] == b"Adobe" and length >= 12:
            adobe = data[pos + 13]  # the transform flag: 0 none (RGB/CMYK), 1 YCbCr, 2 YCCK
        if marker in _SOF_MARKERS:
            precision, height, width, count = struct.unpack_from(">BHHB", data, pos + 2)
            ids = tuple(data[pos + 8 + 3 * i] for i in range(count))
            sampling = tuple(data[pos + 8 + 3 * i + 1] for i in range(count))
            return JpegKind("jpeg", marker, precision, count, sampling, adobe, ids), width, height
        if marker in (0xD9, 0xDA):  # end of image, or scan data before any frame header
            return None
        pos += length
    return None
