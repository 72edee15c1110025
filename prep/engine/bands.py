"""What a pass measures in ``--mode bands``: how many bands, their names and their nodata values.

The bands mode (:mod:`prep.pixels`) keeps every band of the data as stored, so the channel count
is the data's: :func:`band_layout` reads it from the source's first image before the pass (one
file's header and pixels, or one batch), with the band names a GeoTIFF stores (GDAL's band
descriptions) and its nodata tag. ``--bands`` selects bands (numbered from 1, as GDAL numbers
them), ``--band-names`` names them, ``--nodata`` overrides the file's tag (``none`` ignores it).
The pass then refuses an image of another band count, naming it and the first image.

:func:`native_mode` picks the mode a source is measured in when ``--mode`` is not given: the
bands mode for a folder or archive whose first image is a TIFF of other than 8-bit unsigned data
(16-bit, signed, float: scientific data, normalized in its own units) or one PIL would read
wrong (more than 4 bands, planar colour...), and for arrays whose channel count is not 1, 3 or 4;
the source's own native mode otherwise (8-bit images, TIFFs included, keep unit scale).
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

from prep.errors import OptionError, SourceError
from prep.options import NODATA_NONE
from prep.pixels import BANDS, CHANNELS
from prep.sources.base import BatchSource, Source, TaskSource

PROBED_FILES = 16  # files tried for the first decodable image before giving up


@dataclass(frozen=True)
class BandLayout:
    """The channels a pass measures: their count, names and nodata values, the bands selected
    (0-based, None: all) and how messages name the image they were read from."""

    channels: int
    names: tuple[str, ...] | None = None
    nodata: tuple[float, ...] | None = None
    bands: tuple[int, ...] | None = None
    first: str = ""


def native_mode(src: Source) -> str:
    """The mode ``src`` is measured in without ``--mode`` (see the module's rules)."""
    from prep.sources.nifti import volume_source_of

    if volume_source_of(src) is not None:  # volumes are data in their own values (Hounsfield units, MR)
        return BANDS
    if isinstance(src, TaskSource):
        first = _first_file(src)
        if first is not None:
            from prep.decode.decoders import pil_reads_wrong, tiff_info

            fp, _ = first
            info = tiff_info(fp)
            if info is not None and (info.dtype.itemsize > 1 or info.dtype.kind != "u" or pil_reads_wrong(fp, info)):
                return BANDS
    return src.native_mode


def band_layout(
    src: Source, mode: str, bands: tuple[int, ...] | None, names: tuple[str, ...] | None, nodata: Any
) -> BandLayout:
    """The :class:`BandLayout` of a pass over ``src`` in ``mode`` with the parsed ``--bands``,
    ``--band-names`` and ``--nodata`` (:func:`prep.options.parse_nodata`)."""
    if mode != BANDS:
        if bands is not None:
            raise OptionError(f"--bands selects bands of --mode bands; mode {mode} converts the pixels")
        channels = CHANNELS[mode]
        return BandLayout(channels, _named(names, channels), _nodata(nodata, None, channels), None, "")
    count, file_names, file_nodata, first = _first_image(src)
    if bands is not None:
        wrong = [b + 1 for b in bands if b >= count]
        if wrong:
            raise OptionError(f"--bands {wrong[0]}: {first} has {count} band(s), numbered from 1")
        if file_names is not None:
            file_names = tuple(file_names[b] for b in bands)
        count = len(bands)
    from prep.stats.moments import MAX_CHANNELS

    if count > MAX_CHANNELS:
        raise SourceError(f"{first}: {count} bands; prep measures at most {MAX_CHANNELS} (select some with --bands)")
    return BandLayout(count, _named(names, count) or file_names, _nodata(nodata, file_nodata, count), bands, first)


def _named(names: tuple[str, ...] | None, channels: int) -> tuple[str, ...] | None:
    if names is not None and len(names) != channels:
        raise OptionError(f"--band-names: {len(names)} name(s) for {channels} band(s)")
    return names


def _nodata(value: Any, from_file: float | None, channels: int) -> tuple[float, ...] | None:
    """Per channel, the nodata values: ``--nodata`` when given (``none``: no nodata), else the
    file's tag; one value applies to every channel."""
    if value == NODATA_NONE:
        return None
    values = value if value is not None else (None if from_file is None else (from_file,))
    if values is None:
        return None
    if len(values) == 1:
        values = tuple(values) * channels
    if len(values) != channels:
        raise OptionError(f"--nodata: {len(values)} value(s) for {channels} band(s); give one, or one per band")
    if all(math.isnan(v) for v in values):
        return None  # NaN is left out of float data anyway, and integer data has none
    return tuple(float(v) for v in values)


def _first_image(src: Source) -> tuple[int, tuple[str, ...] | None, float | None, str]:
    """The band count, band names, nodata value and name of the source's first decodable image."""
    from prep.sources.nifti import volume_source_of

    volumes = volume_source_of(src)
    if volumes is not None:
        count, names, first = volumes.first_bands(PROBED_FILES)
        return count, names, None, first
    if isinstance(src, BatchSource):
        for batch, _ in src.iter_batches(0, BANDS, 1, 1):
            if batch.ndim != 4:
                raise SourceError(f"{src.where()}: expected images (N, C, H, W); got shape {tuple(batch.shape)}")
            return int(batch.shape[1]), None, None, f"{src.where()}: image 0"
        raise SourceError(f"{src.where()}: {src.empty_message()}")
    assert isinstance(src, TaskSource)
    from prep.decode.decoders import read_bands_of

    failures = []
    for chunk in src.iter_tasks(0, PROBED_FILES):
        for name in chunk.names:
            try:
                with chunk.reader.open(name) as fp:
                    array, names, nodata = read_bands_of(io.BytesIO(fp.read()))
                return int(array.shape[0]), names, nodata, chunk.reader.display(name)
            except Exception as exc:  # a damaged file: the next one, and the pass lists it as skipped
                failures.append(f"{chunk.reader.display(name)}: {exc}")
        break
    if failures:
        raise SourceError(f"none of the first {len(failures)} images decodes ({failures[0]})")
    raise SourceError(f"{src.where()}: {src.empty_message()}")


def _first_file(src: TaskSource) -> tuple[io.BytesIO, str] | None:
    """The bytes of the source's first file (enough to read a TIFF header) and its name, or None."""
    for chunk in src.iter_tasks(0, 1):
        for name in chunk.names:
            try:
                with chunk.reader.open(name) as fp:
                    return io.BytesIO(fp.read()), chunk.reader.display(name)
            except OSError:
                return None
    return None


def all_nodata(array: Any, nodata: tuple[float, ...] | None) -> bool:
    """True when every value of an image ``(C, H, W)`` is its band's nodata value or NaN (a file
    the pass lists as skipped instead of measuring)."""
    import numpy as np

    if array.dtype.kind == "f":
        invalid = np.isnan(array)
        if nodata is not None:
            invalid |= array == np.asarray(nodata, array.dtype)[:, None, None]
        return bool(invalid.all())
    if nodata is None:
        return False
    fills = np.asarray([v if math.isfinite(v) else math.inf for v in nodata])[:, None, None]
    return bool((array == fills).all())
