"""Transform pipelines built from measured statistics (torchvision ``transforms.v2``).

Every pipeline starts with :class:`ConvertPixels`, the same pixel rule prep used when measuring
(:mod:`prep.pixels`), then converts to float32 in unit scale, then applies one affine map per
channel ``c``:

* standardization: ``y = (x - mean[c]) / std[c]``
* min-max scaling: ``y = a + (b - a) * (x - min[c]) / (max[c] - min[c])`` for ``feature_range=(a, b)``;
  the measured ``min`` and ``max`` map to exactly ``a`` and ``b`` in float32
* inverse standardization: ``x = y * std[c] + mean[c]``

Inputs: a PIL image, a tensor ``(..., C, H, W)`` (uint8, 16-bit integers or float, by the pixel
rule), or a NumPy image ``(H, W)`` / ``(H, W, C)`` as OpenCV and albumentations hold them. A zero
``std`` (or range) is refused unless ``eps`` is given, in which case channels below ``eps`` are
clamped up to it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from prep.errors import DegenerateStatsError, OptionError
from prep.pixels import (
    BANDS,
    CHANNELS,
    EIGHT_BIT_MAX,
    SIXTEEN_BIT_MAX,
    check_mode,
    convert_channels,
    from_hwc_array,
    to_array,
    to_unit_float,
)

# Inputs that are not images pass every prep transform untouched (KeyPoints exists in newer torchvision).
NOT_IMAGES = tuple(getattr(tv_tensors, n) for n in ("BoundingBoxes", "Mask", "KeyPoints") if hasattr(tv_tensors, n))


class ConvertPixels(v2.Transform):
    """Any image -> ``(C, H, W)`` tensor by prep's pixel rule, with the channels of ``mode``.

    PIL images are converted as when measuring (``img.convert(mode)`` for 8-bit ones), NumPy
    ``(H, W[, C])`` images like a PIL image of the same channels (alpha dropped). uint8 results
    stay uint8, so ``ToDtype(float32, scale=True)`` afterwards gives unit scale; 16-bit data
    becomes float32 divided by 65535; float data passes as it is. Tensors with the other
    channel count are converted as PIL converts: grey replicated, uint8 RGB to luma.
    """

    _transformed_types = (torch.Tensor, Image.Image, np.ndarray)

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.channels = CHANNELS.get(mode)  # None: the bands mode keeps the data's channels

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if self.mode == BANDS:
            return _as_bands(inpt)
        if isinstance(inpt, Image.Image):
            array, _pixel_max = to_array(inpt, self.mode)
            tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
            return tv_tensors.Image(_unit_unless_uint8(tensor))
        if isinstance(inpt, np.ndarray):
            return tv_tensors.Image(_unit_unless_uint8(convert_channels(from_hwc_array(inpt), self.mode)))
        if isinstance(inpt, NOT_IMAGES):
            return inpt
        out = _unit_unless_uint8(convert_channels(inpt, self.mode))
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    _transform = transform  # the name torchvision < 0.21 calls

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def _as_bands(inpt: Any) -> Any:
    """The bands mode's input as a ``(C, H, W)`` tensor of its own values: tensors (what torchgeo,
    MONAI and rasterio-based loaders give) pass as they are, NumPy arrays are read as ``(C, H, W)``
    (rasterio's ``read()``, tifffile's planar arrays) or ``(H, W)``, PIL images as stored."""
    if isinstance(inpt, NOT_IMAGES):
        return inpt
    if isinstance(inpt, Image.Image):
        array = np.asarray(inpt)
        array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
        return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)))
    if isinstance(inpt, np.ndarray):
        array = inpt[None] if inpt.ndim == 2 else inpt
        if array.dtype == np.uint16 or array.dtype == np.uint32:
            array = array.astype(np.int64)  # torch reads these dtypes but few of its ops do
        return tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(array)))
    return inpt


def _unit_unless_uint8(tensor: torch.Tensor) -> torch.Tensor:
    return tensor if tensor.dtype == torch.uint8 else to_unit_float(tensor)


class Rescale(v2.Transform):
    """``y = x * scale + offset`` on float image tensors (the last step of ``minmax`` ranges)."""

    def __init__(self, scale: float, offset: float) -> None:
        super().__init__()
        self.scale, self.offset = float(scale), float(offset)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, NOT_IMAGES):
            return inpt
        out = inpt.as_subclass(torch.Tensor) * self.scale + self.offset
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    _transform = transform

    def extra_repr(self) -> str:
        return f"scale={self.scale}, offset={self.offset}"


class Lighting(v2.Transform):
    """AlexNet's PCA lighting noise (Krizhevsky et al., 2012) on float images in unit scale.

    Each call draws ``alpha ~ N(0, alphastd)`` for each principal axis and adds the same colour
    shift to every pixel::

        x + eigvec @ (alpha * eigval)

    with ``eigval`` the covariance's eigenvalues and ``eigvec`` its eigenvectors as columns
    (:attr:`prep.Stats.pca`). ``alphastd=0`` leaves images unchanged.
    """

    def __init__(self, eigval, eigvec, alphastd: float = 0.1) -> None:
        super().__init__()
        self.eigval = torch.tensor(eigval, dtype=torch.float32)
        self.eigvec = torch.tensor(eigvec, dtype=torch.float32)
        self.alphastd = float(alphastd)
        if not (math.isfinite(self.alphastd) and self.alphastd >= 0):
            raise OptionError(f"alphastd must be a finite number >= 0; got {alphastd}")

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        alpha = torch.randn(len(self.eigval)) * self.alphastd
        return {"shift": self.eigvec @ (alpha * self.eigval)}

    _get_params = make_params

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, NOT_IMAGES):
            return inpt
        if not isinstance(inpt, torch.Tensor) or not inpt.is_floating_point():
            raise TypeError(
                f"Lighting works on float image tensors in unit scale; got {type(inpt).__name__}: "
                "put it after ToDtype(scale=True)"
            )
        image = inpt.as_subclass(torch.Tensor)
        if not image.is_floating_point():
            raise TypeError("Lighting works on float images in unit scale: put it after ToDtype(scale=True)")
        shift = params["shift"].to(image.device, image.dtype).view(-1, 1, 1)
        out = image + shift
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    _transform = transform

    def extra_repr(self) -> str:
        return f"eigval={self.eigval.tolist()}, alphastd={self.alphastd}"


class Clip(v2.Transform):
    """``y = min(max(x, low), high)`` on float image tensors (robust min-max scaling, percentile
    clipping); ``low`` and ``high`` are numbers, or one per channel ``(C, ...)``."""

    def __init__(self, low: float | Sequence[float], high: float | Sequence[float]) -> None:
        super().__init__()
        self.per_channel = isinstance(low, Sequence)
        self.low = [float(v) for v in low] if isinstance(low, Sequence) else float(low)
        self.high = [float(v) for v in high] if isinstance(high, Sequence) else float(high)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, NOT_IMAGES):
            return inpt
        image = inpt.as_subclass(torch.Tensor)
        if self.per_channel:
            shape = (-1, 1, 1)  # channels before H and W
            low = torch.tensor(self.low, dtype=image.dtype, device=image.device).view(shape)
            high = torch.tensor(self.high, dtype=image.dtype, device=image.device).view(shape)
            out = torch.minimum(torch.maximum(image, low), high)
        else:
            out = image.clamp(self.low, self.high)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    _transform = transform

    def extra_repr(self) -> str:
        return f"low={self.low}, high={self.high}"


def _checked_scale(values: Sequence[float], what: str, eps: float | None) -> list[float]:
    if eps is not None:
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
            raise OptionError(f"eps must be a positive number; got {eps!r}")
        return [max(float(v), eps) for v in values]
    zero = [c for c, v in enumerate(values) if not v > 0]
    if zero:
        raise DegenerateStatsError(
            f"{what} is 0 for channel(s) {zero}: dividing by it is undefined; pass eps=... to clamp it"
        )
    return [float(v) for v in values]


def _prefix(mode: str, units: str = "unit") -> list:
    return [ConvertPixels(mode), v2.ToDtype(torch.float32, scale=units != "raw")]


def normalize_pipeline(
    mean: Sequence[float],
    std: Sequence[float],
    mode: str,
    eps: float | None = None,
    units: str = "unit",
    clip: tuple[Sequence[float], Sequence[float]] | None = None,
) -> v2.Compose:
    """``Compose([ConvertPixels(mode), ToDtype(float32, scale=True), Normalize(mean, std)])``; in
    ``units="raw"`` (the bands mode) ``ToDtype(float32, scale=False)``: the data's own values.
    ``clip=(low, high)`` (per channel) clamps the values before ``Normalize``."""
    std = _checked_scale(std, "std", eps)
    steps = [*_prefix(mode, units)]
    if clip is not None:
        steps.append(Clip(list(clip[0]), list(clip[1])))
    return v2.Compose([*steps, v2.Normalize(mean=[float(m) for m in mean], std=std)])


def unit_float32(value: float, pixel_max: float) -> float:
    """The float32 value the pipeline's first steps give the unit-scale ``value`` of data with
    ``pixel_max``: computed by the same operations, so it equals what images turn into."""
    if pixel_max == EIGHT_BIT_MAX and abs(value * EIGHT_BIT_MAX - round(value * EIGHT_BIT_MAX)) < 1e-9:
        raw = torch.tensor([round(value * EIGHT_BIT_MAX)], dtype=torch.uint8)
        return v2.functional.to_dtype(raw, torch.float32, scale=True).item()
    if pixel_max == SIXTEEN_BIT_MAX and abs(value * SIXTEEN_BIT_MAX - round(value * SIXTEEN_BIT_MAX)) < 1e-9:
        return to_unit_float(torch.tensor([round(value * SIXTEEN_BIT_MAX)], dtype=torch.int32)).item()
    return torch.tensor([value], dtype=torch.float32).item()


def minmax_pipeline(
    vmin: Sequence[float],
    vmax: Sequence[float],
    mode: str,
    feature_range: tuple[float, float] = (0.0, 1.0),
    eps: float | None = None,
    pixel_max: float = EIGHT_BIT_MAX,
    clip: bool = False,
) -> v2.Compose:
    """Map each channel's ``[min, max]`` onto ``feature_range``, exactly at both ends.

    The offset and range are the float32 values the measured extremes become in this very
    pipeline (:func:`unit_float32`), so ``Normalize`` subtracts a value equal to the minimum
    (giving 0) and divides the maximum's difference by itself (giving 1); a range other than
    ``(0, 1)`` is then ``y * (b - a) + a``, which is exact at 0 and 1. ``clip`` clamps values
    outside ``[min, max]`` (robust scaling between percentiles) to the ends of the range.
    """
    low, high = (float(v) for v in feature_range)
    if not high > low:
        raise OptionError(f"feature_range must be increasing; got {feature_range}")
    lo32 = torch.tensor([unit_float32(v, pixel_max) for v in vmin], dtype=torch.float32)
    hi32 = torch.tensor([unit_float32(v, pixel_max) for v in vmax], dtype=torch.float32)
    span = (hi32 - lo32).tolist()
    steps = [*_prefix(mode), v2.Normalize(mean=lo32.tolist(), std=_checked_scale(span, "max - min", eps))]
    if clip:
        steps.append(Clip(0.0, 1.0))
    if (low, high) != (0.0, 1.0):
        steps.append(Rescale(high - low, low))
    return v2.Compose(steps)


def denormalize_pipeline(mean: Sequence[float], std: Sequence[float], eps: float | None = None) -> v2.Compose:
    """Invert :func:`normalize_pipeline` on float tensors: ``x = y * std + mean`` (unit scale)."""
    std = _checked_scale(std, "std", eps)
    return Pipeline([v2.Normalize(mean=[-m / s for m, s in zip(mean, std)], std=[1.0 / s for s in std])])


class Pipeline(v2.Compose):
    """``v2.Compose`` that prints one transform a line, however many it holds."""

    def __repr__(self) -> str:
        lines = "".join(f"    {t!r}\n" for t in self.transforms)
        return f"Compose(\n{lines})"
