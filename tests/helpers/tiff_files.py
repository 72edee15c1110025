"""Multi-band TIFFs laid out as GDAL writes them, and damaged or hostile copies of them.

tifffile writes the image data; GDAL's own tags are written here from the format of GDAL's TIFF
driver: ``GDAL_METADATA`` (42112) is ``<GDALMetadata>`` XML whose band descriptions are
``<Item name="DESCRIPTION" sample="0" role="description">``, ``sample`` 0-based, the text escaped
twice (GDAL escapes a value before its XML writer escapes it again), and ``GDAL_NODATA`` (42113)
is the value as ASCII, ``%.18g`` (``0``, ``-9999``, ``nan``). A GeoTIFF's georeferencing (WGS 84,
10 m pixels) makes the files what rasterio opens without a warning. ``tests/decode/test_tiff.py``
checks these against rasterio's reading, where rasterio is installed.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO
from xml.sax.saxutils import escape

import numpy as np
import tifffile

SENTINEL2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
GDAL_METADATA, GDAL_NODATA = 42112, 42113
_XML_QUOTES = {'"': "&quot;", "'": "&apos;"}  # CPLEscapeString(CPLES_XML) escapes quotes too


def gdal_metadata(descriptions: Sequence[str | None]) -> str:
    """GDAL's ``GDAL_METADATA`` XML holding one description per band (None: the band has none)."""
    items = [
        f'  <Item name="DESCRIPTION" sample="{band}" role="description">{escape(escape(text, _XML_QUOTES))}</Item>'
        for band, text in enumerate(descriptions)
        if text
    ]
    return "<GDALMetadata>\n" + "".join(item + "\n" for item in items) + "</GDALMetadata>"


def gdal_nodata(value: float) -> str:
    """``GDAL_NODATA`` as GDAL writes it: ``CPLSPrintf("%.18g", value)``."""
    return f"{value:.18g}"


def geotiff_tags(pixel_size: float = 10.0) -> list[tuple]:
    """tifffile ``extratags`` georeferencing an image in WGS 84 (EPSG:4326), north-up."""
    keys = (1, 1, 0, 3, 1024, 0, 1, 2, 1025, 0, 1, 1, 2048, 0, 1, 4326)  # geographic, pixel is area, WGS 84
    degrees = pixel_size / 111_320
    return [
        (33550, "d", 3, (degrees, degrees, 0.0), True),  # ModelPixelScale
        (33922, "d", 6, (0.0, 0.0, 0.0, 10.0, 50.0, 0.0), True),  # ModelTiepoint: pixel (0, 0) at 10 E, 50 N
        (34735, "H", len(keys), keys, True),  # GeoKeyDirectory
    ]


def write_geotiff(
    target: Path | BinaryIO,
    array: np.ndarray,
    *,
    planar: bool = True,
    tile: tuple[int, int] | None = None,
    rowsperstrip: int | None = None,
    compression: str | None = None,
    predictor: int | bool | None = None,
    nodata: float | None = None,
    descriptions: Sequence[str | None] | None = None,
    byteorder: str = "<",
    photometric: str = "minisblack",
    **options,
) -> np.ndarray:
    """``array`` ``(C, H, W)`` as a one-image GeoTIFF, planar (GDAL's ``INTERLEAVE=BAND``) or
    interleaved (``PIXEL``; one band is written alike either way); returns ``array``, the bands
    as a reader must give them back. ``options`` go to ``tifffile.imwrite``."""
    extratags = geotiff_tags()
    if descriptions is not None:
        extratags.append((GDAL_METADATA, "s", 0, gdal_metadata(descriptions), True))
    if nodata is not None:
        extratags.append((GDAL_NODATA, "s", 0, gdal_nodata(nodata), True))
    data = array if planar else np.moveaxis(array, 0, -1)
    if len(array) == 1:  # one band: no planar configuration to choose
        data, planarconfig = array[0], None
    else:
        planarconfig = "separate" if planar else "contig"
    tifffile.imwrite(
        target,
        data,
        photometric=photometric,
        planarconfig=planarconfig,
        tile=tile,
        rowsperstrip=rowsperstrip,
        compression=compression,
        predictor=predictor,
        byteorder=byteorder,
        extratags=extratags,
        metadata=None,  # no tifffile JSON description: a plain TIFF, as GDAL writes
        **options,
    )
    return array


def write_sentinel2(target: Path | BinaryIO, height: int = 40, width: int = 52, seed: int = 0) -> np.ndarray:
    """A 13-band uint16 Sentinel-2-like GeoTIFF: planar, DEFLATE with the horizontal predictor,
    16 x 16 tiles (edge tiles partly outside the image), nodata 0 over a corner, band descriptions
    B01 .. B12 and B8A. Returns its ``(13, H, W)`` bands."""
    rng = np.random.default_rng(seed)
    array = rng.integers(1, 12000, (13, height, width), dtype=np.uint16)
    array[:, : height // 4, : width // 4] = 0  # outside the swath
    return write_geotiff(
        target, array, tile=(16, 16), compression="zlib", predictor=True, nodata=0, descriptions=SENTINEL2_BANDS
    )


def write_int16_negatives(target: Path | BinaryIO, height: int = 30, width: int = 20, seed: int = 1) -> np.ndarray:
    """A 4-band interleaved int16 GeoTIFF (elevations, differences) with negative values and
    nodata -9999 in a few pixels, striped by 7 rows, DEFLATE."""
    rng = np.random.default_rng(seed)
    array = rng.integers(-3000, 3000, (4, height, width), dtype=np.int16)
    array[:, 3, 5] = -9999
    return write_geotiff(
        target,
        array,
        planar=False,
        rowsperstrip=7,
        compression="zlib",
        nodata=-9999,
        descriptions=["dem", "", "a", "b"],
    )


def write_float32_nan(target: Path | BinaryIO, height: int = 24, width: int = 33, seed: int = 2) -> np.ndarray:
    """A 3-band planar float32 GeoTIFF (reflectances) with NaN pixels and nodata ``nan``, uncompressed, striped."""
    rng = np.random.default_rng(seed)
    array = rng.normal(0.2, 0.1, (3, height, width)).astype(np.float32)
    array[1, 5:9, 2:4] = np.nan
    return write_geotiff(target, array, rowsperstrip=5, nodata=float("nan"))


def tiff_bytes(write, *args, **kwargs) -> tuple[bytes, np.ndarray]:
    """What ``write(buffer, *args, **kwargs)`` writes, and the array it returns."""
    buffer = io.BytesIO()
    array = write(buffer, *args, **kwargs)
    return buffer.getvalue(), array


# ------------------------------------------------------------------ editing headers
_TYPE_FORMATS = {3: "H", 4: "I", 16: "Q"}  # SHORT, LONG, LONG8


def tag_entries(data: bytes) -> dict[int, tuple[int, int, int, int]]:
    """The first IFD's tags of a classic or BigTIFF file: ``{tag: (entry offset, type, count, value offset)}``."""
    order = "<" if data[:2] == b"II" else ">"
    big = struct.unpack_from(order + "H", data, 2)[0] == 43
    ifd = struct.unpack_from(order + ("Q" if big else "I"), data, 8 if big else 4)[0]
    count_format, entry_size, field = ("Q", 20, 8) if big else ("H", 12, 4)
    count = struct.unpack_from(order + count_format, data, ifd)[0]
    start = ifd + struct.calcsize(count_format)
    out = {}
    for i in range(count):
        entry = start + i * entry_size
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        values = struct.unpack_from(order + ("Q" if big else "I"), data, entry + 4)[0]
        size = values * {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 11: 4, 12: 8, 16: 8}.get(kind, 1)
        inline = entry + 4 + field
        where = inline if size <= field else struct.unpack_from(order + ("Q" if big else "I"), data, inline)[0]
        out[tag] = (entry, kind, values, where)
    return out


def with_tag_values(data: bytes, values: dict[int, int | Sequence[int]]) -> bytes:
    """``data`` with integer tags of its first IFD rewritten in place (same count; a single SHORT
    becomes a LONG so that it can hold up to 2**32 - 1), to declare what the data does not hold."""
    order = "<" if data[:2] == b"II" else ">"
    out = bytearray(data)
    entries = tag_entries(data)
    for tag, value in values.items():
        entry, kind, count, where = entries[tag]
        numbers = [value] if isinstance(value, int) else list(value)
        assert len(numbers) == count, (tag, count, numbers)
        if kind == 3 and count == 1 and numbers[0] > 0xFFFF:
            struct.pack_into(order + "HI", out, entry + 2, 4, 1)  # SHORT -> LONG, count 1
            kind = 4
        struct.pack_into(order + _TYPE_FORMATS[kind] * count, out, where, *numbers)
    return bytes(out)


def declared_bomb(width: int = 100_000, height: int = 100_000, bands: int = 200) -> bytes:
    """A few hundred bytes whose header declares a ``width x height x bands`` uint16 planar image
    (one strip per band, all pointing at the same 2 bytes): a decompression bomb's header."""
    small, _ = tiff_bytes(write_geotiff, np.zeros((bands, 1, 1), np.uint16))
    return with_tag_values(small, {256: width, 257: height, 278: height})
