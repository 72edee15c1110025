"""The pixel rule: how an image becomes channel values in unit scale. Its one home.

prep measures exactly what training code will see, so measuring and transforming share this
one rule. ``mode`` is ``"RGB"`` (3 channels), ``"L"`` (1 channel) or ``"bands"``: every band of
the data as stored, any number of them, in the data's own values (pixel max 1: nothing is
divided, whatever the dtype), as torchgeo, MONAI and nnU-Net loaders give them to the model.
The table below is the rule of ``RGB`` and ``L``.

============================================  ==========================================  =========
PIL mode of the file                           conversion                                  pixel max
============================================  ==========================================  =========
1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, ...   ``img.convert(mode)``, as torchvision's      255
                                               ``ImageFolder`` loader (palette and alpha
                                               follow PIL: alpha is dropped, not blended)
I;16, I;16L, I;16B, I;16N, I                   values kept, divided by 65535 (not clipped   65535
                                               to 8 bits); ``I`` values must lie in
                                               0..65535; grey replicated for ``RGB``
F                                              values kept as unit-scale floats; NaN and    1
                                               inf are counted and left out of the stats;
                                               grey replicated for ``RGB``
============================================  ==========================================  =========

Tensors follow the same rule by dtype: uint8 values are divided by 255, other integer dtypes
hold 16-bit values (0..65535, anything else is an error) divided by 65535, float tensors are
unit scale already. The *pixel max* is the number raw values are divided by; the stats file
records it as ``pixel_max``.

Channel conversion of uint8 data between ``L`` and ``RGB`` is PIL's: ``L -> RGB`` replicates
the channel and ``RGB -> L`` is ITU-R 601-2 luma in PIL's fixed point,
``(19595 R + 38470 G + 7471 B + 32768) >> 16``.

EXIF orientation is not applied (as in ``ImageFolder``); rotating an image does not change its
statistics anyway.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from prep.errors import ChannelMismatchError, OptionError

if TYPE_CHECKING:  # torch is imported where tensors are handled, not to read a stats file
    import torch
    from PIL import Image

MODES = ("RGB", "L", "bands")
CHANNELS = {"RGB": 3, "L": 1}  # the modes of a fixed channel count; "bands" has the data's own
BANDS = "bands"
RAW_MAX = 1.0  # pixel max of the bands mode: the data's own values
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
FLOAT_MODES = frozenset({"F"})

EIGHT_BIT_MAX = 255  # pixel max of 8-bit data
SIXTEEN_BIT_MAX = 65535  # pixel max of 16-bit data (PIL's I;16 and I modes, integer tensors)
FLOAT_MAX = 1.0  # pixel max of float data (already unit scale)
LEVELS = EIGHT_BIT_MAX + 1  # distinct 8-bit values: the bins of an exact 8-bit histogram
LUMA_WEIGHTS = (19595, 38470, 7471)  # PIL's ITU-R 601-2 luma, fixed point with 16 fractional bits
LUMA_SHIFT = 16


def channel_names(channels: int, mode: str | None = None, names=None) -> list[str]:
    """What tables call the channels: the band names when given; R, G, B for three and L for one
    (outside the bands mode); else B1, B2, ... (GDAL's 1-based band numbers)."""
    if names:
        return [str(n) for n in names]
    if mode != BANDS and channels == 3:
        return ["R", "G", "B"]
    if mode != BANDS and channels == 1:
        return ["L"]
    return [f"B{i + 1}" for i in range(channels)]


def units_of(mode: str) -> str:
    """``"raw"`` (the data's own values) for the bands mode, ``"unit"`` (divided by the pixel max) otherwise."""
    return "raw" if mode == BANDS else "unit"


def check_mode(mode: str) -> str:
    """Return ``mode`` if prep supports it, else raise :class:`OptionError` naming the choices."""
    if mode not in MODES:
        raise OptionError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def mode_of_channels(channels: int) -> str:
    """The mode whose channel count is ``channels``: 1 -> ``L``, 3 -> ``RGB``."""
    for mode, count in CHANNELS.items():
        if count == channels:
            return mode
    raise ChannelMismatchError(f"images have {channels} channels; prep measures 1 (L) or 3 (RGB)")


def native_mode(img: Image.Image) -> str:
    """The mode that keeps an image's channels: ``L`` for grey, 16-bit and float images, else ``RGB``."""
    grey = img.mode in ("1", "L", "LA") or img.mode in SIXTEEN_BIT_MODES or img.mode in FLOAT_MODES
    return "L" if grey else "RGB"


def is_eight_bit(img: Image.Image) -> bool:
    """True when ``img`` converts to 8-bit ``RGB``/``L`` through PIL (every mode but 16-bit and float)."""
    return img.mode not in SIXTEEN_BIT_MODES and img.mode not in FLOAT_MODES


def to_array(img: Image.Image, mode: str, replicate: bool = True) -> tuple[np.ndarray, float]:
    """Convert ``img`` by the rule above into a ``(C, H, W)`` array and its pixel max.

    The array is uint8 (pixel max 255), int32 (16-bit data, pixel max 65535) or float32 (``F``
    images, already unit scale, pixel max 1); divide by the pixel max for unit scale. 16-bit and
    float images are single-channel; with ``replicate=False`` they stay ``(1, H, W)`` in RGB mode
    (the reader repeats the channel: :meth:`prep.stats.moments.ChannelMoments.update_image`).
    """
    channels = CHANNELS[check_mode(mode)]
    if is_eight_bit(img):
        converted = img if img.mode == mode else img.convert(mode)
        arr = np.asarray(converted, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr), float(EIGHT_BIT_MAX)
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.int32)
        check_sixteen_bit_range(arr, f"mode {img.mode} image")
        pixel_max = float(SIXTEEN_BIT_MAX)
    else:
        arr = np.asarray(img, dtype=np.float32)
        pixel_max = FLOAT_MAX
    if not replicate:
        return arr[None], pixel_max
    return np.ascontiguousarray(np.broadcast_to(arr, (channels, *arr.shape))), pixel_max


def check_sixteen_bit_range(values, what: str) -> None:
    """Raise ``ValueError`` when integer ``values`` (array or tensor) leave 0..65535."""
    if values.size if isinstance(values, np.ndarray) else values.numel():
        low, high = int(values.min()), int(values.max())
        if low < 0 or high > SIXTEEN_BIT_MAX:
            raise ValueError(
                f"{what} has values {low}..{high}, outside 0..{SIXTEEN_BIT_MAX}; "
                "prep reads integer images other than uint8 as 16-bit"
            )


def checked_sixteen_bit(tensor: torch.Tensor) -> torch.Tensor:
    """An integer tensor other than uint8 as int64, after checking its values lie in 0..65535;
    other tensors unchanged."""
    import torch

    if tensor.dtype.is_floating_point or tensor.dtype in (torch.uint8, torch.bool) or tensor.dtype.is_complex:
        return tensor
    wide = tensor.to(torch.int64)
    check_sixteen_bit_range(wide, f"{tensor.dtype} image")
    return wide


def pixel_max_of(dtype: torch.dtype) -> float:
    """The pixel max of a tensor dtype: 255 for uint8, 1 for floats, 65535 for other integers."""
    import torch

    if dtype == torch.uint8:
        return float(EIGHT_BIT_MAX)
    if dtype.is_floating_point:
        return FLOAT_MAX
    if dtype == torch.bool or dtype.is_complex:
        raise TypeError(f"cannot read pixels of dtype {dtype}; use uint8, 16-bit integers or floats")
    return float(SIXTEEN_BIT_MAX)


def to_unit_float(tensor: torch.Tensor) -> torch.Tensor:
    """Any image tensor as float32 in unit scale by the rule above (uint8 / 255, 16-bit / 65535)."""
    import torch

    pixel_max = pixel_max_of(tensor.dtype)
    out = checked_sixteen_bit(tensor).to(torch.float32)
    return out if pixel_max == FLOAT_MAX else out / pixel_max


def from_hwc_array(array: np.ndarray) -> torch.Tensor:
    """A NumPy image ``(H, W)`` or ``(H, W, C)`` (C = 1, 3, or 4 with alpha, dropped as PIL's
    ``convert`` drops it) as a ``(C, H, W)`` tensor of the same values."""
    import torch

    if array.ndim == 2:
        array = array[..., None]
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ChannelMismatchError(
            f"expected a NumPy image (H, W) or (H, W, C) with C in 1, 3, 4; got shape {array.shape}"
        )
    if array.dtype.kind not in "uif" or (array.dtype.kind == "f" and array.dtype.itemsize > 8):
        raise TypeError(f"cannot read pixels of NumPy dtype {array.dtype}; use uint8, 16-bit integers or floats")
    if array.dtype.kind in "ui" and array.dtype != np.uint8:
        array = array.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(array[..., :3].transpose(2, 0, 1)))


def convert_channels(batch: torch.Tensor, mode: str) -> torch.Tensor:
    """Give a batch ``(..., C, H, W)`` the channels of ``mode`` as PIL's ``convert`` would.

    Matching channels pass unchanged; 1 -> 3 replicates (any dtype); 3 -> 1 is PIL's fixed-point
    luma, defined for uint8 data only (float or 16-bit colour under grey statistics is an error:
    no conversion would match what was measured).
    """
    import torch

    if check_mode(mode) == BANDS:  # every band as it is
        return batch
    channels = CHANNELS[mode]
    have = batch.shape[-3] if batch.ndim >= 3 else None
    if have == channels:
        return batch
    if have == 1 and channels == 3:
        return batch.expand(*batch.shape[:-3], 3, *batch.shape[-2:])
    if have == 3 and channels == 1 and batch.dtype == torch.uint8:
        return luma(batch)
    raise ChannelMismatchError(
        f"image has shape {tuple(batch.shape)} ({batch.dtype}) but the statistics are for {channels} "
        f"channel(s) (mode {mode}); expected (..., {channels}, H, W)"
        + (" or uint8 RGB, which is converted to luma" if channels == 1 else "")
    )


LUMA_SLICE_VALUES = 1 << 18  # pixels converted at a time (1 MiB of int32), not the whole image


def luma(batch: torch.Tensor) -> torch.Tensor:
    """PIL's ``convert("L")`` of uint8 RGB ``(..., 3, H, W)``: ``(19595 R + 38470 G + 7471 B +
    32768) >> 16`` per pixel, bit for bit, into a new ``(..., 1, H, W)`` uint8 tensor.

    Rows are converted a slice at a time (about :data:`LUMA_SLICE_VALUES` pixels), so the int32
    arithmetic costs a few MB whatever the image's size: the peak is the RGB input and the
    output, 4 bytes per pixel, where converting the whole image at once took over 40."""
    import torch

    height, width = batch.shape[-2:]
    out = torch.empty((*batch.shape[:-3], 1, height, width), dtype=torch.uint8, device=batch.device)
    images = max(1, math.prod(batch.shape[:-3]))
    rows = max(1, LUMA_SLICE_VALUES // max(1, images * width))
    red, green, blue = LUMA_WEIGHTS
    for top in range(0, height, rows):
        part = batch[..., top : top + rows, :]
        acc = part[..., 0, :, :].to(torch.int32).mul_(red)
        acc.add_(part[..., 1, :, :].to(torch.int32), alpha=green)
        acc.add_(part[..., 2, :, :].to(torch.int32), alpha=blue)
        acc.add_(1 << (LUMA_SHIFT - 1)).bitwise_right_shift_(LUMA_SHIFT)
        out[..., 0, top : top + rows, :].copy_(acc)
    return out
