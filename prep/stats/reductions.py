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


def cross_sums(batch: torch.Tensor) -> list[list[int]]:
    """Raw ``sum(x_i * x_j)`` over every pixel of an integer batch, per channel pair ``(C, C)``.

    One float64 GEMM of the pixel matrix with itself per slice of pixels: every product and
    partial sum of 8-bit data is an integer below 2**53, so any summation order is exact; 16-bit
    values go through int64 (exact below 2**63, about 2 billion pixels per slice).
    """
    import torch

    c = batch.shape[1]
    x = batch.transpose(0, 1).reshape(c, -1)
    dtype = torch.float64 if batch.dtype == torch.uint8 else torch.int64
    total = [[0] * c for _ in range(c)]
    for part in pixel_slices(x):
        values = part.to(dtype)
        gram = (values @ values.T) if dtype == torch.float64 else (values.unsqueeze(1) * values.unsqueeze(0)).sum(-1)
        gram = gram.cpu().tolist()
        total = [[a + int(b) for a, b in zip(row_t, row_g)] for row_t, row_g in zip(total, gram)]
    return total


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


def float_image_moments(batch: torch.Tensor, scale: float):
    """Per-image ``(N, C)`` finite count, mean, m2, min, max in float64 on the batch's device.

    Two passes (the mean, then squared deviations from it), each over slices of
    :data:`SLICE_ELEMENTS` values, so the float64 scratch stays small whatever the image size.
    """
    import torch

    n, c = batch.shape[:2]
    x = batch.reshape(n * c, -1)
    f64, dev = torch.float64, batch.device
    count = torch.zeros(n * c, dtype=torch.int64, device=dev)
    total = torch.zeros(n * c, dtype=f64, device=dev)
    vmin = torch.full((n * c,), math.inf, dtype=f64, device=dev)
    vmax = torch.full((n * c,), -math.inf, dtype=f64, device=dev)
    zero = torch.zeros((), dtype=f64, device=dev)

    def unit(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = part.to(torch.float64)
        if scale != 1.0:
            values = values / scale
        return values, torch.isfinite(values)

    for part in pixel_slices(x):
        values, finite = unit(part)
        count += finite.sum(-1)
        total += torch.where(finite, values, zero).sum(-1)
        vmin = torch.minimum(vmin, torch.where(finite, values, math.inf).amin(-1))
        vmax = torch.maximum(vmax, torch.where(finite, values, -math.inf).amax(-1))
    mean = total / count.clamp(min=1)
    m2 = torch.zeros_like(total)
    for part in pixel_slices(x):
        values, finite = unit(part)
        deviation = torch.where(finite, values - mean[:, None], zero)
        m2 += (deviation * deviation).sum(-1)
    per_image = tuple(t.view(n, c).cpu().numpy() for t in (count, mean, m2, vmin, vmax))
    nonfinite = (x.shape[-1] - count).view(n, c).sum(0).cpu().numpy()
    return (*per_image, nonfinite)
