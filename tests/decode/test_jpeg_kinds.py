"""prep.decode.jpeg_kinds: the kind of a JPEG, read from its header alone; other files have none."""

from __future__ import annotations

import pytest

from prep.decode.jpeg_kinds import JpegKind, read_header


def image_kind(data: bytes) -> JpegKind | None:
    """The kind of the JPEG in ``data``, or None."""
    header = read_header(data)
    return None if header is None else header[0]


def test_jpeg_headers_name_their_kind_and_other_files_have_none(kinds):
    def kind(name):
        return image_kind(kinds[name].read_bytes())

    assert kind("420-1")[:5] == ("jpeg", 0xC0, 8, 3, (0x22, 0x11, 0x11))
    assert kind("444-1").sampling == (0x11, 0x11, 0x11)
    assert kind("422-1").sampling == (0x21, 0x11, 0x11)
    assert kind("progressive-1").marker == 0xC2
    assert kind("grey-1").components == 1
    assert kind("cmyk-1").components == 4 and kind("cmyk-1").adobe is not None  # PIL writes an Adobe marker
    assert kind("png-RGB-1") is None  # PNGs always go to PIL
    assert kind("png-P-transparent-1") is None
    assert kind("png-I;16-1") is None
    assert kind("bmp-1") is None and kind("gif-1") is None and kind("tiff-1") is None
    header = read_header(kinds["420-1"].read_bytes())
    assert header is not None and header[1:] == (header[1], header[2]) and min(header[1:]) > 0  # width, height


@pytest.mark.parametrize(
    "data",
    [b"", b"\xff\xd8\xff", b"\xff\xd8\xff\xe0\x00", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR"],
)
def test_truncated_headers_have_no_kind(data):
    assert image_kind(data) is None


def test_junk_between_jpeg_segments_gives_no_kind(kinds):
    data = kinds["420-1"].read_bytes()
    at = data.index(b"\xff\xdb")  # the first DQT segment
    assert image_kind(data) is not None
    assert image_kind(data[:at] + b"junk" + data[at:]) is None
