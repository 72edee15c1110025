"""A JPEG header prep calls plain (jpeg_kinds.is_plain) is one PIL opens exactly as it says: the
PIL probe it saves is never what decides a file's fate."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from prep.decode.jpeg_kinds import is_plain, read_header

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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_a_damaged_header_is_plain_only_if_pil_opens_it_as_it_says(data):
    sample = data.draw(st.sampled_from(SAMPLES))
    header_end = sample.index(b"\xff\xda") + 12
    edits = data.draw(st.lists(st.tuples(st.integers(2, header_end), st.integers(0, 255)), min_size=1, max_size=4))
    damaged = bytearray(sample)
    for at, value in edits:
        damaged[at] = value
    if data.draw(st.booleans()):
        damaged = damaged[: data.draw(st.integers(2, len(damaged)))]
    if is_plain(bytes(damaged)):
        _agrees_with_pil(bytes(damaged))
