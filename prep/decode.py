"""Decoders: an image file's bytes -> the pixels to reduce, by :mod:`prep.pixels`' rule.

A decoder is a picklable callable ``decoder(fp, mode)`` (``fp`` a binary file object) that
returns either an :class:`EightBitHistogram` (an 8-bit image already reduced to per-channel
counts, the cheapest exact form) or an :class:`ImageArray` (``(C, H, W)`` values and their
pixel max). Workers take the decoder as torchvision's ``ImageFolder`` takes a ``loader``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import IO, Protocol

import numpy as np
from PIL import Image

from .config import DECODER_CHOICES
from .errors import OptionError
from .formats import jpeg_components, read_header
from .pixels import convert_channels, is_eight_bit, to_array


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
                return _reduced(img if img.mode == mode else img.convert(mode), self.covariance)
            return ImageArray(*to_array(img, mode, replicate=False))

    def __repr__(self) -> str:
        return f"PILDecoder(covariance={self.covariance})"


def _reduced(img: Image.Image, covariance: bool, replicate: int = 1) -> EightBitHistogram:
    """The histogram (and cross sums) of an 8-bit ``RGB`` or ``L`` image; ``replicate`` 3 reads an
    ``L`` image as the same grey in three channels."""
    counts = img.histogram()
    cross = _cross_sums(img, counts) if covariance else None
    if replicate > 1:
        counts = counts * replicate
        cross = None if cross is None else [[cross[0][0]] * replicate for _ in range(replicate)]
    return EightBitHistogram(counts, img.size, cross)


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


class TorchvisionDecoder:
    """JPEG and PNG files decoded by ``torchvision.io`` (libjpeg-turbo, libpng), every other file
    by :class:`PILDecoder`; reduced by the same exact histograms.

    ``verify=True`` is ``--decoder auto``: the first file of each kind (:mod:`prep.formats`: JPEG
    frame type, components and subsampling; PNG depth, colour type and colour chunks) that a
    process meets is decoded both ways, and torchvision.io decodes that kind from then on only
    if its pixels equal PIL's ``convert(mode)`` exactly; otherwise PIL does. ``verify=False`` is
    ``--decoder torchvision``: torchvision.io's pixels for every JPEG and 8-bit PNG it reads
    (CMYK JPEGs, for one, convert to RGB by its own rule). A file torchvision.io cannot decode
    is given to PIL, so damaged files are skipped with PIL's reason under every decoder.
    """

    def __init__(self, covariance: bool = False, verify: bool = True) -> None:
        self.covariance = covariance
        self.verify = verify
        self.name = "auto" if verify else "torchvision"
        self._pil = PILDecoder(covariance)
        self._same_as_pil: dict[tuple, bool] = {}  # kind -> verdict of the check, per process

    def __call__(self, fp: IO[bytes], mode: str) -> EightBitHistogram | ImageArray:
        data = fp.read()
        kind = torchvision_kind(data)
        if kind is None or self._same_as_pil.get(kind) is False:
            return self._pil(io.BytesIO(data), mode)
        try:
            pixels = torchvision_pixels(data, kind, mode)
        except RuntimeError:  # damaged, or a variant torchvision.io does not read: PIL decides
            return self._pil(io.BytesIO(data), mode)
        if self.verify and kind not in self._same_as_pil:
            with Image.open(io.BytesIO(data)) as img:
                expected = to_array(img, mode)[0] if is_eight_bit(img) else None
            self._same_as_pil[kind] = expected is not None and np.array_equal(expected, pixels.numpy())
            if not self._same_as_pil[kind]:
                return self._pil(io.BytesIO(data), mode)
        return reduced_tensor(pixels, self.covariance)

    def __repr__(self) -> str:
        return f"TorchvisionDecoder(covariance={self.covariance}, verify={self.verify})"


def torchvision_kind(data: bytes) -> tuple | None:
    """The kind (:mod:`prep.formats`) of ``data`` when torchvision.io is to decode it, else None:
    the kinds :func:`torchvision_decodes`, at most ``Image.MAX_IMAGE_PIXELS`` large, since larger
    images go to PIL, whose decompression-bomb check then applies as under ``--decoder pil``."""
    header = read_header(data)
    if header is None:
        return None
    kind, width, height = header
    limit = Image.MAX_IMAGE_PIXELS
    if not torchvision_decodes(kind) or not width or not height or (limit is not None and width * height > limit):
        return None
    return kind


def torchvision_decodes(kind: tuple | None) -> bool:
    """True for the kinds torchvision.io is given: 8-bit baseline, extended and progressive JPEGs
    (grey, colour, CMYK) and 8-bit PNGs of every colour type."""
    if kind is None:
        return False
    if kind[0] == "jpeg":
        _, marker, precision, components, _, _ = kind
        return marker in (0xC0, 0xC1, 0xC2) and precision == 8 and components in (1, 3, 4)
    return kind[1] == 8


def torchvision_pixels(data: bytes, kind: tuple, mode: str, device: str = "cpu"):
    """The ``(C, H, W)`` uint8 pixels of a JPEG or PNG in ``mode`` by torchvision.io: alpha
    dropped and channels converted as PIL's ``convert(mode)`` does (:func:`prep.pixels.convert_channels`)."""
    import torch

    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg, decode_png

        if kind[0] == "jpeg":
            read = ImageReadMode.RGB if jpeg_components(kind) == 4 else ImageReadMode.UNCHANGED
            image = decode_jpeg(raw, mode=read, device=device)
        else:
            image = decode_png(raw, mode=ImageReadMode.UNCHANGED)
    return in_mode(image, mode)


def in_mode(image, mode: str):
    """A decoded ``(C, H, W)`` uint8 image with its alpha dropped (C 2 or 4) and its channels made
    those of ``mode`` by PIL's rule; grey read as RGB is a stride-0 view, never copied."""
    if image.shape[0] in (2, 4):
        image = image[:-1]
    return convert_channels(image, mode)


def reduced_tensor(pixels, covariance: bool) -> EightBitHistogram:
    """The histogram (and cross sums) of ``(C, H, W)`` uint8 pixels, by PIL's histogram on a view
    of them (``L``: shared memory; ``RGB``: one unpacking copy)."""
    if pixels.shape[0] > 1 and pixels.stride(0) == 0:  # grey read as RGB: reduced once
        return _reduced(_pil_image(pixels[:1]), covariance, replicate=pixels.shape[0])
    return _reduced(_pil_image(pixels), covariance)


def _pil_image(pixels) -> Image.Image:
    channels, height, width = pixels.shape
    hwc = np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
    mode = "RGB" if channels == 3 else "L"
    return Image.frombuffer(mode, (width, height), hwc, "raw", mode, 0, 1)


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


def make_decoder(name: str, covariance: bool = False) -> Decoder:
    """The decoder ``--decoder name`` asks for (see :data:`DECODER_CHOICES`)."""
    if name == "pil":
        return PILDecoder(covariance)
    if name in ("auto", "torchvision"):
        return TorchvisionDecoder(covariance, verify=name == "auto")
    raise OptionError(f"decoder must be one of {', '.join(DECODER_CHOICES)}; got {name!r}")
