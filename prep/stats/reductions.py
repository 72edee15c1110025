"""Batches reduced where they live (CPU or CUDA) to the few numbers that
:class:`~prep.stats.moments.ChannelMoments` folds in.

Per image and channel: exact pixel counts, sums and sums of squares of 8-bit
(:func:`uint8_sums`) and 16-bit (:func:`integer_image_sums`) data, float64 moments of float data
(:func:`float_image_moments`); per batch: the 8-bit histogram (:func:`uint8_histogram`) and the
raw cross sums of the channels (:func:`cross_sums`, :func:`uint8_cross_sums`). Only those numbers
reach the host. Large images are reduced :data:`SLICE_ELEMENTS` values at a time
(:func:`pixel_slices`), so the scratch memory is bounded whatever the image size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from prep.pixels import LEVELS, SIXTEEN_BIT_MAX

if TYPE_CHECKING:
    import torch

SLICE_ELEMENTS = 1 << 20  # values reduced at a time: bounds the scratch memory of any image size
EXACT_GROUP = 256  # float32 sums of up to 258 squares of 0..255 stay integers below 2**24: exact


def uint8_histogram(batch: torch.Tensor) -> np.ndarray:
    """The ``(C, 256)`` counts of each raw value per channel of a uint8 batch ``(N, C, H, W)``, by
    ``torch.bincount`` on the batch's own device (exact integers)."""
    import torch

    rows = [torch.bincount(batch[:, c].reshape(-1), minlength=LEVELS) for c in range(batch.shape[1])]
    return torch.stack(rows).cpu().numpy().astype(np.int64)


def histogram_range(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel raw min and max of ``(C, 256)`` counts; 256 and -1 for an empty channel."""
    present = np.asarray(hist) > 0
    any_present = present.any(1)
    vmin = np.where(any_present, present.argmax(1), LEVELS)
    vmax = np.where(any_present, LEVELS - 1 - present[:, ::-1].argmax(1), -1)
    return vmin.astype(np.int64), vmax.astype(np.int64)


def uint8_sums(batch: torch.Tensor, workspace: dict | None = None, method: str = "auto"):
    """Exact per-image ``(N, C)`` pixel counts, sums and sums of squares of a uint8 batch, reduced
    on the batch's own device.

    ``method="float32-groups"`` (the CPU's choice under ``auto``) sums pixels through float32 in
    groups of at most 256, where every product and partial sum is an integer below 2**24 and
    therefore exact in any summation order; the float32 buffers are reused from ``workspace``
    across batches. ``method="float64"`` (CUDA's choice) sums in float64, exact while a sum
    stays below 2**53. Both are plain torch code, so the CPU tests run each of them. Large
    images are reduced :data:`SLICE_ELEMENTS` values at a time.
    """
    import torch

    if method not in ("auto", "float32-groups", "float64"):
        raise ValueError(f"method must be auto, float32-groups or float64; got {method!r}")
    n, c = batch.shape[:2]
    rows = batch.reshape(n * c, -1)
    pixels = rows.shape[1]
    workspace = {} if workspace is None else workspace
    total = torch.zeros(n * c, dtype=torch.float64, device=batch.device)
    total_sq = torch.zeros_like(total)
    for part in pixel_slices(rows, EXACT_GROUP):
        width = part.shape[1]
        group = next((g for g in range(min(EXACT_GROUP, width), 0, -1) if width % g == 0), 1)
        use = method
        if use == "auto":
            use = "float32-groups" if batch.device.type == "cpu" and group >= 16 else "float64"
        if use == "float32-groups":
            size = part.numel()
            if workspace.get("values") is None or workspace["values"].numel() < size:
                workspace["values"] = torch.empty(size, device=batch.device)
                workspace["squares"] = torch.empty(size, device=batch.device)
            values = workspace["values"][:size].view(n * c, width)
            values.copy_(part)
            values = values.view(-1, group)
            squares = torch.mul(values, values, out=workspace["squares"][:size].view(-1, group))
            total += values.sum(1).view(n * c, -1).to(torch.float64).sum(1)
            total_sq += squares.sum(1).view(n * c, -1).to(torch.float64).sum(1)
        else:
            x = part.to(torch.float64)
            total += x.sum(1)
            total_sq += (x * x).sum(1)
    return np.full((n, c), pixels, np.int64), total.view(n, c).cpu().numpy(), total_sq.view(n, c).cpu().numpy()


def pixel_slices(rows: torch.Tensor, multiple: int = 1):
    """Column slices of ``rows`` (R, P) of about :data:`SLICE_ELEMENTS` values each (a multiple
    of ``multiple`` columns where possible); one slice, the whole of ``rows``, for small batches."""
    count, pixels = rows.shape[0], rows.shape[-1]
    width = max(1, SLICE_ELEMENTS // max(1, count))
    if width >= pixels:
        yield rows
        return
    width = max(multiple, width // multiple * multiple)
    for start in range(0, pixels, width):
        yield rows[..., start : start + width]


def integer_image_sums(batch: torch.Tensor):
    """Per-image ``(N, C)`` counts and exact int64 sums and sums of squares of a 16-bit batch (values
    0..65535: a sum of squares is exact up to 2**33 pixels per image), and per-channel min/max;
    reduced :data:`SLICE_ELEMENTS` values at a time, so no int64 copy of a large image is made."""
    import torch

    n, c = batch.shape[:2]
    x = batch.reshape(n * c, -1)
    pixels = x.shape[-1]
    total = torch.zeros(n * c, dtype=torch.int64, device=batch.device)
    total_sq = torch.zeros_like(total)
    for part in pixel_slices(x):
        wide = part.to(torch.int64)
        total += wide.sum(-1)
        total_sq += (wide * wide).sum(-1)
    vmin = batch.amin(dim=(0, 2, 3)).to(torch.int64) if pixels else torch.full((c,), SIXTEEN_BIT_MAX + 1)
    vmax = batch.amax(dim=(0, 2, 3)).to(torch.int64) if pixels else torch.full((c,), -1)
    return (
        np.full((n, c), pixels, np.int64),
        total.view(n, c).cpu().numpy(),
        total_sq.view(n, c).cpu().numpy(),
        vmin.cpu().numpy(),
        vmax.cpu().numpy(),
    )


def cross_sums(batch: torch.Tensor, squares: Sequence[int] | None = None) -> list[list[int]]:
    """Raw ``sum(x_i * x_j)`` over every pixel of an integer batch, per channel pair ``(C, C)``.

    One float64 GEMM of the pixel matrix with itself per slice of pixels. Values are 16-bit at
    most (``|x| <= 65535``), so a product is below 2**32 and a slice of at most
    :data:`SLICE_ELEMENTS` (2**20) values sums to below 2**52: every partial sum is an integer
    float64 holds exactly, in any summation order. The slices' sums add as Python integers.
    """
    import torch

    c = batch.shape[1]
    fast = _sixteen_bit_cross(batch, squares)
    if fast is not None:
        return fast
    x = batch.transpose(0, 1).reshape(c, -1)
    total = [[0] * c for _ in range(c)]
    for part in pixel_slices(x):
        values = part.to(torch.float64)
        gram = (values @ values.T).cpu().tolist()
        total = [[a + int(b) for a, b in zip(row_t, row_g)] for row_t, row_g in zip(total, gram)]
    return total


def _native_sixteen_bit(batch: torch.Tensor) -> bool:
    """Whether the native 16-bit kernels (where built) take ``batch``: a CPU int16/uint16 (N, C, H, W)."""
    from prep.stats import kernels

    return kernels.AVAILABLE and batch.device.type == "cpu" and batch.dtype in _sixteen_bit_dtypes() and batch.ndim == 4


def _sixteen_bit_dtypes() -> tuple:
    """int16 and (where this torch has it) uint16: the dtypes the native 16-bit paths read."""
    import torch

    return (torch.int16, torch.uint16) if hasattr(torch, "uint16") else (torch.int16,)


def _sixteen_bit_cross(batch: torch.Tensor, squares: Sequence[int] | None = None) -> list[list[int]] | None:
    """:func:`cross_sums` of a contiguous CPU uint16 or int16 batch by the native int16 kernel,
    where it was built (else None). uint16 values go in as ``s = x - 32768`` (their bits with the
    top one flipped, read as int16), and ``sum x_i x_j = sum s_i s_j + 32768 (sum s_i + sum s_j)
    + n 32768**2`` in Python integers. The diagonal is ``squares`` (each channel's ``sum x**2``,
    which the caller has from the same pass), or computed here."""
    from prep.stats import kernels

    if not _native_sixteen_bit(batch):
        return None
    array = np.ascontiguousarray(batch.numpy())
    n, c = array.shape[:2]
    shift = 1 << 15 if array.dtype == np.uint16 else 0
    planes = (array.view(np.uint16) ^ np.uint16(0x8000)).view(np.int16) if shift else array
    upper = kernels.cross_planes16(np.ascontiguousarray(planes))
    count = n * int(np.prod(array.shape[2:]))
    sums = [int(v) for v in planes.reshape(n, c, -1).sum(axis=(0, 2), dtype=np.int64)]
    if squares is None:
        wide = array.reshape(n, c, -1).astype(np.int64)
        squares = [int(v) for v in np.einsum("ncp,ncp->c", wide, wide)]
    out = [[0] * c for _ in range(c)]
    for i in range(c):
        out[i][i] = int(squares[i])
        for j in range(i + 1, c):
            value = int(upper[i, j]) + shift * (sums[i] + sums[j]) + count * shift * shift
            out[i][j] = out[j][i] = value
    return out


def uint8_cross_sums(batch: torch.Tensor, total_sq: np.ndarray) -> list[list[int]]:
    """:func:`cross_sums` of a uint8 batch, whose sums of squares ``total_sq`` (per image and
    channel) are known already: one channel needs nothing more; a contiguous CPU batch goes to
    :mod:`prep.stats.kernels` where they were built; anything else to the float64 GEMM."""
    from prep.stats import kernels

    c = batch.shape[1]
    squares = [int(v) for v in np.asarray(total_sq).astype(np.int64).sum(0)]
    if c == 1:
        return [[squares[0]]]
    if kernels.AVAILABLE and batch.device.type == "cpu" and batch.is_contiguous():
        return kernels.cross_batch(batch.numpy(), squares)
    return cross_sums(batch)


def uint8_reduction(
    batch: torch.Tensor, cross: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[list[int]] | None] | None:
    """Everything a uint8 batch ``(N, C, H, W)`` gives the 8-bit state, from one native read
    (:func:`prep.stats.kernels.uint8_planes`): per image and channel ``(N, C)`` the pixel counts,
    sums and sums of squares, the batch's ``(C, 256)`` histogram and (with ``cross``) its raw
    cross sums ``(C, C)`` as :func:`uint8_cross_sums` gives them. None where the kernels were not
    built or the batch is not a C-contiguous CPU tensor: then :func:`uint8_sums`,
    :func:`uint8_histogram` and :func:`uint8_cross_sums` give the same integers."""
    from prep.stats import kernels

    if not (kernels.AVAILABLE and kernels.UINT8_PLANES) or batch.device.type != "cpu" or not batch.is_contiguous():
        return None
    array = batch.numpy()
    if not array.flags.c_contiguous:  # torch and NumPy disagree about strides of size-1 axes
        return None
    hist, sums, squares, upper = kernels.uint8_planes(array, cross=cross)
    n, c = sums.shape
    counts = np.full((n, c), int(np.prod(array.shape[2:])), np.int64)
    products = None
    if upper is not None:
        diagonal = [int(v) for v in squares.sum(0)]
        products = [[diagonal[i] if i == j else int(upper[min(i, j), max(i, j)]) for j in range(c)] for i in range(c)]
    return counts, sums, squares, hist, products


def float_image_moments(
    batch: torch.Tensor, scale: float, nodata: Sequence[float] | None = None, mask: torch.Tensor | None = None
):
    """Per-image ``(N, C)`` valid count, mean, m2, min, max in float64 on the batch's device, and
    per channel the non-finite values and the values left out as ``nodata`` (one per channel).

    Two passes (the mean, then squared deviations from it), each over slices of
    :data:`SLICE_ELEMENTS` values, so the float64 scratch stays small whatever the image size.
    A value counts when it is finite, (with ``nodata``) not its channel's nodata value, and (with
    ``mask``, ``(N, H, W)`` booleans) inside the mask; values outside it are not counted at all.
    """
    import torch

    n, c = batch.shape[:2]
    x = batch.reshape(n * c, -1)
    f64, dev = torch.float64, batch.device
    count = torch.zeros(n * c, dtype=torch.int64, device=dev)
    finite_count = torch.zeros_like(count)
    total = torch.zeros(n * c, dtype=f64, device=dev)
    vmin = torch.full((n * c,), math.inf, dtype=f64, device=dev)
    vmax = torch.full((n * c,), -math.inf, dtype=f64, device=dev)
    zero = torch.zeros((), dtype=f64, device=dev)
    fills = (
        None if nodata is None else torch.tensor([float(v) for v in nodata], dtype=f64, device=dev).repeat(n)[:, None]
    )
    inside = None if mask is None else _mask_rows(mask, n, c, x.shape[-1])
    inside_count = torch.full_like(count, x.shape[-1]) if inside is None else inside.sum(-1)

    def unit(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        values = x[:, start:stop].to(torch.float64)
        finite = torch.isfinite(values)
        if inside is not None:
            finite &= inside[:, start:stop]
        valid = finite if fills is None else finite & (values != fills)
        if scale != 1.0:
            values = values / scale
        return values, finite, valid

    for start, stop in column_ranges(x):
        values, finite, valid = unit(start, stop)
        count += valid.sum(-1)
        finite_count += finite.sum(-1)
        total += torch.where(valid, values, zero).sum(-1)
        vmin = torch.minimum(vmin, torch.where(valid, values, math.inf).amin(-1))
        vmax = torch.maximum(vmax, torch.where(valid, values, -math.inf).amax(-1))
    mean = total / count.clamp(min=1)
    m2 = torch.zeros_like(total)
    for start, stop in column_ranges(x):
        values, _, valid = unit(start, stop)
        deviation = torch.where(valid, values - mean[:, None], zero)
        m2 += (deviation * deviation).sum(-1)
    per_image = tuple(t.view(n, c).cpu().numpy() for t in (count, mean, m2, vmin, vmax))
    nonfinite = (inside_count - finite_count).view(n, c).sum(0).cpu().numpy()
    excluded = (finite_count - count).view(n, c).sum(0).cpu().numpy()
    return (*per_image, nonfinite, excluded)


# ---------------------------------------------------------------------- 16-bit and float data

WIDE_BINS = 1 << 16  # bins of a wide histogram: every 16-bit value, or the top 16 bits of a float32 key
WIDE_UNSIGNED, WIDE_SIGNED, WIDE_FLOAT = 1, 2, 3  # what a wide histogram's bins are (its kind)
WIDE_OFFSETS = {WIDE_UNSIGNED: 0, WIDE_SIGNED: -(1 << 15)}  # value of bin 0 of an integer kind


@dataclass
class IntegerReduction:
    """What :func:`integer_reduction` gives: per image and channel ``(N, C)`` the valid pixel
    counts and exact sums and sums of squares of raw values; per channel the raw min and max of
    the valid pixels (empty: above / below any value), the pixels left out as nodata, and the
    ``(C, 65536)`` counts of each value (``kind`` :data:`WIDE_UNSIGNED`: 0..65535;
    :data:`WIDE_SIGNED`: -32768..32767)."""

    n: np.ndarray
    s: np.ndarray
    q: np.ndarray
    vmin: np.ndarray
    vmax: np.ndarray
    excluded: np.ndarray
    wide: np.ndarray | None  # None: added into the state's histogram already (kernel_reduction's ``into``)
    kind: int


def wide_kind(low: int, high: int) -> int | None:
    """The integer kind whose bins hold every value in ``low..high``, or None (beyond 16 bits)."""
    if low >= 0 and high <= WIDE_BINS - 1:
        return WIDE_UNSIGNED
    if low >= WIDE_OFFSETS[WIDE_SIGNED] and high < -WIDE_OFFSETS[WIDE_SIGNED]:
        return WIDE_SIGNED
    return None


def integer_reduction(
    batch: torch.Tensor, nodata: Sequence[float] | None = None, mask: torch.Tensor | None = None
) -> IntegerReduction | None:
    """Reduce an integer batch ``(N, C, H, W)`` of 16-bit values (signed or not) exactly; None
    when its values do not fit 16 bits (the caller reduces it as floats).

    ``nodata`` (one value per channel, or None) leaves out the pixels of a channel equal to its
    value (GDAL's per-band rule); ``mask`` (``(N, H, W)`` booleans, every channel alike: a
    foreground) leaves out the pixels where it is False altogether (they are neither measured nor
    nodata). The histogram is one ``bincount`` per channel of ``value -
    offset``; sums go through int64 :data:`SLICE_ELEMENTS` values at a time (exact: a 16-bit
    square is below 2**32, so an image of up to 2**31 pixels sums without overflow).
    """
    import torch

    n, c = batch.shape[:2]
    x = batch.reshape(n, c, -1)
    pixels = x.shape[-1]
    if x.numel() == 0:
        kind = WIDE_UNSIGNED
    else:
        found = wide_kind(int(x.amin()), int(x.amax()))
        if found is None:
            return None
        kind = found
    offset = WIDE_OFFSETS[kind]
    fill = _nodata_values(nodata, c, batch)
    rows = x.reshape(n * c, pixels)
    inside = None if mask is None else _mask_rows(mask, n, c, pixels)
    fills = None if fill is None else fill.repeat(n)[:, None]
    total = torch.zeros(n * c, dtype=torch.int64, device=batch.device)
    total_sq = torch.zeros_like(total)
    valid_n = torch.zeros_like(total)
    counts = torch.zeros((c, WIDE_BINS), dtype=torch.int64, device=batch.device)
    for start, stop in column_ranges(rows):
        wide = rows[:, start:stop].to(torch.int64)
        region = None if inside is None else inside[:, start:stop]
        for ch in range(c):  # rows ch, ch + C, ...: the channel's pixels of every image in the slice
            values = wide[ch::c] if region is None else wide[ch::c][region[ch::c]]
            counts[ch] += torch.bincount(values.reshape(-1) - offset, minlength=WIDE_BINS)
        keep = None if fills is None else wide != fills
        if region is not None:
            keep = region if keep is None else keep & region
        if keep is not None:
            wide = wide * keep
            valid_n += keep.sum(-1)
        total += wide.sum(-1)
        total_sq += (wide * wide).sum(-1)
    hist = counts.cpu().numpy()
    excluded = np.zeros(c, np.int64)
    if fill is not None:
        for ch, value in enumerate(fill.tolist()):
            if 0 <= value - offset < WIDE_BINS:  # else no pixel equals it
                excluded[ch] = hist[ch, value - offset]
                hist[ch, value - offset] = 0
    if fill is not None or inside is not None:
        valid = valid_n.view(n, c).cpu().numpy()
    else:
        valid = np.full((n, c), pixels, np.int64)
    vmin, vmax = wide_range(hist, kind)
    return IntegerReduction(
        valid, total.view(n, c).cpu().numpy(), total_sq.view(n, c).cpu().numpy(), vmin, vmax, excluded, hist, kind
    )


_NEVER = -(1 << 40)  # a nodata value no 16-bit pixel equals


def _nodata_values(nodata: Sequence[float] | None, channels: int, batch: torch.Tensor) -> torch.Tensor | None:
    """The nodata values as an int64 tensor ``(C,)`` on the batch's device; ``ValueError`` for one
    that is no integer (it could never equal a pixel of integer data)."""
    import torch

    if nodata is None:
        return None
    values = []
    for value in nodata:
        if math.isnan(value):  # NaN: no integer pixel is ever left out
            values.append(_NEVER)
            continue
        if not float(value).is_integer():
            raise ValueError(f"nodata {value:g} is not an integer, and this data is integer ({batch.dtype})")
        if batch.dtype != torch.int64:
            info = torch.iinfo(batch.dtype)
            if not info.min <= value <= info.max:
                dtype = str(batch.dtype).removeprefix("torch.")
                raise ValueError(f"nodata {value:g} does not fit {dtype} data ({info.min}..{info.max})")
        values.append(int(value))
    return torch.tensor(values, dtype=torch.int64, device=batch.device)


def kernel_reduction(
    batch: torch.Tensor, nodata: Sequence[float] | None = None, into: np.ndarray | None = None
) -> IntegerReduction | None:
    """:func:`integer_reduction` of a C-contiguous CPU uint16 or int16 batch in one native pass
    (:func:`prep.stats.kernels.wide_planes`), where the kernels were built; None otherwise (the
    caller reduces it with torch). The same numbers, the same kind of histogram.

    ``into`` (uint16 data only): a state's ``(C, 65536)`` histogram of that kind, which the pass
    adds this batch's counts to in place (the result's ``wide`` is then None): a batch of one
    13-band tile neither allocates nor adds 6.5 MiB of bins."""

    if not _native_sixteen_bit(batch):
        return None
    array = np.ascontiguousarray(batch.numpy())
    n, c = array.shape[:2]
    signed = array.dtype == np.int16
    if signed:
        into = None
    kind = WIDE_SIGNED if signed else WIDE_UNSIGNED
    offset = WIDE_OFFSETS[kind]
    keys = [-1] * c
    if nodata is not None:
        for ch, value in enumerate(nodata):
            if not math.isnan(value) and 0 <= value - offset < WIDE_BINS:
                keys[ch] = int(value - offset)
    from prep.stats import kernels

    hist, valid, sums, squares, kmin, kmax = kernels.wide_planes(array, keys, into)
    pixels = int(np.prod(array.shape[2:]))
    excluded = n * pixels - valid.sum(0)
    for ch, key in enumerate(keys):
        if key >= 0:
            hist[ch, key] -= excluded[ch]  # the nodata key: never kept in a histogram
    if into is None and signed and not hist[:, : -WIDE_OFFSETS[WIDE_SIGNED]].any():  # no negative value
        unsigned = rekeyed(hist, WIDE_SIGNED, WIDE_UNSIGNED)  # as torch keys it
        if unsigned is not None:
            hist, kind = unsigned, WIDE_UNSIGNED
    empty = kmax < 0
    vmin = np.where(empty, WIDE_BINS, kmin.astype(np.int64) + offset)
    vmax = np.where(empty, -WIDE_BINS - 1, kmax.astype(np.int64) + offset)
    wide = None if into is not None else hist
    return IntegerReduction(valid, sums, squares.astype(np.int64), vmin, vmax, excluded.astype(np.int64), wide, kind)


def _mask_rows(mask: torch.Tensor, n: int, c: int, pixels: int) -> torch.Tensor:
    """A mask ``(N, H, W)`` (or ``(N, 1, H, W)``) as ``(N * C, P)`` booleans, row ``i * C + c``
    holding image ``i``'s mask for channel ``c``."""
    import torch

    flat = mask.reshape(n, -1)
    if flat.shape[1] != pixels:
        raise ValueError(f"mask of {flat.shape[1]} pixels per image; the images have {pixels}")
    return flat.to(torch.bool)[:, None, :].expand(n, c, pixels).reshape(n * c, pixels)


def column_ranges(rows: torch.Tensor):
    """``(start, stop)`` column ranges of about :data:`SLICE_ELEMENTS` values each (as :func:`pixel_slices`)."""
    count, pixels = rows.shape[0], rows.shape[-1]
    width = max(1, SLICE_ELEMENTS // max(1, count))
    if pixels == 0:
        yield 0, 0
    for start in range(0, pixels, width):
        yield start, min(pixels, start + width)


def wide_range(hist: np.ndarray, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel, the lowest and highest value an integer wide histogram counts (its kind's
    offset added); an empty channel gives 65536 and -65537, above and below any value."""
    present = np.asarray(hist) > 0
    anything = present.any(1)
    offset = WIDE_OFFSETS[kind]
    low = np.where(anything, present.argmax(1) + offset, WIDE_BINS)
    high = np.where(anything, WIDE_BINS - 1 - present[:, ::-1].argmax(1) + offset, -WIDE_BINS - 1)
    return low.astype(np.int64), high.astype(np.int64)


def rekeyed(hist: np.ndarray, kind: int, to: int) -> np.ndarray | None:
    """An integer wide histogram of ``kind`` as one of kind ``to``, or None when it counts a value
    the other kind has no bin for."""
    if kind == to:
        return hist
    shift = WIDE_OFFSETS[kind] - WIDE_OFFSETS[to]  # bin i of kind is bin i + shift of to
    out = np.zeros_like(hist)
    if shift > 0:
        if hist[:, WIDE_BINS - shift :].any():
            return None
        out[:, shift:] = hist[:, : WIDE_BINS - shift]
    else:
        if hist[:, :-shift].any():
            return None
        out[:, : WIDE_BINS + shift] = hist[:, -shift:]
    return out


def float_key_histogram(values: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """``(C, 65536)`` counts of the top 16 bits of the order-preserving float32 key of each valid
    value of ``values`` ``(N, C, P)`` (float data; ``valid`` says which values count).

    The key of a float32 ``f`` with bits ``b`` (as unsigned): ``b | 2**31`` when ``f >= 0``, else
    ``~b``; keys sort as the floats do, so a bin holds the floats of one interval of 2**16 keys:
    one sign, one exponent and the top 7 bits of the mantissa (a relative width of at most
    2**-7). Float64 values are rounded to float32 first (which keeps their order).
    """
    import torch

    c = values.shape[1]
    rows = []
    for ch in range(c):
        v = values[:, ch].reshape(-1)
        keep = valid[:, ch].reshape(-1)
        f = v[keep].to(torch.float32).contiguous()
        bits = f.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        key = torch.where(bits >= (1 << 31), 0xFFFFFFFF - bits, bits + (1 << 31)) >> 16
        rows.append(torch.bincount(key, minlength=WIDE_BINS))
    return torch.stack(rows).cpu().numpy().astype(np.int64) if rows else np.zeros((0, WIDE_BINS), np.int64)


def float_key_bounds(bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The smallest and largest finite float32 value whose key falls in each bin of ``bins``, as
    float64 (widened by one float32 step each way, which covers float64 data rounded to float32)."""
    bins = np.asarray(bins, np.int64)
    low_key = bins << 16
    high_key = low_key | 0xFFFF

    def value(key: np.ndarray) -> np.ndarray:
        bits = np.where(key >= (1 << 31), key - (1 << 31), 0xFFFFFFFF - key).astype(np.uint32)
        out = bits.view(np.float32)
        big = np.finfo(np.float32).max
        return np.where(np.isfinite(out), out, np.where(key >= (1 << 31), big, -big)).astype(np.float32)

    low, high = value(low_key), value(high_key)
    low = np.nextafter(low, np.float32(-np.inf)).astype(np.float64)
    high = np.nextafter(high, np.float32(np.inf)).astype(np.float64)
    return low, high
