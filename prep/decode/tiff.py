"""Multi-band TIFF reading for prep's bands mode: every band of a TIFF as stored, by tifffile.

PIL opens a 13-band uint16 GeoTIFF as one ``I;16`` band without a word; this module reads any
number of bands, planar (``PlanarConfiguration`` 2, GDAL's ``INTERLEAVE=BAND``) or interleaved
(1, ``INTERLEAVE=PIXEL``), striped or tiled, in the stored dtype and units: no scaling, GDAL's
scale/offset metadata not applied. Arrays are ``(C, H, W)``, C-contiguous, native byte order.

* :func:`probe` reads the header only: :class:`TiffInfo` (size, dtype, layout, GDAL's band
  descriptions and nodata, and whether PIL reads the file to the same pixels).
* :func:`read_bands` returns the selected bands whole.
* :func:`iter_band_rows` yields them in row pieces of about ``max_bytes``, for images too large
  to hold.

**Bands** are 0-based indices into the file's bands, in the order given (``(3, 2, 1)`` reads
Sentinel-2's B04, B03, B02); the command line turns GDAL's 1-based band numbers into these. An
index the file lacks, a repeated one or an empty selection is an :class:`~prep.errors.OptionError`
(the user's option does not fit the data: the pass stops), not a bad image.

**Which image.** The first image (IFD) of the file. Further IFDs that GDAL writes after it,
reduced-resolution overviews and masks (``NewSubfileType`` bits 0 and 2), are ignored; a file
holding a second full-resolution image (a tifffile or ImageJ stack, whose pages may be bands,
times or slices) is refused: which of those it is cannot be told from the TIFF, and reading
only the first page would drop data silently, as PIL does.

**Values.** uint8, int8, uint16, int16, uint32, int32, float16, float32 and float64 samples
(:data:`SUPPORTED_DTYPES`); bilevel, 12-bit and other packed samples, 64-bit integers,
complex samples and palette images are refused. Blocks a sparse GDAL file leaves out
(byte count 0) read as its nodata value, else 0, as GDAL reads them.

**Errors.** A file that cannot be read as asked is a :class:`~prep.errors.BadImageError` with one
line naming the reason: not a TIFF, a damaged or truncated strip or tile, a compression that
needs the ``imagecodecs`` package when it is absent (``pip install 'prep[tiff]'``; DEFLATE,
LZMA, PackBits and uncompressed files read without it), an unsupported sample type, or a size
over the limit. The limit (``max_values``, default :func:`default_max_values`) counts the values
a read decodes, ``height * width * bands`` (the selected bands of a planar file, every band of
an interleaved one, whose strips hold them all), and is checked from the header, before anything
is allocated or decoded; so is the size of one strip or tile.

**Memory.** :func:`read_bands` holds its output, one strip or tile as decoded (every band of it
in an interleaved file) and that segment's compressed bytes. :func:`iter_band_rows` holds the
piece it yields (about ``max_bytes``; a caller that keeps pieces keeps their memory), one
decoded segment and its compressed bytes. Uncompressed files are read row by row, so a piece
can be as small as one row; a compressed strip or tile is decoded whole, so a piece is at least
one strip or tile row, and a file written as one compressed strip holds its whole decoded image
once, whatever ``max_bytes`` says. Neither reads the whole file's bytes at once.

Sources are a path or a binary file object (archives hand over file objects), left open at the
position it came at; one that cannot seek is read into memory first. Band names come from the
file: print them through :func:`prep.errors.printable`.
"""

from __future__ import annotations

import io
import math
import operator
import os
import re
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import tifffile
from PIL import Image

from prep.errors import BadImageError, OptionError

Source = str | os.PathLike[str] | IO[bytes]

SUPPORTED_DTYPES = tuple(np.dtype(c) for c in ("u1", "i1", "u2", "i2", "u4", "i4", "f2", "f4", "f8"))
VALUES_PER_PIL_PIXEL = 4  # the most channels PIL decodes an image to (RGBA, CMYK)
DEFAULT_PIECE_BYTES = 64 << 20  # iter_band_rows' piece size
GDAL_METADATA_TAG = 42112  # GDAL's XML metadata: band descriptions among others
GDAL_NODATA_TAG = 42113  # GDAL's nodata value, ASCII, one for all bands
EXTRA_INSTALL = "pip install 'prep[tiff]'"

_PIL_COMPRESSIONS = frozenset({"NONE", "LZW", "ADOBE_DEFLATE", "DEFLATE", "PACKBITS"})  # libtiff reads these
_UNASSOCIATED_ALPHA = 2  # ExtraSamples value of a straight (not premultiplied) alpha channel
_REDUCED, _MASK = 1, 4  # NewSubfileType bits of GDAL's overviews and masks
_PALETTE = 3  # Photometric of an indexed-colour image


@dataclass(frozen=True)
class TiffInfo:
    """What a TIFF's header says about its first image; no pixel data is read to learn it.

    ``band_names`` are GDAL's band descriptions (``""`` for a band without one), None when no
    band has one; ``nodata`` is GDAL's nodata value (a float, NaN included), None when unset.
    ``pil_compatible`` is True when PIL reads the file to the same pixels as :func:`read_bands`:
    8-bit grey, RGB or RGBA (straight alpha), interleaved, in a compression PIL's libtiff reads.
    """

    bands: int
    height: int
    width: int
    dtype: np.dtype
    planar: bool  # PlanarConfiguration 2: each band stored as its own plane
    tiled: bool
    compression: str  # tifffile's name: NONE, LZW, ADOBE_DEFLATE (GDAL's DEFLATE), ZSTD, ...
    photometric: str  # tifffile's name: MINISBLACK, RGB, ...
    band_names: tuple[str, ...] | None
    nodata: float | None
    pil_compatible: bool


def default_max_values() -> int | None:
    """The default limit on the values one read decodes: PIL's decompression-bomb error threshold
    (``2 * Image.MAX_IMAGE_PIXELS`` pixels) times the 4 values a pixel of PIL's widest modes holds,
    about 716 million with PIL's default; None (no limit) when ``Image.MAX_IMAGE_PIXELS`` is None.

    A full 13-band Sentinel-2 tile at 10 m (10980 x 10980) holds 1.57 billion: pass
    ``max_values`` to read one."""
    limit = Image.MAX_IMAGE_PIXELS
    return None if limit is None else 2 * int(limit) * VALUES_PER_PIL_PIXEL


def probe(source: Source) -> TiffInfo:
    """The header facts of the TIFF at ``source`` (a path or a binary file object)."""
    with _opened(source) as tif:
        return _info(_first_image(tif))


def read_bands(
    source: Source, bands: Sequence[int] | None = None, max_values: int | None = None
) -> tuple[np.ndarray, TiffInfo]:
    """The ``(C, H, W)`` array of the selected ``bands`` (0-based; all when None) in the stored
    dtype, and the file's :class:`TiffInfo`. Only the selected planes of a planar file are read.

    ``max_values`` limits ``height * width * bands decoded`` (default :func:`default_max_values`)."""
    with _opened(source) as tif:
        reader = _Reader(tif, bands, max_values)
        out = np.empty((len(reader.selected), reader.height, reader.width), reader.dtype)
        reader.fill(0, out)
        return out, reader.info


def iter_band_rows(
    source: Source,
    bands: Sequence[int] | None = None,
    max_bytes: int = DEFAULT_PIECE_BYTES,
    max_values: int | None = None,
) -> Iterator[np.ndarray]:
    """The selected bands as ``(C, h, W)`` pieces from the top, each about ``max_bytes`` or less
    (at least one row, or one strip or tile row of a compressed file); their concatenation along
    H is :func:`read_bands`' array. The header is checked when this is called, before the first
    piece; a path is kept open until the last piece or the iterator is closed, and a file object
    must not be read elsewhere meanwhile."""
    if max_bytes < 1:
        raise OptionError(f"max_bytes must be positive; got {max_bytes}")
    if not isinstance(source, (str, os.PathLike)):
        source = _rewindable(source)  # opened twice: to check now, then to read
    with _opened(source) as tif:
        _Reader(tif, bands, max_values)  # the checks, now rather than at the first next()
    return _pieces(source, bands, max_bytes, max_values)


def _pieces(
    source: Source, bands: Sequence[int] | None, max_bytes: int, max_values: int | None
) -> Iterator[np.ndarray]:
    with _opened(source) as tif:
        reader = _Reader(tif, bands, max_values)
        rows = reader.piece_rows(max_bytes)
        for top in range(0, reader.height, rows):
            out = np.empty((len(reader.selected), min(rows, reader.height - top), reader.width), reader.dtype)
            reader.fill(top, out)
            yield out


# ------------------------------------------------------------------ opening and the header
@contextmanager
def _opened(source: Source) -> Iterator[tifffile.TiffFile]:
    """``source`` parsed by tifffile; what it refuses is a :class:`BadImageError`. An unreadable
    path (missing, no permission) stays an ``OSError``: the file is not at fault. A file object
    is left at the position it was given at (where its TIFF starts); one that cannot seek (a
    pipe) is read into memory first."""
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as fp, _parsed(fp) as tif:
            yield tif
        return
    source = _rewindable(source)
    start = source.tell()
    try:
        with _parsed(source) as tif:
            yield tif
    finally:
        source.seek(start)  # as it was given: the same object can be probed, then read


def _rewindable(fp: IO[bytes]) -> IO[bytes]:
    """``fp``, or the bytes of a file object that cannot seek (a pipe) in memory."""
    try:
        seekable = bool(fp.seekable())
    except (AttributeError, ValueError, OSError):
        seekable = False
    return fp if seekable else io.BytesIO(fp.read())


@contextmanager
def _parsed(fp: IO[bytes]) -> Iterator[tifffile.TiffFile]:
    try:
        tif = tifffile.TiffFile(fp)
    except Exception as exc:  # tifffile raises many types for hostile headers
        raise BadImageError(f"not a readable TIFF file: {_reason(exc)}") from None
    with tif:
        yield tif


def _reason(exc: BaseException) -> str:
    """One line for an exception from tifffile or a codec."""
    text = str(exc).splitlines()[0].strip() if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_image(tif: tifffile.TiffFile) -> tifffile.TiffPage:
    """The first IFD, after checking that no later IFD is a second full-resolution image."""
    try:
        pages = tif.pages
        first = pages[0]
        for index, page in enumerate(pages):
            if index and not int(getattr(page, "subfiletype", 0)) & (_REDUCED | _MASK):
                raise BadImageError(
                    f"TIFF holds more than one full-resolution image (IFD {index + 1} is one): a stack of "
                    "pages may be bands, times or slices, so prep reads only single-image TIFFs"
                )
    except BadImageError:
        raise
    except Exception as exc:
        raise BadImageError(f"damaged TIFF header: {_reason(exc)}") from None
    if not isinstance(first, tifffile.TiffPage):
        raise BadImageError("damaged TIFF header: its first image has no tags of its own")
    return first


def _info(page: tifffile.TiffPage) -> TiffInfo:
    depth = int(page.imagedepth)
    if depth != 1:
        raise BadImageError(f"TIFF is a volume ({depth} deep, SGI ImageDepth); prep reads 2-D images")
    planar = int(page.planarconfig) == 2
    dtype = _dtype(page)
    return TiffInfo(
        bands=int(page.samplesperpixel),
        height=int(page.imagelength),
        width=int(page.imagewidth),
        dtype=dtype,
        planar=planar,
        tiled=bool(page.is_tiled),
        compression=_name(tifffile.COMPRESSION, page.compression),
        photometric=_name(tifffile.PHOTOMETRIC, page.photometric),
        band_names=_band_names(page),
        nodata=_nodata(page),
        pil_compatible=_pil_compatible(page, dtype, planar),
    )


def _name(enum: Any, value: int) -> str:
    try:
        return str(enum(int(value)).name)
    except ValueError:
        return str(int(value))


def _dtype(page: tifffile.TiffPage) -> np.dtype:
    """The native-order dtype of the samples, or a :class:`BadImageError` for a kind prep does not read."""
    bits = page.bitspersample
    dtype = page.dtype
    if int(page.photometric) == _PALETTE:
        raise BadImageError("palette TIFF: its values are indices into a colour table, not bands; read it in RGB mode")
    if dtype is None or not isinstance(bits, int) or bits != dtype.itemsize * 8:
        raise BadImageError(
            f"TIFF of {bits}-bit samples (SampleFormat {int(page.sampleformat)}) is not read in bands mode; "
            f"prep reads {', '.join(d.name for d in SUPPORTED_DTYPES)}"
        )
    native = dtype.newbyteorder("=")
    if native not in SUPPORTED_DTYPES:
        raise BadImageError(
            f"TIFF of {native.name} samples is not read in bands mode; "
            f"prep reads {', '.join(d.name for d in SUPPORTED_DTYPES)}"
        )
    return native


def _pil_compatible(page: tifffile.TiffPage, dtype: np.dtype, planar: bool) -> bool:
    """True when PIL's ``np.asarray(Image.open(f))`` holds :func:`read_bands`' values: 8-bit
    unsigned grey (MINISBLACK, no extra samples), RGB, or RGBA with a straight alpha, stored
    interleaved, LSB-first fill order 1, compressed as libtiff reads (no JPEG: two JPEG decoders
    need not agree). PIL reads premultiplied alpha unpremultiplied, MINISWHITE inverted."""
    samples = int(page.samplesperpixel)
    extra = tuple(int(e) for e in page.extrasamples)
    photometric = int(page.photometric)
    kind = (
        (photometric == 1 and samples == 1 and not extra)
        or (photometric == 2 and samples == 3 and not extra)
        or (photometric == 2 and samples == 4 and extra == (_UNASSOCIATED_ALPHA,))
    )
    stored = dtype == np.uint8 and (not planar or samples == 1) and int(page.fillorder) == 1
    codec = _name(tifffile.COMPRESSION, page.compression) in _PIL_COMPRESSIONS and int(page.predictor) in (1, 2)
    return bool(kind and stored and codec and _pil_has_libtiff())


def _pil_has_libtiff() -> bool:
    from PIL import features

    return bool(features.check_codec("libtiff"))


# ------------------------------------------------------------------ GDAL's tags
def _band_names(page: tifffile.TiffPage) -> tuple[str, ...] | None:
    """GDAL's band descriptions from its ``GDAL_METADATA`` XML, read as GDAL's TIFF driver reads
    them: ``<GDALMetadata>``'s ``<Item>`` elements with ``role="description"`` and a 0-based
    ``sample``; the text is XML-unescaped once more after parsing, since GDAL escapes values
    before its XML writer escapes them again. Unparsable metadata (or any that declares entities)
    gives no names, as GDAL reads the pixels of such a file and reports no descriptions."""
    text = page.tags.valueof(GDAL_METADATA_TAG)
    if isinstance(text, bytes):  # tifffile leaves ASCII tags it cannot decode as bytes; GDAL writes UTF-8
        text = text.decode("utf-8", "replace")
    if not isinstance(text, str) or "<!" in text:
        return None
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return None
    if root.tag.lower() != "gdalmetadata":
        return None
    bands = int(page.samplesperpixel)
    names = [""] * bands
    for item in root:
        if item.tag.lower() != "item" or item.get("role", "").lower() != "description" or not item.text:
            continue
        sample = _int_prefix(item.get("sample", "-1"))
        if 0 <= sample < bands:
            names[sample] = _xml_unescaped(item.text)
    return tuple(names) if any(names) else None


def _int_prefix(text: str) -> int:
    """C's ``atoi``: the leading integer of ``text``, 0 when there is none."""
    match = re.match(r"\s*([+-]?\d+)", text)
    return int(match.group(1)) if match else 0


_XML_ENTITIES = {"lt": "<", "gt": ">", "amp": "&", "quot": '"', "apos": "'"}


def _xml_unescaped(text: str) -> str:
    """GDAL's ``CPLUnescapeString(..., CPLES_XML)``: the five named entities and numeric references."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name in _XML_ENTITIES:
            return _XML_ENTITIES[name]
        try:
            code = int(name[2:], 16) if name[1:2] in ("x", "X") else int(name[1:])
            return chr(code)
        except (ValueError, OverflowError):
            return match.group(0)

    return re.sub(r"&(#[xX][0-9a-fA-F]+|#[0-9]+|[a-z]+);", one, text)


def _nodata(page: tifffile.TiffPage) -> float | None:
    """GDAL's ``GDAL_NODATA``: ASCII such as ``0``, ``-9999``, ``nan``, ``-3.4e+38``. A value that
    is not a number is an error: taking it for 0 (as C's ``atof`` would) or ignoring it would
    count nodata pixels as data."""
    value = page.tags.valueof(GDAL_NODATA_TAG)
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else str(value)
    text = text.strip().strip("\x00").strip()
    try:
        return float(text)
    except ValueError:
        raise BadImageError(f"TIFF's GDAL_NODATA tag is not a number: {text[:40]!r}") from None


# ------------------------------------------------------------------ reading
class _Reader:
    """One read of a TIFF's first image: the header checked, then rows of the selected bands
    filled in, strip by strip or tile row by tile row, each segment read and decoded alone."""

    def __init__(self, tif: tifffile.TiffFile, bands: Sequence[int] | None, max_values: int | None) -> None:
        page = _first_image(tif)
        self.info = info = _info(page)
        self.page, self.fh = page, tif.filehandle
        self.selected = _selected(bands, info.bands)
        self.height, self.width, self.dtype = info.height, info.width, info.dtype
        self.planar = info.planar and info.bands > 1
        self.samples = 1 if self.planar else info.bands  # samples in one segment
        if page.is_tiled:
            self.seg_height, self.seg_width = int(page.tilelength), int(page.tilewidth)
        else:
            self.seg_height, self.seg_width = min(int(page.rowsperstrip) or info.height, info.height), info.width
        self._check_size(max_values)
        self.across = math.ceil(self.width / self.seg_width)
        self.per_plane = self.across * math.ceil(self.height / self.seg_height)
        self._check_segments()
        _check_codec(page)
        self.file_dtype = info.dtype.newbyteorder(tif.byteorder)  # as stored, for uncompressed bytes
        self.raw = int(page.compression) == 1 and int(page.predictor) == 1 and int(page.fillorder) == 1
        self.fill_value = _fill_value(info.nodata, self.dtype)

    def _check_size(self, max_values: int | None) -> None:
        limit = default_max_values() if max_values is None else max_values
        decoded = len(self.selected) if self.planar else self.info.bands
        values = self.height * self.width * decoded
        if not self.height or not self.width:
            raise BadImageError(f"TIFF declares an empty image ({self.width} x {self.height})")
        if limit is not None and values > limit:
            raise BadImageError(
                f"TIFF declares {self.width} x {self.height} pixels x {decoded} bands = {values:,} values to decode, "
                f"over the limit of {limit:,}: a decompression bomb, or an image to read with a higher max_values"
            )
        segment = self.seg_height * self.seg_width * self.samples
        if not self.seg_height or not self.seg_width or (limit is not None and segment > limit):
            raise BadImageError(
                f"TIFF declares strips or tiles of {self.seg_width} x {self.seg_height} x {self.samples} values"
            )

    def _check_segments(self) -> None:
        planes = self.info.bands if self.planar else 1
        needed = planes * self.per_plane
        listed = len(self.page.dataoffsets)
        if listed < needed or len(self.page.databytecounts) < needed:
            kind = "tiles" if self.page.is_tiled else "strips"
            raise BadImageError(f"damaged TIFF: it lists {listed} {kind} where its size needs {needed}")

    def piece_rows(self, max_bytes: int) -> int:
        """The rows of one piece of about ``max_bytes``: whole strip or tile rows unless uncompressed."""
        row_bytes = len(self.selected) * self.width * self.dtype.itemsize
        unit = 1 if self.raw else self.seg_height
        return max(unit, max_bytes // row_bytes // unit * unit)

    def fill(self, top: int, out: np.ndarray) -> None:
        """Rows ``top .. top + out.shape[1]`` of the selected bands into ``out`` ``(C, h, W)``."""
        bottom = top + out.shape[1]
        for seg_row in range(top // self.seg_height, math.ceil(bottom / self.seg_height)):
            y0 = seg_row * self.seg_height
            first, last = max(top, y0) - y0, min(bottom, y0 + self.seg_height) - y0  # rows of the segment
            dest_rows = slice(y0 + first - top, y0 + last - top)
            for col in range(self.across):
                x0 = col * self.seg_width
                x1 = min(x0 + self.seg_width, self.width)
                if self.planar:
                    for i, band in enumerate(self.selected):
                        segment = self._segment(band, seg_row, col, first, last)
                        out[i, dest_rows, x0:x1] = segment[:, : x1 - x0, 0]
                else:
                    segment = self._segment(0, seg_row, col, first, last)
                    picked = segment[:, : x1 - x0, self._contig_bands()]
                    out[:, dest_rows, x0:x1] = np.moveaxis(picked, -1, 0)

    def _contig_bands(self) -> slice | list[int]:
        every = self.selected == list(range(self.info.bands))
        return slice(None) if every else self.selected

    def _segment(self, plane: int, seg_row: int, col: int, first: int, last: int) -> np.ndarray:
        """Rows ``first .. last`` of one strip or tile as ``(rows, segment width, samples)``."""
        index = plane * self.per_plane + seg_row * self.across + col
        rows = last - first
        offset, count = int(self.page.dataoffsets[index]), int(self.page.databytecounts[index])
        if count == 0:  # a block GDAL left out of a sparse file
            return np.full((rows, self.seg_width, self.samples), self.fill_value, self.dtype)
        if self.raw:
            row_bytes = self.seg_width * self.samples * self.file_dtype.itemsize
            data = self._bytes(index, offset + first * row_bytes, rows * row_bytes, offset + count)
            return np.frombuffer(data, self.file_dtype).reshape(rows, self.seg_width, self.samples)
        decoded = self._decoded(index, self._bytes(index, offset, count, offset + count))
        rows_here = min(self.seg_height, self.height - seg_row * self.seg_height)
        columns_here = min(self.seg_width, self.width - col * self.seg_width)
        if decoded.shape[0] < rows_here or decoded.shape[1] < columns_here:
            raise BadImageError(f"damaged TIFF: {self._segment_name(index)} decodes to {decoded.shape[:2]} pixels")
        return decoded[first:last]

    def _decoded(self, index: int, data: bytes) -> np.ndarray:
        """One compressed strip or tile decoded by tifffile, as ``(rows, width, samples)``."""
        page = self.page
        try:
            decoded, _, _ = page.decode(data, index, jpegtables=page.jpegtables, jpegheader=page.jpegheader)
        except Exception as exc:  # codecs raise their own types for damaged data
            raise BadImageError(f"damaged TIFF: {self._segment_name(index)} does not decode: {_reason(exc)}") from None
        if decoded is None or decoded.ndim != 4:
            raise BadImageError(f"damaged TIFF: {self._segment_name(index)} does not decode to an image")
        return decoded[0]  # (depth 1, rows, width, samples) -> (rows, width, samples)

    def _bytes(self, index: int, start: int, count: int, end: int) -> bytes:
        """``count`` bytes from ``start``, which must lie before the segment's ``end`` and the file's."""
        if start + count > end or end > self.fh.size:
            raise BadImageError(
                f"truncated TIFF: {self._segment_name(index)} ends at byte {end:,}, "
                f"past the end of the {'segment' if end <= self.fh.size else 'file'} ({self.fh.size:,} bytes)"
            )
        self.fh.seek(start)
        data = self.fh.read(count)
        if len(data) != count:
            raise BadImageError(f"truncated TIFF: {self._segment_name(index)} is cut short")
        return data

    def _segment_name(self, index: int) -> str:
        kind = "tile" if self.page.is_tiled else "strip"
        plane, within = divmod(index, self.per_plane)
        return f"{kind} {within} of band {plane}" if self.planar else f"{kind} {within}"


def _selected(bands: Sequence[int] | None, count: int) -> list[int]:
    """``bands`` as a list of 0-based indices, checked against the file's ``count``."""
    if bands is None:
        return list(range(count))
    try:
        chosen = [operator.index(b) for b in bands]
    except TypeError:
        raise OptionError(f"bands must be integer band indices (0-based); got {bands!r}") from None
    if not chosen:
        raise OptionError("bands selects no band")
    for band in chosen:
        if not 0 <= band < count:
            raise OptionError(
                f"band {band} is out of range: the image has {count} bands, indices 0..{count - 1} (0-based)"
            )
    if len(set(chosen)) != len(chosen):
        raise OptionError(f"bands names a band twice: {chosen}")
    return chosen


def _check_codec(page: tifffile.TiffPage) -> None:
    """A :class:`BadImageError` naming what tifffile cannot decode here, before any data is read."""
    compression, predictor = int(page.compression), int(page.predictor)
    missing = []
    if compression != 1 and compression not in tifffile.TIFF.DECOMPRESSORS:
        missing.append(f"{_name(tifffile.COMPRESSION, compression)}-compressed")
    if predictor != 1 and predictor not in tifffile.TIFF.UNPREDICTORS:
        missing.append(f"{_name(tifffile.PREDICTOR, predictor)}-predicted")
    if not missing:
        return
    what = " ".join(missing)
    if (
        _known(tifffile.COMPRESSION, compression)
        and _known(tifffile.PREDICTOR, predictor)
        and not _imagecodecs_installed()
    ):
        raise BadImageError(f"{what} TIFF needs imagecodecs: {EXTRA_INSTALL}")
    raise BadImageError(f"{what} TIFF: neither tifffile nor imagecodecs decodes it")


def _known(enum: Any, value: int) -> bool:
    try:
        enum(value)
    except ValueError:
        return False
    return True


def _imagecodecs_installed() -> bool:
    """Whether tifffile found the imagecodecs package (it falls back to its own few codecs)."""
    codecs = getattr(tifffile.tifffile, "imagecodecs", None)
    return getattr(codecs, "__name__", "") == "imagecodecs"


def _fill_value(nodata: float | None, dtype: np.dtype) -> Any:
    """What an absent block reads as: nodata when the dtype holds it, else 0 (GDAL's rule)."""
    if nodata is None:
        return 0
    if dtype.kind == "f":
        return nodata
    info = np.iinfo(dtype)
    return int(nodata) if nodata.is_integer() and info.min <= nodata <= info.max else 0
