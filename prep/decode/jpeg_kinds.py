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

from prep.stats import kernels

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


def scan(data: bytes) -> tuple[JpegKind, int, int, bool] | None:
    """``(kind, width, height, plain)`` of the JPEG in ``data`` (:func:`read_header` and
    :func:`is_plain` in one), or None: one native walk of the header where prep's kernels were
    built (:func:`prep.stats.kernels.jpeg_header`), else these two Python walks."""
    if kernels.PER_IMAGE:
        found = kernels.jpeg_header(data)
        if found is None:
            return None
        marker, precision, components, sampling, adobe, ids, width, height, plain = found
        return JpegKind("jpeg", marker, precision, components, sampling, adobe, ids), width, height, plain
    header = read_header(data)
    return None if header is None else (*header, is_plain(data))


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


# APPn payloads PIL's JPEG parser interprets beyond storing them, and how long each must be for
# its reads to succeed (None: anything it does with them is not plain, see is_plain)
_APP_PREFIXES: tuple[tuple[int, bytes, int | None], ...] = (
    (0xE0, b"JFIF", 12),  # version at 5, unit at 7, density at 8 and 10
    (0xEE, b"Adobe", 12),  # version at 5, transform at 11
    (0xE1, b"Exif\x00\x00", 6),  # stored
    (0xE1, b"http://ns.adobe.com/xap/1.0/\x00", 29),  # XMP: stored after the NUL
    (0xE2, b"ICC_PROFILE\x00", 12),  # stored, assembled after the header
    (0xE2, b"FPXR\x00", None),  # FlashPix: parsed
    (0xE2, b"MPF\x00", None),  # multi-picture: parsed after the header
    (0xED, b"Photoshop 3.0\x00", None),  # image resources: parsed
)


def is_plain(data: bytes) -> bool:
    """True when every segment of the JPEG header in ``data`` is one PIL's ``Image.open`` reads
    without a check that could fail: APPn payloads long enough for what PIL reads of them (and
    none it parses further), comments, whole quantization and Huffman tables, a DRI of 2 bytes,
    one 8-bit frame of 1, 3 or 4 components of the right length and a size, then a scan with data;
    no fill bytes, stray markers or truncation. Such a file opens in PIL exactly as its header
    says, so :mod:`prep.decode.decoders` need not ask PIL (its header probe costs more than a
    small image's decode); anything else is asked."""
    if not data.startswith(JPEG_MAGIC):
        return False
    pos, frames, end = 2, 0, len(data)
    try:
        for _ in range(_MAX_SEGMENTS):
            if data[pos] != 0xFF or data[pos + 1] == 0xFF:  # a marker, without fill bytes
                return False
            marker = data[pos + 1]
            (length,) = struct.unpack_from(">H", data, pos + 2)
            payload = data[pos + 4 : pos + 2 + length]
            if length < 2 or pos + 2 + length > end:
                return False
            if marker == 0xDA:  # start of scan: the header ends; scan data must follow
                return frames == 1 and pos + 2 + length < end
            if 0xE0 <= marker <= 0xEF:
                for app, prefix, minimum in _APP_PREFIXES:
                    if marker == app and payload.startswith(prefix):
                        if minimum is None or len(payload) < minimum:
                            return False
                        break
            elif marker == 0xDB:
                if not _whole_tables(payload):
                    return False
            elif marker == 0xDD:
                if len(payload) != 2:
                    return False
            elif marker in (0xC0, 0xC1, 0xC2):
                frames += 1
                if len(payload) < 6 or payload[0] != 8 or payload[5] not in (1, 3, 4):
                    return False
                height, width = struct.unpack_from(">HH", payload, 1)
                if not height or not width:  # PIL refuses an empty image
                    return False
                if len(payload) != 6 + 3 * payload[5] or frames > 1:
                    return False
            elif marker not in (0xC4, 0xFE):  # DHT and COM: PIL skips or stores them
                return False
            pos += 2 + length
    except (IndexError, struct.error):
        return False
    return False


def _whole_tables(payload: bytes) -> bool:
    """A DQT payload of whole 8- or 16-bit tables of ids 0..3 (what PIL's DQT reads without error)."""
    pos = 0
    while pos < len(payload):
        precision, table = divmod(payload[pos], 16)
        if precision > 1 or table > 3:
            return False
        pos += 1 + 64 * (precision + 1)
    return pos == len(payload) and pos > 0
