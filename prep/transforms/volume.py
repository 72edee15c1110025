"""Standardizing volumes ``(C, X, Y, Z)``: :func:`normalize_volume` and :class:`NormalizeVolume`.

Per channel ``c``, in float32::

    y = (clamp(x, low[c], high[c]) - mean[c]) / std[c]

on a tensor whose first axis is the channel and whose other axes are spatial, any number of
them (MONAI's and nnU-Net's channel-first volumes; a ``(C, H, W)`` image works too). Without
``low``/``high`` nothing is clamped. The constants are float32 and the steps are those of
nnU-Net's ``CTNormalization.run`` (``astype(float32)``, ``np.clip``, ``-= mean``,
``/= max(std, 1e-8)``), so :meth:`prep.Stats.ct_normalize` gives its very numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from prep.errors import DegenerateStatsError

NNUNET_STD_FLOOR = 1e-8  # nnU-Net divides by max(std, 1e-8)


def normalize_volume(
    volume: torch.Tensor | np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    low: Sequence[float] | None = None,
    high: Sequence[float] | None = None,
) -> torch.Tensor:
    """``(clamp(x, low, high) - mean) / std`` per channel of a ``(C, ...)`` volume, in float32."""
    x = torch.as_tensor(volume)
    if x.ndim < 2 or x.shape[0] != len(mean):
        raise ValueError(f"expected a volume (C={len(mean)}, X, Y, Z); got shape {tuple(x.shape)}")
    out = x.to(torch.float32, copy=True)
    shape = (-1,) + (1,) * (x.ndim - 1)

    def column(values: Sequence[float]) -> torch.Tensor:
        return torch.tensor(np.asarray(values, np.float32), device=out.device).view(shape)

    if low is not None and high is not None:
        out = torch.minimum(torch.maximum(out, column(low)), column(high))
    out -= column(mean)
    out /= column(std)
    return out


class NormalizeVolume(torch.nn.Module):
    """:func:`normalize_volume` with stored constants (a transform for MONAI, torchio or torchvision
    ``Compose`` pipelines). ``std`` of 0 is refused unless ``eps`` floors it (nnU-Net: 1e-8)."""

    def __init__(
        self,
        mean: Sequence[float],
        std: Sequence[float],
        clip: tuple[Sequence[float], Sequence[float]] | None = None,
        eps: float | None = None,
    ) -> None:
        super().__init__()
        self.mean = [float(v) for v in mean]
        self.std = [max(float(v), eps) if eps is not None else float(v) for v in std]
        zero = [c for c, v in enumerate(self.std) if not v > 0]
        if zero:
            raise DegenerateStatsError(
                f"std is 0 for channel(s) {zero}: dividing by it is undefined; pass eps=... to clamp it"
            )
        self.low = None if clip is None else [float(v) for v in clip[0]]
        self.high = None if clip is None else [float(v) for v in clip[1]]

    def forward(self, volume: torch.Tensor | np.ndarray) -> torch.Tensor:
        return normalize_volume(volume, self.mean, self.std, self.low, self.high)

    def extra_repr(self) -> str:
        clip = "" if self.low is None else f", low={self.low}, high={self.high}"
        return f"mean={self.mean}, std={self.std}{clip}"
