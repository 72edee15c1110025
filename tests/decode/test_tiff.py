"""prep.decode.tiff: every band of a TIFF as stored, against the arrays the files were written from,
against PIL for the files it routes to PIL, and against rasterio (GDAL) where it is installed."""

from __future__ import annotations

import io
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from helpers.tiff_files import (
    SENTINEL2_BANDS,
    declared_bomb,
    gdal_metadata,
    tag_entries,
    tiff_bytes,
    with_tag_values,
    write_float32_nan,
    write_geotiff,
    write_int16_negatives,
    write_sentinel2,
)
from prep.decode import tiff
from prep.decode.tiff import TiffInfo, iter_band_rows, probe, read_bands
from prep.errors import BadImageError, OptionError

DTYPES = ["u1", "i1", "u2", "i2", "u4", "i4", "f2", "f4", "f8"]
LAYOUTS = {  # name -> write_geotiff options
    "planar-striped": dict(planar=True, rowsperstrip=5),
    "planar-tiled-deflate": dict(planar=True, tile=(16, 16), compression="zlib"),
    "interleaved-striped-deflate-predictor": dict(planar=False, rowsperstrip=4, compression="zlib", predictor=True),
    "interleaved-tiled": dict(planar=False, tile=(16, 32)),
    "big-endian-interleaved-striped": dict(planar=False, rowsperstrip=3, byteorder=">"),
    "big-endian-planar-tiled-deflate": dict(planar=True, tile=(16, 16), compression="zlib", byteorder=">"),
}


def _values(dtype: str, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """Values spanning ``dtype``'s range (negatives too), NaN and infinities in floats."""
    rng = np.random.default_rng(seed)
    kind = np.dtype(dtype)
    if kind.kind == "f":
        out = rng.normal(0, 1e3, shape).astype(kind)
        out.flat[:3] = [np.nan, np.inf, -np.inf]
        return out
    info = np.iinfo(kind)
    out = rng.integers(info.min, info.max, shape, dtype=kind, endpoint=True)
    out.flat[:2] = [info.min, info.max]
    return out


def _needs_imagecodecs(dtype: str, options: dict) -> None:
    """Skip when tifffile writes these only through imagecodecs: its predictor for floats is the
    floating-point one (reading it needs imagecodecs too)."""
    if options.get("predictor") and np.dtype(dtype).kind == "f":
        pytest.importorskip("imagecodecs")


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")


def _buffer(data: bytes) -> io.BytesIO:
    return io.BytesIO(data)


# ------------------------------------------------------------------ values, layouts, band counts
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_reads_every_dtype_in_every_layout_as_stored(dtype, layout):
    _needs_imagecodecs(dtype, LAYOUTS[layout])
    data, array = tiff_bytes(write_geotiff, _values(dtype, (3, 37, 45)), **LAYOUTS[layout])
    out, info = read_bands(_buffer(data))
    assert _same(out, array) and out.flags.c_contiguous and out.dtype.isnative
    assert info.dtype == np.dtype(dtype) and (info.bands, info.height, info.width) == (3, 37, 45)
    assert info.planar == LAYOUTS[layout]["planar"] and info.tiled == ("tile" in LAYOUTS[layout])
    assert info.compression == ("ADOBE_DEFLATE" if "compression" in LAYOUTS[layout] else "NONE")


@pytest.mark.parametrize("planar", [True, False])
@pytest.mark.parametrize("bands", [1, 2, 5, 13, 300, 1100])
def test_any_band_count(bands, planar):
    data, array = tiff_bytes(
        write_geotiff, _values("u2", (bands, 6, 7), seed=bands), planar=planar, compression="zlib", rowsperstrip=4
    )
    out, info = read_bands(_buffer(data))
    assert info.bands == bands and _same(out, array)
    chosen = [bands - 1, 0] if bands > 1 else [0]
    assert _same(read_bands(_buffer(data), chosen)[0], array[chosen])


def test_sentinel2_like_geotiff(tmp_path):
    path = tmp_path / "s2.tif"
    array = write_sentinel2(path)
    info = probe(path)
    assert info == TiffInfo(
        bands=13,
        height=40,
        width=52,
        dtype=np.dtype(np.uint16),
        planar=True,
        tiled=True,
        compression="ADOBE_DEFLATE",
        photometric="MINISBLACK",
        band_names=SENTINEL2_BANDS,
        nodata=0.0,
        pil_compatible=False,
    )
    out, read_info = read_bands(str(path), bands=[3, 2, 1])  # B04, B03, B02: red, green, blue
    assert read_info == info and _same(out, array[[3, 2, 1]])


def test_int16_negatives_and_float32_nan_keep_their_values(tmp_path):
    ints = write_int16_negatives(tmp_path / "dem.tif")
    out, info = read_bands(tmp_path / "dem.tif")
    assert _same(out, ints) and out.min() == -9999 and info.nodata == -9999.0
    assert info.band_names == ("dem", "", "a", "b") and not info.planar
    floats = write_float32_nan(tmp_path / "refl.tif")
    out, info = read_bands(tmp_path / "refl.tif")
    assert _same(out, floats) and np.isnan(out).sum() == 8 and np.isnan(info.nodata)


def test_planar_file_reads_only_the_selected_planes():
    """Band 1's strips point past the end of the file: bands 0 and 2 still read, band 1 does not."""
    data, array = tiff_bytes(write_geotiff, _values("u2", (3, 10, 8)), rowsperstrip=5, compression="zlib")
    offsets = list(tifffile.TiffFile(_buffer(data)).pages[0].dataoffsets)
    offsets[2:4] = [len(data) + 100] * 2  # the two strips of band 1
    broken = with_tag_values(data, {273: offsets})
    assert _same(read_bands(_buffer(broken), [2, 0])[0], array[[2, 0]])
    with pytest.raises(BadImageError, match=r"^truncated TIFF: strip 0 of band 1 ends at byte"):
        read_bands(_buffer(broken), [1])


def test_first_image_only_overviews_ignored_stacks_refused():
    array = _values("u2", (4, 16, 16))
    for subfiletype, accepted in ((1, True), (0, False)):  # reduced resolution (GDAL's overviews), full
        buffer = io.BytesIO()
        with tifffile.TiffWriter(buffer) as writer:
            writer.write(array, photometric="minisblack", planarconfig="separate", metadata=None)
            writer.write(array[:, ::2, ::2], photometric="minisblack", planarconfig="separate", subfiletype=subfiletype)
        buffer.seek(0)
        if accepted:
            assert _same(read_bands(buffer)[0], array), subfiletype
        else:
            with pytest.raises(BadImageError, match="more than one full-resolution image"):
                probe(buffer)


def test_a_tifffile_stack_of_pages_is_refused_not_read_as_one_band():
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _values("u2", (13, 8, 8)))  # 13 pages of 8 x 8, as tifffile writes a 3-D array
    assert len(tifffile.TiffFile(_buffer(buffer.getvalue())).pages) == 13
    with pytest.raises(BadImageError, match=r"IFD 2 is one"):
        read_bands(_buffer(buffer.getvalue()))


def test_sparse_blocks_read_as_nodata():
    """A GDAL file written with SPARSE_OK leaves all-nodata blocks out (offset and byte count 0)."""
    array = _values("i2", (2, 10, 6))
    for nodata, fill in ((-9999, -9999), (None, 0), (1e9, 0)):  # 1e9: not an int16, so 0 as GDAL
        data, _ = tiff_bytes(write_geotiff, array, rowsperstrip=5, nodata=nodata)
        sparse = with_tag_values(data, {273: [0, 0, 0, 0], 279: [0, 0, 0, 0]})
        out, _ = read_bands(_buffer(sparse))
        assert out.dtype == np.int16 and (out == fill).all(), nodata


# ------------------------------------------------------------------ row pieces
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("max_bytes", [1, 200, 3000, 10**9])
def test_row_pieces_concatenate_to_the_whole_read(layout, max_bytes):
    _needs_imagecodecs("f4", LAYOUTS[layout])
    data, array = tiff_bytes(write_geotiff, _values("f4", (5, 37, 45)), **LAYOUTS[layout])
    chosen = [4, 1, 2]
    pieces = list(iter_band_rows(_buffer(data), chosen, max_bytes=max_bytes))
    assert _same(np.concatenate(pieces, axis=1), array[chosen])
    assert all(p.shape[0] == 3 and p.shape[2] == 45 and p.flags.c_contiguous for p in pieces)
    unit = (
        1
        if "compression" not in LAYOUTS[layout]
        else (16 if "tile" in LAYOUTS[layout] else LAYOUTS[layout]["rowsperstrip"])
    )
    row_bytes = 3 * 45 * 4
    for piece in pieces[:-1]:  # whole units; within max_bytes unless one unit is larger
        assert piece.shape[1] % unit == 0
        assert piece.nbytes <= max(max_bytes, unit * row_bytes)


def test_row_pieces_hold_little_memory_for_a_large_uncompressed_image(tmp_path):
    """An uncompressed image written as one strip of 9.4 MB, read in 64 kB pieces: each piece is
    read from its own rows, so the reader holds about a piece, not the strip."""
    path = tmp_path / "big.tif"
    array = write_geotiff(path, _values("u2", (13, 600, 600)), planar=False, rowsperstrip=600)
    assert len(tifffile.TiffFile(path).pages[0].dataoffsets) == 1
    tracemalloc.start()
    try:
        rows = 0
        for piece in iter_band_rows(path, max_bytes=64 << 10):
            assert _same(piece, array[:, rows : rows + piece.shape[1]])
            rows += piece.shape[1]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rows == 600 and peak < 1 << 20, peak


def test_row_pieces_of_a_compressed_tiled_image_hold_one_tile_row():
    data, array = tiff_bytes(
        write_geotiff, _values("u2", (4, 256, 256)), planar=True, tile=(32, 32), compression="zlib"
    )
    tracemalloc.start()
    try:
        pieces = [p.sum(dtype=np.int64) for p in iter_band_rows(_buffer(data), max_bytes=1)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(pieces) == 8 and sum(pieces) == array.sum(dtype=np.int64)
    assert peak < 2 * 4 * 32 * 256 * 2 + (256 << 10), peak  # the whole image would be 512 kB


def test_row_pieces_are_checked_before_the_first_piece():
    with pytest.raises(BadImageError, match="over the limit"):
        iter_band_rows(_buffer(declared_bomb()))
    data, _ = tiff_bytes(write_sentinel2)
    with pytest.raises(OptionError, match="band 13 is out of range"):
        iter_band_rows(_buffer(data), [13])
    with pytest.raises(OptionError, match="max_bytes"):
        iter_band_rows(_buffer(data), max_bytes=0)


# ------------------------------------------------------------------ GDAL's band names and nodata
def test_band_names_follow_gdals_xml():
    names = ["B01", None, "B<&>\"'03", "Blue 490 nm"]
    data, _ = tiff_bytes(write_geotiff, _values("u1", (4, 2, 2)), descriptions=names)
    assert probe(_buffer(data)).band_names == ("B01", "", "B<&>\"'03", "Blue 490 nm")
    assert gdal_metadata(["a&b"]) == (
        '<GDALMetadata>\n  <Item name="DESCRIPTION" sample="0" role="description">a&amp;amp;b</Item>\n</GDALMetadata>'
    )


@pytest.mark.parametrize(
    ("xml", "names"),
    [
        (None, None),
        ('<GDALMetadata><Item name="x">y</Item></GDALMetadata>', None),  # dataset metadata, no descriptions
        ('<GDALMetadata><Item name="DESCRIPTION" sample="1" role="description">nir</Item></GDALMetadata>', ("", "nir")),
        ('<GDALMetadata><Item name="DESCRIPTION" sample="7" role="description">x</Item></GDALMetadata>', None),
        ('<GDALMetadata><Item name="DESCRIPTION" role="description">no band</Item></GDALMetadata>', None),
        ('<GDALMetadata><Item name="OFFSET" sample="0" role="offset">5</Item></GDALMetadata>', None),
        ("<GDALMetadata><Item", None),  # not XML: no names, the pixels still read
        ("<Other><Item sample='0' role='description'>x</Item></Other>", None),
        (
            '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><GDALMetadata><Item sample="0" role="description">&a;</Item>'
            "</GDALMetadata>",
            None,
        ),
        ('<GDALMetadata><Item sample="0" role="Description">&amp;#x42;&amp;#49;</Item></GDALMetadata>', ("B1", "")),
    ],
)
def test_band_names_from_hand_written_metadata(xml, names):
    extratags = [] if xml is None else [(42112, "s", 0, xml, True)]
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((2, 3, 3), np.uint8), planarconfig="separate", extratags=extratags, metadata=None)
    buffer.seek(0)
    assert probe(buffer).band_names == names


@pytest.mark.parametrize(
    ("text", "value"),
    [("0", 0.0), ("-9999", -9999.0), ("nan", float("nan")), ("-3.40282346638529e+38", -3.40282346638529e38)],
)
def test_nodata_as_gdal_writes_it(text, value):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((2, 2), np.float32), extratags=[(42113, "s", 0, text, True)], metadata=None)
    buffer.seek(0)
    nodata = probe(buffer).nodata
    assert nodata is not None and (nodata == value or (np.isnan(nodata) and np.isnan(value)))


def test_nodata_that_is_not_a_number_is_refused():
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((2, 2), np.uint8), extratags=[(42113, "s", 0, "none", True)], metadata=None)
    buffer.seek(0)
    with pytest.raises(BadImageError, match="GDAL_NODATA tag is not a number: 'none'"):
        probe(buffer)


# ------------------------------------------------------------------ the files PIL reads
PIL_FILES = {  # name -> (array (H, W) or (H, W, C), tifffile options)
    "grey": ((23, 17), dict(photometric="minisblack")),
    "rgb": ((23, 17, 3), dict(photometric="rgb")),
    "rgba-straight-alpha": ((23, 17, 4), dict(photometric="rgb", extrasamples=["unassalpha"])),
    "rgb-tiled-deflate": ((40, 35, 3), dict(photometric="rgb", tile=(16, 16), compression="zlib")),
    "grey-lzw-predictor": ((23, 17), dict(photometric="minisblack", compression="lzw", predictor=True)),
    "rgb-packbits-strips": ((23, 17, 3), dict(photometric="rgb", compression="packbits", rowsperstrip=4)),
}


@pytest.mark.parametrize("name", list(PIL_FILES))
def test_pil_compatible_files_read_as_pil_reads_them(name):
    shape, options = PIL_FILES[name]
    if options.get("compression") in ("lzw", "packbits"):
        pytest.importorskip("imagecodecs")  # tifffile writes LZW and PackBits through it
    array = _values("u1", shape)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, metadata=None, **options)
    buffer.seek(0)
    out, info = read_bands(buffer)
    assert info.pil_compatible, info
    with Image.open(_buffer(buffer.getvalue())) as img:
        pil = np.asarray(img)
    assert _same(out, np.ascontiguousarray(pil[None] if pil.ndim == 2 else pil.transpose(2, 0, 1)))


def test_files_pil_reads_otherwise_are_not_pil_compatible():
    """Premultiplied alpha (PIL unpremultiplies it) and MINISWHITE (PIL inverts it) give PIL
    other pixels than the stored ones: those files must not be routed to PIL."""
    rgba = _values("u1", (8, 9, 4))
    for array, options in (
        (rgba, dict(photometric="rgb", extrasamples=["assocalpha"])),
        (rgba[..., 0], dict(photometric="miniswhite")),
    ):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, metadata=None, **options)
        buffer.seek(0)
        out, info = read_bands(buffer)
        assert not info.pil_compatible and _same(out, np.moveaxis(np.atleast_3d(array), -1, 0))
        with Image.open(_buffer(buffer.getvalue())) as img:
            pil = np.moveaxis(np.atleast_3d(np.asarray(img)), -1, 0)
        assert not np.array_equal(pil, out)
    for array, options in (
        (_values("u2", (8, 9)), {}),  # 16-bit
        (_values("u1", (3, 8, 9)), dict(photometric="rgb", planarconfig="separate")),
        (_values("u1", (8, 9, 3)), dict(photometric="minisblack", planarconfig="contig")),  # 3 bands, not RGB
        (_values("u1", (8, 9, 5)), dict(photometric="rgb", planarconfig="contig")),  # RGB + 2 extra samples
        (_values("i1", (8, 9)), {}),
    ):
        buffer = io.BytesIO()
        tifffile.imwrite(buffer, array, metadata=None, **options)
        buffer.seek(0)
        assert not probe(buffer).pil_compatible, options


def test_jpeg_compressed_tiles_read_as_tifffile_decodes_them():
    """JPEG in TIFF (YCbCr, as GDAL's COMPRESS=JPEG writes it): lossy, so not routed to PIL, whose
    libjpeg need not agree; the reference is tifffile's own whole-image read."""
    pytest.importorskip("imagecodecs")
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, _values("u1", (40, 50, 3)), photometric="rgb", tile=(16, 16), compression="jpeg")
    buffer.seek(0)
    out, info = read_bands(buffer)
    assert info.compression == "JPEG" and not info.pil_compatible
    assert _same(out, np.ascontiguousarray(tifffile.imread(_buffer(buffer.getvalue())).transpose(2, 0, 1)))


# ------------------------------------------------------------------ rasterio (GDAL) as the reference
GDAL_CASES = {  # rasterio creation options
    "band-tiled-deflate": dict(interleave="band", tiled=True, blockxsize=16, blockysize=16, compress="deflate"),
    "pixel-striped-lzw-predictor": dict(interleave="pixel", compress="lzw", predictor=2),
    "band-striped-none": dict(interleave="band"),
    "pixel-tiled-zstd": dict(interleave="pixel", tiled=True, blockxsize=32, blockysize=16, compress="zstd"),
    "band-float-predictor": dict(interleave="band", compress="deflate", predictor=3),
}


GDAL_DTYPES = ["uint8", "uint16", "int16", "uint32", "int32", "float32", "float64"]


@pytest.mark.parametrize(
    ("case", "dtype"),
    [
        (case, dtype)
        for case, options in GDAL_CASES.items()
        for dtype in GDAL_DTYPES
        if options.get("predictor") != 3 or dtype.startswith("float")  # GDAL's floating-point predictor: floats only
    ],
)
def test_gdal_written_geotiffs_read_as_rasterio_reads_them(tmp_path, case, dtype):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.transform import Affine

    options = GDAL_CASES[case]
    if options.get("compress") in ("lzw", "zstd") or options.get("predictor") == 3:
        pytest.importorskip("imagecodecs")
    array = _values(dtype, (5, 37, 45))
    path = tmp_path / "gdal.tif"
    profile = dict(driver="GTiff", count=5, height=37, width=45, dtype=dtype, crs="EPSG:32633")
    profile.update(transform=Affine(10, 0, 500000, 0, -10, 5000000), nodata=7, **options)  # UTM 33N, 10 m
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        dst.descriptions = ("B02", None, "B<&>04", "Blue – 490 nm", "")
    with rasterio.open(path) as src:
        expected, descriptions, nodata = src.read(), src.descriptions, src.nodata
    out, info = read_bands(path)
    assert _same(out, expected) and _same(out, array)
    assert info.band_names == tuple(d or "" for d in descriptions) == ("B02", "", "B<&>04", "Blue – 490 nm", "")
    assert info.nodata == nodata == 7.0
    assert info.planar == (options["interleave"] == "band") and info.tiled == options.get("tiled", False)
    assert _same(np.concatenate(list(iter_band_rows(path, [4, 0], max_bytes=500)), axis=1), expected[[4, 0]])


@pytest.mark.parametrize("write", [write_sentinel2, write_int16_negatives, write_float32_nan])
def test_helper_geotiffs_are_what_gdal_reads(tmp_path, write):
    """The test files' GDAL tags are GDAL's: rasterio reads the same bands, names and nodata."""
    rasterio = pytest.importorskip("rasterio")
    path = tmp_path / "helper.tif"
    array = write(path)
    with rasterio.open(path) as src:
        assert src.crs is not None and src.crs.to_epsg() == 4326
        assert _same(src.read(), array)
        info = probe(path)
        assert info.band_names == (tuple(d or "" for d in src.descriptions) if any(src.descriptions) else None)
        assert info.nodata == src.nodata or (np.isnan(info.nodata) and np.isnan(src.nodata))


def test_gdal_overviews_and_masks_are_ignored(tmp_path):
    rasterio = pytest.importorskip("rasterio")
    from rasterio.enums import Resampling

    path = tmp_path / "pyramid.tif"
    array = write_sentinel2(path, height=64, width=64)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4], Resampling.average)
        dst.write_mask(np.full((64, 64), 255, np.uint8))  # an internal mask: one more IFD
    assert len(tifffile.TiffFile(path).pages) > 3
    assert _same(read_bands(path)[0], array)


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "data", [b"", b"\x89PNG\r\n\x1a\n" + bytes(50), b"II*\x00", b"MM\x00*\x00\x00\x00\x08\xff", b"hello world" * 10]
)
def test_not_a_tiff(data):
    with pytest.raises(BadImageError, match=r"^(not a readable TIFF file|damaged TIFF header): ") as info:
        probe(_buffer(data))
    assert "\n" not in str(info.value)


def test_truncated_and_damaged_data():
    data, _ = tiff_bytes(write_sentinel2)
    with pytest.raises(BadImageError, match=r"^truncated TIFF: tile \d+ of band 12 ends at byte [\d,]+, past the end"):
        read_bands(_buffer(data[:-200]))
    assert probe(_buffer(data[:-200])).bands == 13  # the header is whole
    entries = tag_entries(data)
    first_tile = tifffile.TiffFile(_buffer(data)).pages[0].dataoffsets[0]
    damaged = bytearray(data)
    damaged[first_tile : first_tile + 8] = b"\xff" * 8
    with pytest.raises(BadImageError, match=r"^damaged TIFF: tile 0 of band 0 does not decode: ") as info:
        read_bands(_buffer(bytes(damaged)))
    assert "\n" not in str(info.value) and 324 in entries  # TileOffsets


def test_list_of_strips_shorter_than_the_image_needs():
    data, _ = tiff_bytes(write_geotiff, _values("u1", (2, 10, 4)), rowsperstrip=5)
    with pytest.raises(BadImageError, match="lists 4 strips where its size needs 10"):
        read_bands(_buffer(with_tag_values(data, {278: 2, 257: 10})))  # 2 rows a strip: 5 strips a band


def _hide_imagecodecs(monkeypatch) -> None:
    """tifffile as it is without imagecodecs: its own fallback codecs (zlib, lzma, packbits, delta)."""
    import tifffile.tifffile as tifffile_module
    from tifffile import _imagecodecs

    monkeypatch.setattr(tifffile_module, "imagecodecs", _imagecodecs)
    monkeypatch.setattr(tifffile_module.TIFF, "DECOMPRESSORS", tifffile_module.CompressionCodec(encode=False))
    monkeypatch.setattr(tifffile_module.TIFF, "UNPREDICTORS", tifffile_module.PredictorCodec(encode=False))


def test_lzw_without_imagecodecs_names_the_extra(monkeypatch, tmp_path):
    path = tmp_path / "lzw.tif"
    Image.fromarray(_values("u1", (20, 30))).save(path, compression="tiff_lzw")  # libtiff writes it: no imagecodecs
    assert probe(path).compression == "LZW"
    if tiff._imagecodecs_installed():
        with Image.open(path) as img:
            assert _same(read_bands(path)[0], np.asarray(img)[None])
    _hide_imagecodecs(monkeypatch)
    assert probe(path).compression == "LZW"  # the header reads without the codec
    with pytest.raises(BadImageError) as info:
        read_bands(path)
    assert str(info.value) == "LZW-compressed TIFF needs imagecodecs: pip install 'prep[tiff]'"
    with pytest.raises(BadImageError, match="needs imagecodecs"):
        iter_band_rows(path)


def test_floating_point_predictor_without_imagecodecs_names_the_extra(monkeypatch):
    pytest.importorskip("imagecodecs")  # to write it
    data, array = tiff_bytes(write_geotiff, _values("f4", (2, 9, 9)), compression="zlib", predictor=3)
    assert _same(read_bands(_buffer(data))[0], array)
    _hide_imagecodecs(monkeypatch)
    with pytest.raises(
        BadImageError, match=r"^FLOATINGPOINT-predicted TIFF needs imagecodecs: pip install 'prep\[tiff\]'$"
    ):
        read_bands(_buffer(data))


def test_deflate_and_the_horizontal_predictor_need_no_imagecodecs(monkeypatch):
    data, array = tiff_bytes(write_sentinel2)
    _hide_imagecodecs(monkeypatch)
    assert not tiff._imagecodecs_installed()
    assert _same(read_bands(_buffer(data))[0], array)


def test_declared_bomb_is_refused_before_anything_is_allocated():
    data = declared_bomb(100_000, 100_000, 200)
    assert len(data) < 4096
    info = probe(_buffer(data))
    assert (info.bands, info.height, info.width) == (200, 100_000, 100_000)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(BadImageError) as error:
            read_bands(_buffer(data))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 5 and peak < 1 << 20
    assert str(error.value).startswith(
        "TIFF declares 100000 x 100000 pixels x 200 bands = 2,000,000,000,000 values to decode, over the limit of "
    )


def test_the_limit_counts_decoded_values_and_follows_pil(monkeypatch):
    data, array = tiff_bytes(write_geotiff, _values("u1", (3, 10, 10)), planar=True)
    assert tiff.default_max_values() == 2 * Image.MAX_IMAGE_PIXELS * 4
    assert _same(read_bands(_buffer(data), max_values=300)[0], array)
    with pytest.raises(BadImageError, match="= 300 values to decode, over the limit of 299"):
        read_bands(_buffer(data), max_values=299)
    assert _same(read_bands(_buffer(data), [1], max_values=100)[0], array[[1]])  # planar: one band decoded
    interleaved, _ = tiff_bytes(write_geotiff, array, planar=False)
    with pytest.raises(BadImageError, match="x 3 bands = 300 values"):  # interleaved: every band decoded
        read_bands(_buffer(interleaved), [1], max_values=100)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30)
    with pytest.raises(BadImageError, match="over the limit of 240"):
        read_bands(_buffer(data))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert tiff.default_max_values() is None


def test_absurd_tile_size_is_refused():
    data, _ = tiff_bytes(write_geotiff, _values("u1", (1, 8, 8)), tile=(16, 16))
    with pytest.raises(BadImageError, match="strips or tiles of 65536 x 65536"):
        read_bands(_buffer(with_tag_values(data, {322: 65536, 323: 65536})))


@pytest.mark.parametrize(
    ("array", "options", "message"),
    [
        (np.zeros((4, 4), np.complex64), {}, "complex64 samples is not read"),
        (np.zeros((4, 4), np.int64), {}, "int64 samples is not read"),
        (np.zeros((4, 4), np.uint64), {}, "uint64 samples is not read"),
        (np.zeros((4, 8), bool), {}, "1-bit samples"),
        (np.zeros((4, 4), np.uint8), dict(photometric="palette", colormap=np.zeros((3, 256), np.uint16)), "palette"),
    ],
)
def test_unsupported_samples(array, options, message):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, array, metadata=None, **options)
    buffer.seek(0)
    with pytest.raises(BadImageError, match=message):
        probe(buffer)


def test_packed_and_mixed_samples_are_refused():
    data, _ = tiff_bytes(write_geotiff, _values("i2", (2, 4, 4)), planar=False)
    with pytest.raises(BadImageError, match="12-bit samples"):
        probe(_buffer(with_tag_values(data, {258: [12, 12]})))
    with pytest.raises(BadImageError, match=r"^not a readable TIFF file: "):  # tifffile refuses mixed formats
        probe(_buffer(with_tag_values(data, {339: [1, 2]})))


@pytest.mark.parametrize(
    ("bands", "message"),
    [
        ([13], r"^band 13 is out of range: the image has 13 bands, indices 0\.\.12 \(0-based\)$"),
        ([-1], "band -1 is out of range"),
        ([], "selects no band"),
        ([1, 1], "names a band twice"),
        ([1.0], "integer band indices"),
    ],
)
def test_band_selection_errors_are_option_errors(bands, message):
    data, _ = tiff_bytes(write_sentinel2)
    with pytest.raises(OptionError, match=message):
        read_bands(_buffer(data), bands)


def test_numpy_integers_select_bands():
    data, array = tiff_bytes(write_sentinel2)
    assert _same(read_bands(_buffer(data), np.array([12, 8]))[0], array[[12, 8]])


# ------------------------------------------------------------------ sources
def test_paths_and_file_objects(tmp_path):
    path = tmp_path / "s2.tif"
    array = write_sentinel2(path)
    assert _same(read_bands(path)[0], array) and _same(read_bands(str(path))[0], array)
    with open(path, "rb") as f:
        assert probe(f).bands == 13
        assert f.tell() == 0  # left where it was given: probed, then read
        assert _same(read_bands(f)[0], array) and not f.closed
    embedded = io.BytesIO(b"ARCHIVE-HEADER" + path.read_bytes())
    embedded.seek(14)  # a TIFF starting inside a larger file object
    assert _same(np.concatenate(list(iter_band_rows(embedded, max_bytes=1000)), axis=1), array)
    assert embedded.tell() == 14


def test_a_stream_that_cannot_seek_is_read(tmp_path):
    class Pipe(io.RawIOBase):
        def __init__(self, data: bytes) -> None:
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            chunk = self._data.read(len(buffer))
            buffer[: len(chunk)] = chunk
            return len(chunk)

    data, array = tiff_bytes(write_int16_negatives)
    assert _same(read_bands(Pipe(data))[0], array)
    assert _same(np.concatenate(list(iter_band_rows(Pipe(data), max_bytes=100)), axis=1), array)


def test_a_missing_path_is_an_os_error_not_a_bad_image(tmp_path: Path):
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "missing.tif")
