"""The guard ``--center-crop`` puts before ``CenterCrop``: an image smaller than the crop is refused."""

from __future__ import annotations

from typing import Any

from torchvision.transforms import v2

from prep.errors import SmallImageError


class NoPadding(v2.Transform):
    """Refuse an image smaller than the crop that follows: ``CenterCrop`` would pad it with zeros
    and the statistics would count the padding as pixels."""

    def __init__(self, size: list[int]) -> None:
        super().__init__()
        self.size = list(size)

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        height, width = (self.size * 2)[:2]
        if inpt.shape[-2] < height or inpt.shape[-1] < width:
            raise SmallImageError(
                f"an image of {inpt.shape[-2]}x{inpt.shape[-1]} is smaller than the center crop "
                f"{height}x{width} (CenterCrop would pad it with zeros); resize (--resize) it first"
            )
        return inpt

    _transform = transform

    def extra_repr(self) -> str:
        return f"size={self.size}"
