"""Decoders: an image file's bytes -> the pixels to reduce, by :mod:`prep.pixels`' rule.

A decoder is a picklable callable ``decoder(fp, mode)`` (``fp`` a binary file object) that
returns either an :class:`EightBitHistogram` (an 8-bit image already reduced to per-channel
counts, the cheapest exact form) or an :class:`ImageArray` (``(C, H, W)`` values and their
pixel max). Workers take the decoder as torchvision's ``ImageFolder`` takes a ``loader``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Protocol

import numpy as np
from PIL import Image

from .pixels import is_eight_bit, to_array


@dataclass(frozen=True)
class EightBitHistogram:
    """PIL's flat per-channel histogram of an 8-bit image: ``C * 256`` counts, and its size."""

    counts: list[int]
    size: tuple[int, int] = (0, 0)  # width, height
    cross: list[list[int]] | None = None  # raw sums of x_i * x_j per channel pair, when asked for


@dataclass(frozen=True)
class ImageArray:
    """One image ``(C, H, W)`` and the pixel max its values are divided by; ``C`` may be 1 for a
    grey image measured in RGB (the same values in every channel)."""

    array: np.ndarray
    pixel_max: float


class Decoder(Protocol):
    name: str

    def __call__(self, fp: IO[bytes], mode: str) -> EightBitHistogram | ImageArray: ...


class PILDecoder:
    """``Image.open(fp)``, then ``convert(mode)`` (``ImageFolder``'s loader) for 8-bit images.

    8-bit images are returned as PIL's own ``histogram()`` of the converted image, which is
    exact and costs a fraction of the decode; 16-bit and float images as arrays. With
    ``covariance`` an 8-bit image also carries its raw cross sums, exactly, from PIL as well:
    ``sum(x_i x_j) = (sum(x_i**2) + sum(x_j**2) - sum((x_i - x_j)**2)) / 2``, where the last sum
    comes from the histogram of ``ImageChops.difference`` (``|x_i - x_j|``, 8-bit, exact).
    """

    name = "pil"

    def __init__(self, covariance: bool = False) -> None:
        self.covariance = covariance

    def __call__(self, fp: IO[bytes], mode: str) -> EightBitHistogram | ImageArray:
        with Image.open(fp) as img:
            if is_eight_bit(img):
                converted = img if img.mode == mode else img.convert(mode)
                counts = converted.histogram()
                cross = _cross_sums(converted, counts) if self.covariance else None
                return EightBitHistogram(counts, img.size, cross)
            return ImageArray(*to_array(img, mode, replicate=False))

    def __repr__(self) -> str:
        return f"PILDecoder(covariance={self.covariance})"


_SQUARES = np.arange(256, dtype=np.int64) ** 2


def _cross_sums(img: Image.Image, counts: list[int]) -> list[list[int]]:
    """Raw ``sum(x_i x_j)`` per channel pair of an 8-bit image, from histograms alone."""
    from PIL import ImageChops

    bands = img.split()
    squares = [int(v) for v in np.asarray(counts, np.int64).reshape(len(bands), 256) @ _SQUARES]
    out = [[0] * len(bands) for _ in bands]
    for i in range(len(bands)):
        out[i][i] = squares[i]
        for j in range(i + 1, len(bands)):
            diff = int(np.asarray(ImageChops.difference(bands[i], bands[j]).histogram(), np.int64) @ _SQUARES)
            out[i][j] = out[j][i] = (squares[i] + squares[j] - diff) // 2
    return out


class TransformedDecoder:
    """PIL's pixels passed through a transform before they are reduced (:mod:`prep.preprocess`):
    arrays, never histograms, since the transform changes the pixels."""

    name = "pil"

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, fp: IO[bytes], mode: str) -> ImageArray:
        import torch

        from .preprocess import apply_transform

        with Image.open(fp) as img:
            array, pixel_max = to_array(img, mode, replicate=False)
        return ImageArray(apply_transform(self.transform, torch.from_numpy(array)).numpy(), pixel_max)

    def __repr__(self) -> str:
        return f"TransformedDecoder({self.transform!r})"


DECODERS: dict[str, Decoder] = {"pil": PILDecoder(), "pil+covariance": PILDecoder(covariance=True)}
