"""What the model sees: a transform applied to every image before it is measured.

Users resize and crop before normalizing (``Resize(256)``, ``CenterCrop(224)``), and resizing
with antialiasing changes the std, so ``prep stats --resize 256 --center-crop 224`` measures
the images after torchvision's own v2 ``Resize`` and ``CenterCrop``; from Python,
``compute_stats(..., transform=...)`` takes any v2 transform that keeps the pixel dtype.

8-bit images enter the transform as uint8 tensors ``(C, H, W)`` (or batches ``(N, C, H, W)``
of equal-sized images), 16-bit ones as float32 tensors of their raw values (0..65535), float
ones as they are; the transform must return the dtype it was given. The transform's ``repr``
is recorded in the stats file under ``options.transform`` and is part of the reuse check.
"""

from __future__ import annotations

import contextlib
import pickle
import re
from typing import TYPE_CHECKING, Any

from prep.errors import OptionError, PrepError, SmallImageError
from prep.fields import is_int
from prep.pixels import checked_sixteen_bit

if TYPE_CHECKING:
    import torch


def parse_size(text: str | int | list | tuple, name: str) -> list[int]:
    """``256`` -> ``[256]`` (the shorter side, as ``Resize(256)``); ``"224x192"`` or ``"224,192"``
    -> ``[224, 192]`` (height, width)."""
    if isinstance(text, int) and not isinstance(text, bool):
        values = [text]
    elif isinstance(text, list | tuple):
        values = list(text)
    elif isinstance(text, str) and re.fullmatch(r"\s*\d{1,6}\s*([x,]\s*\d{1,6}\s*)?", text):
        values = [int(v) for v in re.split(r"[x,]", text)]
    else:
        raise OptionError(f"{name} must be a size N or HxW; got {text!r}")
    if not 1 <= len(values) <= 2 or not all(is_int(v) and 1 <= v <= 100_000 for v in values):
        raise OptionError(f"{name} must be a size N or HxW with sides from 1 to 100000; got {text!r}")
    return values


def measurement_transform(resize: Any = None, center_crop: Any = None):
    """``v2.Compose([Resize(resize, antialias=True), CenterCrop(center_crop)])`` for the options
    given, or None when neither is."""
    if resize is None and center_crop is None:
        return None
    return MeasurementTransform(resize, center_crop).build()


class MeasurementTransform:
    """``--resize`` / ``--center-crop`` as the command line holds them until a pass needs them:
    what the stats file records of them (:func:`describe_transform`) comes without importing
    torch, so deciding that ``-o`` is up to date does not; the transform itself
    (:func:`measurement_transform`'s) is built on first use, and calling this object applies it.

    The description is prep's own, written out here (it equals torchvision's ``repr`` of the
    transform today, so files written before read the same), and the built transform carries it:
    a torchvision release that prints its transforms differently does not make files stale.
    """

    def __init__(self, resize: Any = None, center_crop: Any = None) -> None:
        self.resize = None if resize is None else parse_size(resize, "resize (--resize)")
        self.center_crop = None if center_crop is None else parse_size(center_crop, "center_crop (--center-crop)")
        if self.resize is None and self.center_crop is None:
            raise OptionError("a measuring transform needs resize or center_crop")
        self._built: Any = None

    @property
    def prep_description(self) -> str:
        steps = []
        if self.resize is not None:
            steps.append(f"Resize(size={self.resize}, interpolation=bilinear, antialias=True)")
        if self.center_crop is not None:
            crop = self.center_crop  # CenterCrop(N) holds (N, N), CenterCrop([H, W]) the list
            steps += [f"NoPadding(size={crop})", f"CenterCrop(size={(crop[0], crop[0]) if len(crop) == 1 else crop})"]
        # torch prints a module whose description is one line inline, several on lines of their own
        return f"Compose( {steps[0]})" if len(steps) == 1 else f"Compose( {' '.join(steps)} )"

    def build(self) -> Any:
        """The torchvision v2 transform (built once), carrying :attr:`prep_description`."""
        if self._built is None:
            from torchvision.transforms import v2

            from prep.transforms.no_padding import NoPadding

            steps: list[Any] = []
            if self.resize is not None:
                steps.append(v2.Resize(self.resize, antialias=True))
            if self.center_crop is not None:
                steps += [NoPadding(self.center_crop), v2.CenterCrop(self.center_crop)]
            built = v2.Compose(steps)
            built.prep_description = self.prep_description
            self._built = built
        return self._built

    def __call__(self, inpt: Any) -> Any:
        return self.build()(inpt)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_built": None}  # workers build their own

    def __repr__(self) -> str:
        return self.prep_description


def measurement_spec(resize: Any = None, center_crop: Any = None) -> MeasurementTransform | None:
    """The command line's ``--resize`` / ``--center-crop`` (None when neither is given), not built
    yet: see :class:`MeasurementTransform`."""
    if resize is None and center_crop is None:
        return None
    return MeasurementTransform(resize, center_crop)


def built_transform(transform: Any) -> Any:
    """``transform``, or the torchvision transform a :class:`MeasurementTransform` stands for."""
    return transform.build() if isinstance(transform, MeasurementTransform) else transform


def describe_transform(transform: Any) -> str | None:
    """The one-line description of ``transform`` that the stats file records (None for none): a
    measuring transform's own (:class:`MeasurementTransform`), else its one-line ``repr``."""
    if transform is None:
        return None
    described = getattr(transform, "prep_description", None)
    return described if isinstance(described, str) else " ".join(repr(transform).split())


def is_picklable(transform: Any) -> bool:
    """Whether ``transform`` can be sent to decoding processes."""
    try:
        pickle.dumps(transform)
    except Exception:  # pickling raises many types for lambdas, closures, open handles
        return False
    return True


def check_transform(transform: Any, channels: int) -> None:
    """Raise :class:`OptionError` before the pass when ``transform`` fails on a small uint8 image."""
    import torch

    if not callable(transform):
        raise OptionError(f"transform must be callable; got a {type(transform).__name__}")
    with contextlib.suppress(SmallImageError):  # a crop larger than the probe: the real images decide
        apply_transform(transform, torch.zeros((channels, 300, 300), dtype=torch.uint8))


def apply_transform(transform: Any, pixels: torch.Tensor) -> torch.Tensor:
    """``transform(pixels)`` with 16-bit integers passed as float32 raw values; the result must
    keep the dtype and channel count it was given."""
    import torch

    if not pixels.dtype.is_floating_point and pixels.dtype != torch.uint8:
        pixels = checked_sixteen_bit(pixels).to(torch.float32)  # exact: 16-bit values fit float32
    try:
        out = transform(pixels)
    except PrepError:
        raise
    except Exception as exc:  # a user's transform may raise anything; name it, not a traceback
        raise OptionError(f"transform {describe_transform(transform)} failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or out.dtype != pixels.dtype or out.shape[-3] != pixels.shape[-3]:
        got = f"{out.dtype} {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise OptionError(
            f"transform {describe_transform(transform)} must return a {pixels.dtype} tensor with "
            f"{pixels.shape[-3]} channel(s), as it was given; got {got}"
        )
    return out.as_subclass(torch.Tensor)
