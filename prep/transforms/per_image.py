"""Per-image normalization: each image standardized by its own statistics.

prep's dataset statistics are the axes of batch normalization: per channel ``c``, over every
image ``n`` and pixel ``(h, w)`` of the dataset, and :meth:`prep.stats.file.Stats.normalize` applies
them. The other normalization axes describe one image at a time, so they are transforms, not
dataset statistics. For an image ``x`` of shape ``(C, H, W)`` in unit scale and a set ``S`` of
its elements:

    ``mu = mean_S(x)``,  ``var = mean_S((x - mu) ** 2)`` (population variance, ddof 0),
    ``y = (x - mu) / sqrt(var + eps)``

==============  ===========================================  ==========================================
``axes``        ``S`` (one ``mu, var`` per ...)              the same as (no affine)
==============  ===========================================  ==========================================
``"layer"``     all of ``(C, H, W)`` (per image)             ``F.layer_norm(x, x.shape[-3:], eps=eps)``
``"instance"``  ``(H, W)`` of one channel (per image and     ``F.instance_norm(x, eps=eps)``
                channel)
``"group"``     ``(C // G, H, W)``: ``G`` groups of          ``F.group_norm(x, G, eps=eps)``
                consecutive channels (per image and group)
(batch)         ``(N, H, W)`` of one channel over the        ``Stats.normalize()``; ``BatchNorm2d`` in
                dataset                                      training mode on the dataset as one batch
==============  ===========================================  ==========================================

``group`` with ``G = 1`` is ``layer`` and with ``G = C`` is ``instance``. There is no learned
scale and shift (``gamma``, ``beta``): those belong to the model.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from prep.errors import OptionError
from prep.fields import is_int
from prep.pixels import check_mode, from_hwc_array, native_mode, to_unit_float
from prep.transforms.normalize import NOT_IMAGES, ConvertPixels

AXES = ("layer", "instance", "group")


def per_image_normalize(
    x: torch.Tensor, axes: str = "layer", groups: int | None = None, eps: float = 1e-5
) -> torch.Tensor:
    """Standardize each image of ``x`` ``(..., C, H, W)`` by its own mean and variance.

    ``y = (x - mu) / sqrt(var + eps)``, with ``mu`` and the population variance ``var`` taken
    over ``(C, H, W)`` for ``axes="layer"``, over ``(H, W)`` per channel for ``"instance"``, and
    over ``(C // groups, H, W)`` per group of consecutive channels for ``"group"``.

    uint8 input is divided by 255 and other integer input (16-bit values) by 65535 first, so
    the statistics are in unit scale; float input is taken as it is. The moments are computed in
    float64; the result is float32 (or the input's float dtype when it has more bits).

    >>> x = torch.tensor([[[0, 255], [0, 255]]], dtype=torch.uint8)   # (1, 2, 2): mean 0.5, std 0.5
    >>> per_image_normalize(x, "layer", eps=0.0).tolist()
    [[[-1.0, 1.0], [-1.0, 1.0]]]
    """
    groups = _check(x, axes, groups, eps)
    unit = to_unit_float(x) if not x.dtype.is_floating_point else x
    out_dtype = torch.promote_types(unit.dtype, torch.float32)
    c, h, w = unit.shape[-3:]
    grouped = unit.to(torch.float64).reshape(*unit.shape[:-3], groups, (c // groups) * h * w)
    var, mu = torch.var_mean(grouped, dim=-1, correction=0, keepdim=True)
    y = (grouped - mu) / torch.sqrt(var + eps)
    return y.reshape(unit.shape).to(out_dtype)


def _check(x: Any, axes: str, groups: int | None, eps: float) -> int:
    """The number of groups the axes split the channels into, after checking every argument."""
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise OptionError(f"per-image normalization needs a tensor (..., C, H, W); got {shape}")
    if axes not in AXES:
        raise OptionError(f"axes must be one of {', '.join(AXES)}; got {axes!r}")
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps >= 0:
        raise OptionError(f"eps must be a non-negative number; got {eps!r}")
    channels = x.shape[-3]
    if axes != "group":
        if groups is not None:
            raise OptionError(f"groups is for axes='group' only; got groups={groups!r} with axes={axes!r}")
        return 1 if axes == "layer" else channels
    if groups is None or not is_int(groups) or groups < 1:
        raise OptionError(f"axes='group' needs groups=G, a positive integer; got {groups!r}")
    if channels % groups:
        raise OptionError(f"groups={groups} does not divide the {channels} channels of the image")
    return groups


class PerImageNormalize(v2.Transform):
    """torchvision v2 transform: :func:`per_image_normalize` on each image.

    Takes a PIL image, a NumPy ``(H, W[, C])`` image or a tensor ``(..., C, H, W)`` (uint8,
    16-bit integers or float in unit scale) and returns a float tensor. With ``mode`` (``RGB``
    or ``L``) the image is first given those channels by prep's pixel rule
    (:class:`~prep.transforms.normalize.ConvertPixels`, as prep's pipelines do); without it PIL images keep
    their own channels (``L`` for grey, 16-bit and float images, else ``RGB``) and tensors and
    arrays are taken as they are. Bounding boxes and masks pass unchanged.

    ``y = (x - mu) / sqrt(var + eps)`` over ``(C, H, W)`` (``"layer"``), ``(H, W)`` per channel
    (``"instance"``) or ``(C // groups, H, W)`` per group (``"group"``).
    """

    _transformed_types = (torch.Tensor, Image.Image, np.ndarray)

    def __init__(self, axes: str = "layer", groups: int | None = None, eps: float = 1e-5, mode: str | None = None):
        super().__init__()
        if axes not in AXES:
            raise OptionError(f"axes must be one of {', '.join(AXES)}; got {axes!r}")
        self.axes, self.groups, self.eps = axes, groups, eps
        self.mode = None if mode is None else check_mode(mode)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, NOT_IMAGES):
            return inpt
        if isinstance(inpt, Image.Image):
            inpt = ConvertPixels(self.mode or native_mode(inpt)).transform(inpt, params)
        elif self.mode is not None:
            inpt = ConvertPixels(self.mode).transform(inpt, params)
        elif isinstance(inpt, np.ndarray):
            inpt = tv_tensors.Image(from_hwc_array(inpt))
        out = per_image_normalize(inpt.as_subclass(torch.Tensor), self.axes, self.groups, self.eps)
        return tv_tensors.wrap(out, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else out

    _transform = transform  # the name torchvision < 0.21 calls

    def extra_repr(self) -> str:
        groups = f", groups={self.groups}" if self.groups is not None else ""
        mode = f", mode={self.mode!r}" if self.mode is not None else ""
        return f"axes={self.axes!r}{groups}, eps={self.eps}{mode}"
