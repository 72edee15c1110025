"""Transform pipelines built from measured statistics (torchvision ``transforms.v2``).

Every pipeline starts with :class:`ConvertPixels`, the same pixel conversion prep used when
measuring (:mod:`prep.pixels`), then converts to float32 in unit scale, then applies one
affine map per channel ``c``:

* standardization: ``y = (x - mean[c]) / std[c]``
* min-max scaling: ``y = a + (x - min[c]) * (b - a) / (max[c] - min[c])`` for ``feature_range=(a, b)``
* inverse standardization: ``x = y * std[c] + mean[c]``

Inputs: a PIL image, or a uint8 / float tensor ``(..., C, H, W)`` whose ``C`` matches the
statistics. A zero ``std`` (or range) is refused unless ``eps`` is given, in which case
channels below ``eps`` are clamped up to it.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from .errors import ChannelMismatchError, DegenerateStatsError
from .pixels import CHANNELS, check_mode, to_array


class ConvertPixels(v2.Transform):
    """PIL images -> ``tv_tensors.Image`` by prep's pixel rule; tensors pass after a channel check.

    8-bit PIL images become uint8 ``(C, H, W)``, 16-bit ones float32 divided by 65535, ``F``
    ones float32 as they are, so ``ToDtype(float32, scale=True)`` afterwards gives unit scale.
    """

    def __init__(self, mode: str) -> None:
        super().__init__()
        self.mode = check_mode(mode)
        self.channels = CHANNELS[mode]

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, Image.Image):
            array, pixel_max = to_array(inpt, self.mode)
            tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
            if tensor.dtype != torch.uint8:
                tensor = tensor.to(torch.float32) / pixel_max
            return tv_tensors.Image(tensor)
        if isinstance(inpt, torch.Tensor) and not isinstance(inpt, (tv_tensors.BoundingBoxes, tv_tensors.Mask)):
            if inpt.ndim < 3 or inpt.shape[-3] != self.channels:
                raise ChannelMismatchError(
                    f"image has shape {tuple(inpt.shape)} but the statistics are for {self.channels} "
                    f"channel(s) (mode {self.mode}); expected (..., {self.channels}, H, W)"
                )
        return inpt

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}"


def _checked_scale(values: Sequence[float], what: str, eps: float | None) -> list[float]:
    if eps is not None:
        if not eps > 0:
            raise ValueError(f"eps must be positive; got {eps}")
        return [max(float(v), eps) for v in values]
    zero = [c for c, v in enumerate(values) if not v > 0]
    if zero:
        raise DegenerateStatsError(
            f"{what} is 0 for channel(s) {zero}: dividing by it is undefined; pass eps=... to clamp it"
        )
    return [float(v) for v in values]


def _prefix(mode: str) -> list:
    return [ConvertPixels(mode), v2.ToDtype(torch.float32, scale=True)]


def normalize_pipeline(mean: Sequence[float], std: Sequence[float], mode: str, eps: float | None = None) -> v2.Compose:
    """``Compose([ConvertPixels(mode), ToDtype(float32, scale=True), Normalize(mean, std)])``."""
    std = _checked_scale(std, "std", eps)
    return v2.Compose([*_prefix(mode), v2.Normalize(mean=[float(m) for m in mean], std=std)])


def minmax_pipeline(vmin: Sequence[float], vmax: Sequence[float], mode: str,
                    feature_range: tuple[float, float] = (0.0, 1.0), eps: float | None = None) -> v2.Compose:
    """Map each channel's ``[min, max]`` onto ``feature_range``.

    The range is computed in float32 exactly as ``Normalize`` will subtract, so the dataset's
    min and max land on exactly 0 and 1 for the default range.
    """
    low, high = (float(v) for v in feature_range)
    if not high > low:
        raise ValueError(f"feature_range must be increasing; got {feature_range}")
    lo32 = torch.tensor(list(vmin), dtype=torch.float32)
    span = (torch.tensor(list(vmax), dtype=torch.float32) - lo32).tolist()
    steps = [*_prefix(mode), v2.Normalize(mean=lo32.tolist(), std=_checked_scale(span, "max - min", eps))]
    if (low, high) != (0.0, 1.0):
        width = high - low
        steps.append(v2.Normalize(mean=[-low / width] * len(span), std=[1.0 / width] * len(span)))
    return v2.Compose(steps)


def denormalize_pipeline(mean: Sequence[float], std: Sequence[float], eps: float | None = None) -> v2.Compose:
    """Invert :func:`normalize_pipeline` on float tensors: ``x = y * std + mean`` (unit scale)."""
    std = _checked_scale(std, "std", eps)
    return v2.Compose([v2.Normalize(mean=[-m / s for m, s in zip(mean, std)], std=[1.0 / s for s in std])])
