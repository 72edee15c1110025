"""A JPEG header prep calls plain (jpeg_kinds.is_plain) is one PIL opens exactly as it says: the
PIL probe it saves is never what decides a file's fate. The native header walk
(prep/_kernels_api.c, jpeg_kinds.scan) says exactly what the Python reference functions say."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from prep.decode import jpeg_kinds
from prep.decode.jpeg_kinds import is_plain, read_header
from prep.stats import kernels

_MODES = {1: "L", 3: "RGB", 4: "CMYK"}


def _jpeg(mode: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (9, 13, len(mode)), np.uint8).squeeze()).convert(
        mode
    ).save(buf, "JPEG", **kwargs)
    return buf.getvalue()


SAMPLES = [
    _jpeg("RGB"),
    _jpeg("L"),
    _jpeg("CMYK"),
    _jpeg("RGB", progressive=True),
    _jpeg("RGB", exif=Image.Exif().tobytes(), comment=b"hello"),
    _jpeg("RGB", icc_profile=b"\x00" * 200),
]


def test_what_pil_writes_is_plain():
    assert all(is_plain(data) for data in SAMPLES)


def test_a_header_of_no_height_is_not_plain():
    damaged = bytearray(SAMPLES[0])
    frame = damaged.index(b"\xff\xc0")
    damaged[frame + 5 : frame + 7] = b"\x00\x00"  # the frame's height
    assert not is_plain(bytes(damaged))


def _agrees_with_pil(data: bytes) -> None:
    header = read_header(data)
    assert header is not None
    kind, width, height = header
    with Image.open(io.BytesIO(data)) as img:  # must not raise
        assert img.format == "JPEG" and img.size == (width, height) and img.mode == _MODES[kind.components]


def _damaged(data, first: int, edits: int) -> bytes:
    """A sample JPEG with up to ``edits`` header bytes from ``first`` on changed, perhaps cut short."""
    sample = data.draw(st.sampled_from(SAMPLES))
    header_end = sample.index(b"\xff\xda") + 12
    changes = data.draw(
        st.lists(st.tuples(st.integers(first, header_end), st.integers(0, 255)), min_size=1, max_size=edits)
    )
    damaged = bytearray(sample)
    for at, value in changes:
        damaged[at] = value
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(first, len(damaged)))]
    return bytes(damaged)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_header_is_plain_only_if_pil_opens_it_as_it_says(data):
    damaged = _damaged(data, 2, 4)
    if is_plain(damaged):
        _agrees_with_pil(damaged)


native = pytest.mark.skipif(not kernels.PER_IMAGE, reason="prep's kernels are not built")


def _python(data: bytes):
    header = jpeg_kinds.read_header(data)
    return None if header is None else (*header, jpeg_kinds.is_plain(data))


def _same(data: bytes) -> None:
    assert jpeg_kinds.scan(data) == _python(data), data.hex()


@native
def test_real_headers_and_their_every_truncation():
    for sample in SAMPLES:
        assert jpeg_kinds.scan(sample)[3] is True
        for end in range(len(sample) if len(sample) < 2000 else 2000):
            _same(sample[:end])


@native
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\xff\xd8",
        b"\xff\xd8\xff",
        b"\xff\xd8\xff\xff\xff",
        b"\xff\xd8\xff\xc0\x00\x02",
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x01\x00\x01\x03",  # a frame cut in its components
        b"\xff\xd8\xff\xee\x00\x0eAdobe\x00",  # an Adobe segment cut before its flag
        b"\xff\xd8\xff\x01\xff\xd0\xff\xc0\x00\x0b\x08\x00\x01\x00\x01\x01\x01\x11\x00",  # markers without length
        b"\x89PNG\r\n\x1a\n",
    ],
)
def test_edge_headers(data):
    _same(data)


@native
def test_a_header_of_many_segments_stops_where_python_stops():
    comment = b"\xff\xfe\x00\x02"
    for count in (4094, 4095, 4096, 4097):
        data = SAMPLES[0][:2] + comment * count + SAMPLES[0][2:]
        _same(data)


@native
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_damaged_headers_agree(data):
    _same(_damaged(data, 0, 6))


@native
@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_after_the_magic_agree(tail):
    _same(b"\xff\xd8\xff" + tail)
