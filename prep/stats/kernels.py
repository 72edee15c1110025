"""Exact histograms and cross sums of 8-bit pixels in native code, when it was built.

``prep/_kernels.c`` is compiled by ``setup.py`` when a C compiler is available at install time;
without one, :data:`AVAILABLE` is False and prep reduces with PIL and torch instead (the same
numbers). The functions here check what they are given and call the kernels through ctypes,
which releases the GIL; every count is an exact integer (see the C file).

``PREP_NO_KERNELS=1`` (any value but ``0``) in the environment turns them off, to compare or
to rule them out.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from prep.pixels import LEVELS

_LIB: ctypes.CDLL | None = None
_API = None  # the module itself: the functions of prep/_kernels_api.c, called without ctypes
API_VERSION = 2  # of those functions' conventions (prep/_kernels.c)
if os.environ.get("PREP_NO_KERNELS", "") in ("", "0"):
    try:
        import importlib

        _kernels = importlib.import_module("prep._kernels")  # a module only where setup.py built it
        _LIB = ctypes.CDLL(_kernels.__file__)
        _API = _kernels if getattr(_kernels, "API_VERSION", 0) == API_VERSION else None  # a stale build: ctypes only
    except (ImportError, OSError):  # not built (no compiler at install time): PIL and torch do the work
        _LIB = None
if _LIB is not None:
    _P, _N = ctypes.c_void_p, ctypes.c_size_t
    _LIB.prep_histogram_interleaved.argtypes = [_P, _N, ctypes.c_int, _P]
    _LIB.prep_cross_interleaved3.argtypes = [_P, _N, _P]
    _LIB.prep_cross_batch.argtypes = [_P, _N, ctypes.c_int, _N, _P]
    _LIB.prep_wide_planes.argtypes = [_P, _N, ctypes.c_int, _N, ctypes.c_int, _P, _P, _P, _P, _P, _P, _P]
    _LIB.prep_cross_planes16.argtypes = [_P, _N, ctypes.c_int, _N, _P]
    for _fn in (
        "prep_histogram_interleaved",
        "prep_cross_interleaved3",
        "prep_cross_batch",
        "prep_wide_planes",
        "prep_cross_planes16",
    ):
        getattr(_LIB, _fn).restype = None

AVAILABLE = _LIB is not None
PER_IMAGE = _API is not None  # reduce8 and jpeg_header: one call per small image
SCAN_DIR = PER_IMAGE and hasattr(_API, "scan_dir")  # a directory read and stat'ed in one call (Linux)


def scan_dir(fd: int, follow_symlinks: bool) -> list[tuple[str, bool, int, int, int, int, int, int]]:
    """The entries of the open directory ``fd`` (not moved, not closed), in directory order, as
    ``(name, is_symlink, errno, mode, size, mtime_ns, dev, ino)``: what
    :mod:`prep.sources.folder`'s listing asks of a ``DirEntry``, one ``fstatat`` each (symlinks
    followed with ``follow_symlinks``, not stat'ed without it), in one native call."""
    assert _API is not None  # callers check SCAN_DIR
    return _API.scan_dir(fd, follow_symlinks)


def reduce8(pixels, channels: int, covariance: bool) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """One interleaved 8-bit image (any C-contiguous buffer of ``H * W * channels`` bytes,
    ``channels`` 1 or 3) in one native call: its flat ``(channels * 256,)`` int64 histogram;
    with ``covariance``, its raw cross sums ``sum(x_i x_j)`` as a ``(channels, channels)`` int64
    array, diagonal included; and per channel its pixel count, sum and sum of squares as a
    ``(channels, 3)`` int64 array (all exact below 2**40 pixels)."""
    counts = np.empty(channels * LEVELS, np.int64)
    cross = np.empty((channels, channels), np.int64) if covariance else None
    moments = np.empty((channels, 3), np.int64)
    assert _API is not None  # callers check PER_IMAGE
    _API.reduce8(pixels, channels, counts, cross, moments)
    return counts, cross, moments


def jpeg_header(data: bytes) -> tuple | None:
    """``(marker, precision, components, sampling, adobe, ids, width, height, plain)`` of a JPEG's
    header, walked once in native code: what :func:`prep.decode.jpeg_kinds.read_header` and
    :func:`~prep.decode.jpeg_kinds.is_plain` say of it; None where ``read_header`` says None."""
    assert _API is not None  # callers check PER_IMAGE
    return _API.jpeg_header(data)


def _uint8(array: np.ndarray, what: str) -> np.ndarray:
    if array.dtype != np.uint8 or not array.flags.c_contiguous:
        raise ValueError(f"{what}: expected a C-contiguous uint8 array; got {array.dtype}, shape {array.shape}")
    return array


def histogram_interleaved(hwc: np.ndarray) -> np.ndarray:
    """``(C, 256)`` int64 counts of each value per channel of an ``(H, W, C)`` uint8 image (C 1 or 3),
    or ``(H, W)`` (one channel). Anything else (a batch ``(N, H, W, C)``) is a ``ValueError``: its
    channels would be counted as one."""
    hwc = _uint8(hwc, "image")
    if hwc.ndim not in (2, 3):
        raise ValueError(f"image: expected (H, W) or (H, W, C); got shape {hwc.shape}")
    channels = hwc.shape[-1] if hwc.ndim == 3 else 1
    if channels not in (1, 3):
        raise ValueError(f"image: expected 1 or 3 channels; got {channels}")
    hist = np.zeros((channels, LEVELS), np.int64)
    assert _LIB is not None  # callers check AVAILABLE
    _LIB.prep_histogram_interleaved(hwc.ctypes.data, hwc.size // channels, channels, hist.ctypes.data)
    return hist


def cross_interleaved(hwc: np.ndarray, squares=None) -> list[list[int]]:
    """Raw ``sum(x_i x_j)`` per channel pair ``(3, 3)`` of an ``(H, W, 3)`` uint8 image; the
    diagonal is ``squares`` (the sums of squares, which the caller has from the histogram), or 0."""
    hwc = _uint8(hwc, "image")
    if hwc.ndim != 3 or hwc.shape[-1] != 3:
        raise ValueError(f"image: expected (H, W, 3); got shape {hwc.shape}")
    out = np.zeros(3, np.uint64)
    assert _LIB is not None  # callers check AVAILABLE
    _LIB.prep_cross_interleaved3(hwc.ctypes.data, hwc.shape[0] * hwc.shape[1], out.ctypes.data)
    rg, rb, gb = (int(v) for v in out)
    return _with_diagonal([[0, rg, rb], [rg, 0, gb], [rb, gb, 0]], squares)


def cross_batch(batch: np.ndarray, squares=None) -> list[list[int]]:
    """Raw ``sum(x_i x_j)`` per channel pair ``(C, C)`` over a whole uint8 batch ``(N, C, H, W)``;
    the diagonal is ``squares`` (per channel, known to the caller), or 0."""
    batch = _uint8(batch, "batch")
    if batch.ndim != 4:
        raise ValueError(f"batch: expected (N, C, H, W); got shape {batch.shape}")
    n, c = batch.shape[:2]
    out = np.zeros((c, c), np.uint64)
    if batch.size:
        assert _LIB is not None  # callers check AVAILABLE
        _LIB.prep_cross_batch(batch.ctypes.data, n, c, batch.shape[2] * batch.shape[3], out.ctypes.data)
    upper = [[int(v) for v in row] for row in out]
    return _with_diagonal([[upper[min(i, j)][max(i, j)] if i != j else 0 for j in range(c)] for i in range(c)], squares)


def wide_planes(
    batch: np.ndarray, nodata_keys: list[int], hist: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One pass over a C-contiguous uint16 or int16 batch ``(N, C, H, W)``: the ``(C, 65536)``
    histogram of ``value - offset`` (offset -32768 for int16, else 0; added into ``hist`` when
    given, a C-contiguous int64 array), per image and channel ``(N, C)`` the count, sum and sum
    of squares of the values whose key is not the channel's nodata key (``nodata_keys[c]``, -1:
    none), and per channel the lowest and highest such key (65536 and -1 for none). The nodata
    key stays counted in the histogram."""
    if batch.dtype not in (np.uint16, np.int16) or not batch.flags.c_contiguous or batch.ndim != 4:
        raise ValueError(
            f"batch: expected a C-contiguous (N, C, H, W) uint16 or int16 array; got {batch.dtype}, {batch.shape}"
        )
    n, c = batch.shape[:2]
    length = batch.shape[2] * batch.shape[3]
    if hist is None:
        hist = np.zeros((c, 1 << 16), np.int64)
    elif hist.shape != (c, 1 << 16) or hist.dtype != np.int64 or not hist.flags.c_contiguous:
        raise ValueError(f"hist: expected a C-contiguous ({c}, 65536) int64 array")
    valid = np.zeros((n, c), np.int64)
    kmin = np.full(c, 1 << 16, np.int32)
    kmax = np.full(c, -1, np.int32)
    sums = np.zeros((n, c), np.int64)
    squares = np.zeros((n, c), np.uint64)
    keys = np.asarray(nodata_keys, np.int32)
    if batch.size:
        assert _LIB is not None  # callers check AVAILABLE
        _LIB.prep_wide_planes(
            batch.ctypes.data,
            n,
            c,
            length,
            int(batch.dtype == np.int16),
            keys.ctypes.data,
            hist.ctypes.data,
            valid.ctypes.data,
            sums.ctypes.data,
            squares.ctypes.data,
            kmin.ctypes.data,
            kmax.ctypes.data,
        )
    return hist, valid, sums, squares, kmin, kmax


def cross_planes16(batch: np.ndarray) -> np.ndarray:
    """Raw ``sum(x_i x_j)`` for ``i < j`` (upper triangle of a ``(C, C)`` int64 array, the rest
    0) over a C-contiguous int16 batch ``(N, C, H, W)``."""
    if batch.dtype != np.int16 or not batch.flags.c_contiguous or batch.ndim != 4:
        raise ValueError(f"batch: expected a C-contiguous (N, C, H, W) int16 array; got {batch.dtype}, {batch.shape}")
    n, c = batch.shape[:2]
    out = np.zeros((c, c), np.int64)
    if batch.size:
        assert _LIB is not None  # callers check AVAILABLE
        _LIB.prep_cross_planes16(batch.ctypes.data, n, c, batch.shape[2] * batch.shape[3], out.ctypes.data)
    return out


def _with_diagonal(cross: list[list[int]], squares) -> list[list[int]]:
    """``cross`` with its diagonal set to ``squares`` (the kernels compute only i != j)."""
    if squares is None:
        return cross
    return [[int(squares[i]) if i == j else v for j, v in enumerate(row)] for i, row in enumerate(cross)]


# ---------------------------------------------------------------------- 8-bit batches in one pass

_UINT8_PLANES = None if _LIB is None else getattr(_LIB, "prep_uint8_planes", None)  # None: a build without it
if _UINT8_PLANES is not None:
    _UINT8_PLANES.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_size_t] + [ctypes.c_void_p] * 4
    _UINT8_PLANES.restype = ctypes.c_int

UINT8_PLANES = _UINT8_PLANES is not None  # whether :func:`uint8_planes` can run


def uint8_planes(
    batch: np.ndarray, hist: np.ndarray | None = None, cross: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """One read of a C-contiguous uint8 batch ``(N, C, H, W)`` (or ``(N, C, L)``) for everything
    :class:`~prep.stats.moments.ChannelMoments` keeps of it: the ``(C, 256)`` int64 histogram of
    each channel's raw values (added into ``hist`` when given, a C-contiguous int64 array), per
    image and channel ``(N, C)`` the int64 sum and sum of squares of the raw values, and (with
    ``cross``) the raw ``sum(x_i x_j)`` over the batch for ``i < j`` as the upper triangle of a
    ``(C, C)`` uint64 array (the rest 0; None without ``cross``). Exact integers throughout."""
    batch = _uint8(batch, "batch")
    if batch.ndim not in (3, 4):
        raise ValueError(f"batch: expected (N, C, H, W) or (N, C, L); got shape {batch.shape}")
    n, c = batch.shape[:2]
    if hist is None:
        hist = np.zeros((c, LEVELS), np.int64)
    elif hist.shape != (c, LEVELS) or hist.dtype != np.int64 or not hist.flags.c_contiguous:
        raise ValueError(f"hist: expected a C-contiguous ({c}, {LEVELS}) int64 array")
    sums = np.zeros((n, c), np.int64)
    squares = np.zeros((n, c), np.int64)
    products = np.zeros((c, c), np.uint64) if cross else None
    if batch.size:
        assert _UINT8_PLANES is not None  # callers check UINT8_PLANES
        length = batch.size // max(1, n * c)
        status = _UINT8_PLANES(
            batch.ctypes.data,
            n,
            c,
            length,
            hist.ctypes.data,
            sums.ctypes.data,
            squares.ctypes.data,
            None if products is None else products.ctypes.data,
        )
        if status != 0:
            raise MemoryError(f"uint8_planes: no memory for the histogram tables of {c} channels")
    return hist, sums, squares, products
