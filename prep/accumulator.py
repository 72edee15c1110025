"""Mergeable per-channel statistics: :class:`ChannelMoments`.

The state per channel ``c`` is ``count``, ``mean`` and ``m2`` (the sum of squared deviations
from the mean) in float64 and unit scale, the running ``min``/``max``, and for 8-bit data an
exact 256-bin integer ``histogram``. Two states merge with the parallel formula of Chan,
Golub and LeVeque (1979)::

    n     = n_a + n_b
    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    m2    = m2_a + m2_b + delta**2 * n_a * n_b / n

and the population variance (ddof=0, what ``transforms.Normalize`` assumes) is ``m2 / n``.

Each batch is reduced where it lives (CPU or CUDA) to per-image moments, and only those few
numbers reach the host. For uint8 batches the reduction is a per-image, per-channel
``bincount``: the histogram is exact, so 8-bit statistics are computed from integer sums and
do not depend on batch size, order or device at all. The same state serves folder workers,
dataset shards, checkpoints and ``torch.distributed``: ``state_dict`` is plain JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch

from .errors import StatsFileError

STATE_VERSION = 1
BINS = 256
_LEVELS = np.arange(BINS, dtype=np.int64)


@dataclass(frozen=True)
class ChannelSummary:
    """What :meth:`ChannelMoments.compute` returns; every per-channel field is a tuple, unit scale."""

    count: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    min: tuple[float, ...]
    max: tuple[float, ...]
    per_image_std_mean: tuple[float, ...]
    nonfinite: tuple[int, ...]
    images: int
    pixel_max: float


class ChannelMoments:
    """Streaming, mergeable per-channel count/mean/std/min/max of images in unit scale.

    ``update`` folds in a batch (mutating ``self``); ``merge`` combines two states into a new
    one and never mutates its inputs; ``compute`` returns a :class:`ChannelSummary`.

    Example:
        >>> acc = ChannelMoments(channels=1)
        >>> _ = acc.update(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
        >>> acc.compute().mean, acc.compute().std
        ((0.5,), (0.5,))
    """

    def __init__(self, channels: int) -> None:
        if channels < 1:
            raise ValueError(f"channels must be positive; got {channels}")
        c = channels
        self.channels = c
        self.count = np.zeros(c, np.int64)
        self.mean = np.zeros(c)
        self.m2 = np.zeros(c)
        self.min = np.full(c, np.inf)
        self.max = np.full(c, -np.inf)
        # Exact 8-bit histogram; None once any data of another bit depth was folded in.
        self.histogram: np.ndarray | None = np.zeros((c, BINS), np.int64)
        self.images = 0
        self.image_std_sum = np.zeros(c)
        self.image_std_count = np.zeros(c, np.int64)
        self.nonfinite = np.zeros(c, np.int64)
        self.pixel_max = 0.0

    # ------------------------------------------------------------------ update
    def update(self, batch: torch.Tensor, pixel_max: float | None = None) -> "ChannelMoments":
        """Fold in a batch ``(N, C, H, W)`` (or one image ``(C, H, W)``) on any device.

        uint8 batches are raw 0..255 values; other integer dtypes are raw values scaled by
        ``pixel_max`` (default 65535); float batches are unit scale already (``pixel_max`` 1.0).
        """
        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[1] != self.channels:
            raise ValueError(
                f"expected a batch (N, {self.channels}, H, W); got shape {tuple(batch.shape)}"
            )
        if batch.shape[0] == 0:
            return self
        if batch.dtype == torch.uint8:
            return self.update_histograms(image_histograms(batch).cpu().numpy())
        if batch.dtype.is_floating_point:
            scale = 1.0 if pixel_max is None else float(pixel_max)
        else:
            scale = float(SIXTEEN_BIT_DEFAULT if pixel_max is None else pixel_max)
        n, mean, m2, vmin, vmax, nonfinite = _float_image_moments(batch, scale)
        self._fold_images(n, mean, m2, vmin, vmax)
        self.nonfinite += nonfinite
        self.histogram = None
        self.pixel_max = max(self.pixel_max, scale)
        return self

    def update_histograms(self, hist: np.ndarray) -> "ChannelMoments":
        """Fold in 8-bit images given as per-image histograms ``(N, C, 256)`` of counts."""
        hist = np.asarray(hist, dtype=np.int64)
        if hist.ndim == 2:
            hist = hist[None]
        if hist.shape[1:] != (self.channels, BINS):
            raise ValueError(f"expected histograms (N, {self.channels}, {BINS}); got {hist.shape}")
        if hist.shape[0] == 0:
            return self
        n_img = hist.sum(-1)
        valid = n_img > 0
        mean_img = (hist @ _LEVELS) / np.maximum(n_img, 1)
        dev = _LEVELS - mean_img[..., None]
        var_img = (hist * dev * dev).sum(-1) / np.maximum(n_img, 1)
        self._count_images(n_img.shape[0], np.sqrt(var_img) / 255.0, valid)

        total = hist.sum(0)
        n, mean, m2 = _exact_moments(total, 255)
        present = total > 0
        vmin = np.where(present.any(1), present.argmax(1), 0) / 255.0
        vmax = np.where(present.any(1), BINS - 1 - present[:, ::-1].argmax(1), 0) / 255.0
        vmin = np.where(n > 0, vmin, np.inf)
        vmax = np.where(n > 0, vmax, -np.inf)
        self._fold(n, mean, m2, vmin, vmax)
        if self.histogram is not None:
            self.histogram = self.histogram + total
        self.pixel_max = max(self.pixel_max, 255.0)
        return self

    def update_array(self, array: np.ndarray, pixel_max: float) -> "ChannelMoments":
        """Fold in one image ``(C, H, W)`` from NumPy (16-bit or float data) on the CPU."""
        return self.update(torch.from_numpy(np.require(array, requirements=["C", "W"])), pixel_max)

    # ------------------------------------------------------------------ merge
    def merge(self, other: "ChannelMoments") -> "ChannelMoments":
        """Return the state of the union of both datasets; neither input changes."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {self.channels}-channel and {other.channels}-channel states")
        out = self.copy()
        out._fold(other.count, other.mean, other.m2, other.min, other.max)
        if out.histogram is None or other.histogram is None:
            out.histogram = None
        else:
            out.histogram = out.histogram + other.histogram
        out.images += other.images
        out.image_std_sum = out.image_std_sum + other.image_std_sum
        out.image_std_count = out.image_std_count + other.image_std_count
        out.nonfinite = out.nonfinite + other.nonfinite
        out.pixel_max = max(out.pixel_max, other.pixel_max)
        return out

    def copy(self) -> "ChannelMoments":
        return ChannelMoments.from_state_dict(self.state_dict())

    def _fold(self, n_b, mean_b, m2_b, min_b, max_b) -> None:
        """Chan et al.'s parallel update of ``self`` with a part ``(n_b, mean_b, m2_b)``."""
        n_a = self.count
        n_b = np.asarray(n_b, np.int64)
        n = n_a + n_b
        safe_n = np.maximum(n, 1).astype(np.float64)
        delta = np.asarray(mean_b) - self.mean
        updated_mean = self.mean + delta * (n_b / safe_n)
        updated_m2 = self.m2 + np.asarray(m2_b) + delta * delta * (n_a.astype(np.float64) * n_b / safe_n)
        self.mean = np.where(n_b == 0, self.mean, np.where(n_a == 0, mean_b, updated_mean))
        self.m2 = np.where(n_b == 0, self.m2, np.where(n_a == 0, m2_b, updated_m2))
        self.count = n
        self.min = np.minimum(self.min, min_b)
        self.max = np.maximum(self.max, max_b)

    def _fold_images(self, n_img, mean_img, m2_img, min_img, max_img) -> None:
        """Combine per-image moments ``(N, C)`` into batch moments, then fold them in."""
        n = n_img.sum(0)
        weights = n_img.astype(np.float64)
        mean = (weights * mean_img).sum(0) / np.maximum(n, 1)
        dev = mean_img - mean
        m2 = m2_img.sum(0) + (weights * dev * dev).sum(0)
        self._fold(n, mean, m2, min_img.min(0), max_img.max(0))
        valid = n_img > 0
        self._count_images(n_img.shape[0], np.sqrt(m2_img / np.maximum(weights, 1)), valid)

    def _count_images(self, images: int, image_std: np.ndarray, valid: np.ndarray) -> None:
        self.images += int(images)
        self.image_std_sum = self.image_std_sum + np.where(valid, image_std, 0.0).sum(0)
        self.image_std_count = self.image_std_count + valid.sum(0)

    # ------------------------------------------------------------------ compute
    def compute(self) -> ChannelSummary:
        """Per-channel statistics in unit scale; exact from the histogram for 8-bit data."""
        if self.histogram is not None and np.array_equal(self.histogram.sum(1), self.count):
            _, mean, m2 = _exact_moments(self.histogram, 255)
        else:
            mean, m2 = self.mean, self.m2
        n = self.count
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(m2 / n)
            per_image = self.image_std_sum / self.image_std_count

        def floats(values) -> tuple[float, ...]:
            return tuple(float(v) if math.isfinite(v) else math.nan for v in values)

        return ChannelSummary(
            count=tuple(int(v) for v in n),
            mean=floats(np.where(n > 0, mean, np.nan)),
            std=floats(std),
            min=floats(self.min),
            max=floats(self.max),
            per_image_std_mean=floats(per_image),
            nonfinite=tuple(int(v) for v in self.nonfinite),
            images=int(self.images),
            pixel_max=float(self.pixel_max),
        )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """A JSON-serializable snapshot; ``from_state_dict(s.state_dict())`` equals ``s``."""
        empty = self.count == 0
        return {
            "version": STATE_VERSION,
            "channels": self.channels,
            "count": [int(v) for v in self.count],
            "mean": [float(v) for v in self.mean],
            "m2": [float(v) for v in self.m2],
            "min": [None if e else float(v) for v, e in zip(self.min, empty)],
            "max": [None if e else float(v) for v, e in zip(self.max, empty)],
            "histogram": None if self.histogram is None else self.histogram.tolist(),
            "images": int(self.images),
            "image_std_sum": [float(v) for v in self.image_std_sum],
            "image_std_count": [int(v) for v in self.image_std_count],
            "nonfinite": [int(v) for v in self.nonfinite],
            "pixel_max": float(self.pixel_max),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], where: str = "state") -> "ChannelMoments":
        """Rebuild a state, validating every field; errors name the field (``state.m2``...)."""
        if not isinstance(state, Mapping):
            raise StatsFileError(f"{where}: expected an object")
        if state.get("version") != STATE_VERSION:
            raise StatsFileError(f"{where}.version: expected {STATE_VERSION}; got {state.get('version')!r}")
        channels = state.get("channels")
        if not isinstance(channels, int) or isinstance(channels, bool) or channels < 1:
            raise StatsFileError(f"{where}.channels: expected a positive integer; got {channels!r}")
        out = cls(channels)

        def vector(name: str, kind: type, allow_none: bool = False, minimum: float | None = None):
            values = state.get(name)
            if not isinstance(values, list) or len(values) != channels:
                raise StatsFileError(f"{where}.{name}: expected a list of {channels} numbers")
            for v in values:
                if v is None and allow_none:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float) if kind is float else int):
                    raise StatsFileError(f"{where}.{name}: expected {kind.__name__} values; got {v!r}")
                if kind is float and not math.isfinite(v):
                    raise StatsFileError(f"{where}.{name}: values must be finite; got {v!r}")
                if minimum is not None and v < minimum:
                    raise StatsFileError(f"{where}.{name}: values must be >= {minimum}; got {v!r}")
            return values

        out.count = np.array(vector("count", int, minimum=0), np.int64)
        out.mean = np.array(vector("mean", float), np.float64)
        out.m2 = np.array(vector("m2", float, minimum=0), np.float64)
        empty = out.count == 0
        mins, maxs = vector("min", float, allow_none=True), vector("max", float, allow_none=True)
        for name, values in (("min", mins), ("max", maxs)):
            if any((v is None) != e for v, e in zip(values, empty)):
                raise StatsFileError(f"{where}.{name}: must be null exactly where count is 0")
        out.min = np.array([np.inf if v is None else v for v in mins], np.float64)
        out.max = np.array([-np.inf if v is None else v for v in maxs], np.float64)
        if np.any((out.min > out.max) & ~empty):
            raise StatsFileError(f"{where}.min: exceeds {where}.max")
        hist = state.get("histogram")
        if hist is None:
            out.histogram = None
        else:
            try:
                arr = np.array(hist, dtype=np.int64)
            except (TypeError, ValueError, OverflowError):
                raise StatsFileError(f"{where}.histogram: expected {channels} lists of {BINS} integers") from None
            if arr.shape != (channels, BINS) or (arr < 0).any():
                raise StatsFileError(f"{where}.histogram: expected {channels} lists of {BINS} non-negative integers")
            out.histogram = arr
        images = state.get("images")
        if not isinstance(images, int) or isinstance(images, bool) or images < 0:
            raise StatsFileError(f"{where}.images: expected a non-negative integer; got {images!r}")
        out.images = images
        out.image_std_sum = np.array(vector("image_std_sum", float, minimum=0), np.float64)
        out.image_std_count = np.array(vector("image_std_count", int, minimum=0), np.int64)
        out.nonfinite = np.array(vector("nonfinite", int, minimum=0), np.int64)
        pixel_max = state.get("pixel_max")
        if isinstance(pixel_max, bool) or not isinstance(pixel_max, (int, float)) or not (
            math.isfinite(pixel_max) and pixel_max >= 0
        ):
            raise StatsFileError(f"{where}.pixel_max: expected a non-negative number; got {pixel_max!r}")
        out.pixel_max = float(pixel_max)
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelMoments) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"ChannelMoments(channels={self.channels}, images={self.images}, count={self.count.tolist()})"


SIXTEEN_BIT_DEFAULT = 65535


def image_histograms(batch: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel 256-bin histograms of a uint8 batch ``(N, C, H, W)`` -> ``(N, C, 256)``.

    One ``bincount`` on the batch's own device over ``value + 256 * (image * C + channel)``.
    """
    n, c = batch.shape[:2]
    offsets = torch.arange(n * c, device=batch.device, dtype=torch.int64 if n * c * BINS >= 2**31 else torch.int32)
    index = batch.reshape(n * c, -1).to(offsets.dtype) + (offsets * BINS)[:, None]
    return torch.bincount(index.reshape(-1), minlength=n * c * BINS).reshape(n, c, BINS)


def _exact_moments(hist: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and m2 of ``(C, 256)`` histograms, in unit scale, each correctly rounded.

    With integer sums ``S = sum(h[v] * v)`` and ``Q = sum(h[v] * v**2)`` (Python integers, so
    exact at any size): ``mean = S / (n * scale)`` and ``m2 = (n * Q - S**2) / (n * scale**2)``.
    """
    counts, means, m2s = [], [], []
    for row in np.asarray(hist, dtype=np.int64):
        n = int(row.sum())
        s = int(row @ _LEVELS)
        q = sum(int(h) * v * v for v, h in enumerate(row.tolist()) if h)
        counts.append(n)
        means.append(s / (n * scale) if n else 0.0)
        m2s.append((n * q - s * s) / (n * scale * scale) if n else 0.0)
    return np.array(counts, np.int64), np.array(means), np.array(m2s)


def _float_image_moments(batch: torch.Tensor, scale: float):
    """Per-image ``(N, C)`` finite count, mean, m2, min, max in float64 on the batch's device."""
    n, c = batch.shape[:2]
    x = batch.reshape(n, c, -1).to(torch.float64)
    if scale != 1.0:
        x = x / scale
    finite = torch.isfinite(x)
    count = finite.sum(-1)
    zero = torch.zeros((), dtype=x.dtype, device=x.device)
    mean = torch.where(finite, x, zero).sum(-1) / count.clamp(min=1)
    dev = torch.where(finite, x - mean[..., None], zero)
    m2 = (dev * dev).sum(-1)
    inf = torch.tensor(math.inf, dtype=x.dtype, device=x.device)
    vmin = torch.where(finite, x, inf).amin(-1)
    vmax = torch.where(finite, x, -inf).amax(-1)
    nonfinite = (~finite).sum((0, 2))
    return tuple(t.cpu().numpy() for t in (count, mean, m2, vmin, vmax, nonfinite))
