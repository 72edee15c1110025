"""JPEGs decoded and reduced on the device: ``--decoder torchvision --device cuda`` (nvjpeg).

Workers read the files and pass JPEG bytes through (:class:`PassJpegs`); every other file they
decode and reduce on the CPU as usual. The main process decodes each chunk's JPEGs with one
batched ``torchvision.io.decode_jpeg(list, device=...)`` call and reduces them where they were
decoded: per-image histograms by one ``torch.bincount`` over the whole chunk, cross sums by a
float64 GEMM per image (exact: products and sums of 8-bit values are integers below 2**53), so
only ``(N, C, 256)`` counts and ``(N, C, C)`` sums cross back to the host.

Nothing here is specific to CUDA but the device the tensors live on: the CPU test suite runs
this very code with ``device="cpu"`` (selected through :data:`prep.engine.measure.DEVICE_DECODE`),
where the pixels are libjpeg-turbo's and equal PIL's. nvjpeg's may differ by rounding, which is
why the stats file records the decoder (``torchvision-cuda``).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from prep.decode.decoders import EightBitHistogram, ImageArray, TorchvisionDecoder, torchvision_kind
from prep.decode.jpeg_kinds import jpeg_components
from prep.pixels import CHANNELS, LEVELS, convert_channels


@dataclass(frozen=True)
class EncodedJpeg:
    """A JPEG's bytes, passed to the main process to be decoded on the device."""

    data: bytes


class PassJpegs:
    """The workers' decoder of the device path: JPEGs nvjpeg reads (8-bit baseline or
    progressive, grey or colour) pass through as :class:`EncodedJpeg`; every other file is
    decoded here by torchvision.io or PIL (:class:`~prep.decode.decoders.TorchvisionDecoder`)."""

    name = "torchvision"

    def __init__(self, covariance: bool = False) -> None:
        self.covariance = covariance
        self._cpu = TorchvisionDecoder(covariance, verify=False)

    def __call__(self, fp: IO[bytes], mode: str) -> EncodedJpeg | EightBitHistogram | ImageArray:
        data = fp.read()
        kind = torchvision_kind(data)
        if kind is not None and jpeg_components(kind) in (1, 3):
            return EncodedJpeg(data)
        return self._cpu(io.BytesIO(data), mode)

    def __repr__(self) -> str:
        return f"PassJpegs(covariance={self.covariance})"


def decode_on_device(datas: list[bytes], mode: str, device: Any, covariance: bool = False) -> list[Any]:
    """Decode JPEGs on ``device`` and reduce them there: for each input an
    :class:`~prep.decode.decoders.EightBitHistogram` (with its cross sums under ``covariance``), or, for a
    file the device decoder refused, the exception, in input order.

    The batch is decoded in one call; when that call fails (one damaged file fails it), each
    file is decoded alone so that only the damaged ones are lost.
    """
    images: list[Any] = _decode_all(datas, device)
    good = [i for i, image in enumerate(images) if not isinstance(image, Exception)]
    pixels = [convert_channels(images[i], mode) for i in good]
    hist = image_histograms(pixels, CHANNELS[mode]) if pixels else np.zeros((0, CHANNELS[mode], LEVELS), np.int64)
    cross = image_cross_sums(pixels) if covariance and pixels else None
    out: list[Any] = list(images)
    for k, i in enumerate(good):
        size = (int(pixels[k].shape[-1]), int(pixels[k].shape[-2]))
        out[i] = EightBitHistogram([int(v) for v in hist[k].reshape(-1)], size, None if cross is None else cross[k])
    return out


def _decode_all(datas: list[bytes], device: Any) -> list[Any]:
    import torch

    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        raw = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
        try:
            return list(decode_jpeg(raw, mode=ImageReadMode.UNCHANGED, device=device))
        except RuntimeError:
            pass
        out: list[Any] = []
        for one in raw:
            try:
                out.append(decode_jpeg(one, mode=ImageReadMode.UNCHANGED, device=device))
            except RuntimeError as exc:
                out.append(exc)
        return out


def image_histograms(images: list[Any], channels: int) -> np.ndarray:
    """Per-image ``(N, C, 256)`` counts of uint8 images ``(C, H, W)`` of any sizes, on their
    device, by one ``torch.bincount`` of ``value + 256 * (C * image + channel)``; a stride-0
    channel (grey read as RGB) is counted once and repeated."""
    import torch

    device = images[0].device
    parts = []
    for i, image in enumerate(images):
        once = image.shape[0] > 1 and image.stride(0) == 0
        planes = image[:1] if once else image
        offsets = torch.arange(planes.shape[0], device=device, dtype=torch.int64).view(-1, 1)
        values = planes.reshape(planes.shape[0], -1).to(torch.int64)
        parts.append((values + (offsets + i * channels) * LEVELS).reshape(-1))
    counts = torch.bincount(torch.cat(parts), minlength=len(images) * channels * LEVELS)
    hist = counts.view(len(images), channels, LEVELS).cpu().numpy().astype(np.int64)
    for i, image in enumerate(images):
        if image.shape[0] > 1 and image.stride(0) == 0:
            hist[i, 1:] = hist[i, 0]
    return hist


def image_cross_sums(images: list[Any]) -> list[list[list[int]]]:
    """Raw ``sum(x_i x_j)`` per channel pair of each uint8 image ``(C, H, W)``, on its device:
    one float64 GEMM per image (integers below 2**53, so exact in any order), one transfer."""
    import torch

    grams = []
    for image in images:
        values = image.reshape(image.shape[0], -1).to(torch.float64)
        grams.append(values @ values.T)
    stacked = torch.stack(grams).cpu().numpy()
    return [[[int(v) for v in row] for row in gram] for gram in stacked]
