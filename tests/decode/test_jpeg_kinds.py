"""prep.decode.jpeg_kinds: the kind of a JPEG or PNG file, read from its header alone."""

from __future__ import annotations

import pytest

from prep.decode.jpeg_kinds import image_kind


def test_jpeg_and_png_headers_name_their_kind(kinds):
    def kind(name):
        return image_kind(kinds[name].read_bytes())

    assert kind("420-1")[:5] == ("jpeg", 0xC0, 8, 3, (0x22, 0x11, 0x11))
    assert kind("444-1")[4] == (0x11, 0x11, 0x11)
    assert kind("422-1")[4] == (0x21, 0x11, 0x11)
    assert kind("progressive-1")[1] == 0xC2
    assert kind("grey-1")[3] == 1
    assert kind("cmyk-1")[3] == 4 and kind("cmyk-1")[5] is not None  # PIL writes an Adobe marker
    assert kind("png-RGB-1")[:4] == ("png", 8, 2, 0)
    assert kind("png-P-transparent-1")[2] == 3 and "tRNS" in kind("png-P-transparent-1")[4]
    assert kind("png-I;16-1")[1] == 16
    assert kind("bmp-1") is None and kind("gif-1") is None and kind("tiff-1") is None


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
