"""Mergeable per-channel statistics: :class:`ChannelMoments`.

The state per channel ``c`` is ``count``, ``mean`` and ``m2`` (the sum of squared deviations
from the mean) in float64 and unit scale, and the running ``min``/``max``. Two states merge
with the parallel formula of Chan, Golub and LeVeque (1979)::

    n     = n_a + n_b
    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    m2    = m2_a + m2_b + delta**2 * n_a * n_b / n

and the population variance (ddof=0, what ``transforms.Normalize`` assumes) is ``m2 / n``.

For 8-bit data the state also keeps the exact integer sums ``S = sum(x)`` and
``Q = sum(x**2)`` of the raw values (Python integers: they never overflow and merge by
addition). The final mean ``S / (n * 255)`` and variance ``(n * Q - S**2) / (n * 255)**2`` are
then computed exactly and rounded once, so 8-bit statistics are identical to the last bit
whatever the batch size, order, worker count or device.

Each batch is reduced where it lives (CPU or CUDA) to per-image sums, and only those few
numbers reach the host. The same state serves folder workers, dataset shards, checkpoints
and ``torch.distributed``: ``state_dict`` is plain JSON.
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
SIXTEEN_BIT_DEFAULT = 65535  # raw maximum of integer batches other than uint8
EXACT_GROUP = 256  # float32 sums of up to 258 squares of 0..255 stay integers below 2**24: exact
_LEVEL_POWERS = np.stack([np.arange(BINS, dtype=np.float64), np.arange(BINS, dtype=np.float64) ** 2], axis=1)


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
        # Exact integer sums of raw 8-bit values; None once data of another bit depth is folded in.
        self.exact_sum: list[int] | None = [0] * c
        self.exact_sumsq: list[int] | None = [0] * c
        self.images = 0
        self.image_std_sum = np.zeros(c)
        self.image_std_count = np.zeros(c, np.int64)
        self.nonfinite = np.zeros(c, np.int64)
        self.pixel_max = 0.0
        self._workspace: dict = {}  # scratch buffers reused across updates; not part of the state

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
            n, total, total_sq, vmin, vmax = _uint8_image_sums(batch, self._workspace)
            return self._fold_eight_bit(n, total, total_sq, vmin, vmax)
        if batch.dtype.is_floating_point:
            scale = 1.0 if pixel_max is None else float(pixel_max)
        else:
            scale = float(SIXTEEN_BIT_DEFAULT if pixel_max is None else pixel_max)
        n, mean, m2, vmin, vmax, nonfinite = _float_image_moments(batch, scale)
        self._fold_images(n, mean, m2, vmin, vmax)
        self.nonfinite += nonfinite
        self.exact_sum = self.exact_sumsq = None
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
        # float64 products of integers below 2**53 are exact
        sums = hist.astype(np.float64) @ _LEVEL_POWERS
        present = hist.sum(0) > 0
        vmin = np.where(present.any(1), present.argmax(1), BINS)
        vmax = np.where(present.any(1), BINS - 1 - present[:, ::-1].argmax(1), -1)
        return self._fold_eight_bit(hist.sum(-1), sums[..., 0], sums[..., 1], vmin, vmax)

    def _fold_eight_bit(self, n_img, s_img, q_img, vmin, vmax) -> "ChannelMoments":
        """Fold in 8-bit images from exact per-image ``(N, C)`` pixel counts, sums and sums of
        squares of raw values, and the batch's raw per-channel min/max (256/-1 when empty)."""
        n_img = np.asarray(n_img, np.int64)
        s_img = np.asarray(s_img).astype(np.int64)
        q_img = np.asarray(q_img).astype(np.int64)
        valid = n_img > 0
        nf = np.maximum(n_img, 1).astype(np.float64)
        if int(n_img.max()) * int(q_img.max()) < 2**62:  # exact integer numerator, rounded once
            var_img = (n_img * q_img - s_img * s_img) / (nf * nf)
        else:  # images of many megapixels: float64 is accurate enough for a per-image diagnostic
            var_img = np.maximum(q_img / nf - (s_img / nf) ** 2, 0.0)
        self._count_images(n_img.shape[0], np.sqrt(var_img) / 255.0, valid)
        counts = [int(v) for v in n_img.sum(0)]
        totals = [int(v) for v in s_img.sum(0)]
        totals_sq = [int(v) for v in q_img.sum(0)]
        n, mean, m2 = _exact_moments(counts, totals, totals_sq, 255)
        self._fold(n, mean, m2, np.where(n > 0, np.asarray(vmin) / 255.0, np.inf),
                   np.where(n > 0, np.asarray(vmax) / 255.0, -np.inf))
        if self.exact_sum is not None:
            self.exact_sum = [a + b for a, b in zip(self.exact_sum, totals)]
            self.exact_sumsq = [a + b for a, b in zip(self.exact_sumsq, totals_sq)]
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
        if out.exact_sum is None or other.exact_sum is None:
            out.exact_sum = out.exact_sumsq = None
        else:
            out.exact_sum = [a + b for a, b in zip(out.exact_sum, other.exact_sum)]
            out.exact_sumsq = [a + b for a, b in zip(out.exact_sumsq, other.exact_sumsq)]
        out.images += other.images
        out.image_std_sum = out.image_std_sum + other.image_std_sum
        out.image_std_count = out.image_std_count + other.image_std_count
        out.nonfinite = out.nonfinite + other.nonfinite
        out.pixel_max = max(out.pixel_max, other.pixel_max)
        return out

    def all_gather_merge(self, group: Any = None) -> "ChannelMoments":
        """The merged state of every rank of a ``torch.distributed`` process group.

        Each rank measures its own shard; this gathers the (JSON-sized) states, and every rank
        merges them in rank order, so all ranks get the same result. Collective: every rank
        must call it.
        """
        import torch.distributed as dist

        states: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(states, self.state_dict(), group=group)
        merged = ChannelMoments(self.channels)
        for state in states:
            merged = merged.merge(ChannelMoments.from_state_dict(state))
        return merged

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
        """Per-channel statistics in unit scale; exact from the integer sums for 8-bit data."""
        if self.exact_sum is not None:
            _, mean, m2 = _exact_moments(self.count.tolist(), self.exact_sum, self.exact_sumsq, 255)
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
            "exact_sum": self.exact_sum,
            "exact_sumsq": self.exact_sumsq,
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
        exact = state.get("exact_sum"), state.get("exact_sumsq")
        if exact == (None, None):
            out.exact_sum = out.exact_sumsq = None
        else:
            out.exact_sum = vector("exact_sum", int, minimum=0)
            out.exact_sumsq = vector("exact_sumsq", int, minimum=0)
            for n, total, total_sq in zip(out.count.tolist(), out.exact_sum, out.exact_sumsq):
                if total > 255 * n or total * total > n * total_sq:  # Cauchy-Schwarz: S**2 <= n * Q
                    raise StatsFileError(f"{where}.exact_sum: inconsistent with {where}.count and exact_sumsq")
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

    def __getstate__(self) -> dict:  # what crosses process boundaries: the state, not the scratch
        return {**self.__dict__, "_workspace": {}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelMoments) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"ChannelMoments(channels={self.channels}, images={self.images}, count={self.count.tolist()})"



def _uint8_image_sums(batch: torch.Tensor, workspace: dict | None = None):
    """Exact per-image ``(N, C)`` pixel counts, sums and sums of squares of a uint8 batch, plus
    the batch's per-channel min and max, reduced on the batch's own device.

    On the CPU the pixels go through float32 in groups of at most 256, where every product and
    partial sum is an integer below 2**24 and therefore exact in any summation order; the
    float32 buffers are reused from ``workspace`` across batches (no page faults per batch).
    On CUDA they go through float64.
    """
    n, c = batch.shape[:2]
    rows = batch.reshape(n * c, -1)
    pixels = rows.shape[1]
    group = next((g for g in range(min(EXACT_GROUP, pixels), 0, -1) if pixels % g == 0), 1)
    if batch.device.type == "cpu" and group >= 16:
        size = rows.numel()
        workspace = {} if workspace is None else workspace
        if workspace.get("values") is None or workspace["values"].numel() < size:
            workspace["values"], workspace["squares"] = torch.empty(size), torch.empty(size)
        values = workspace["values"][:size].view(-1, group)
        values.copy_(rows.reshape(-1, group))
        squares = torch.mul(values, values, out=workspace["squares"][:size].view(-1, group))
        total = values.sum(1).view(n * c, -1).to(torch.float64).sum(1)
        total_sq = squares.sum(1).view(n * c, -1).to(torch.float64).sum(1)
    else:
        x = rows.to(torch.float64)
        total, total_sq = x.sum(1), (x * x).sum(1)
    vmin = batch.amin(dim=(0, 2, 3)) if pixels else torch.full((c,), BINS, device=batch.device)
    vmax = batch.amax(dim=(0, 2, 3)) if pixels else torch.full((c,), -1, device=batch.device)
    return (np.full((n, c), pixels, np.int64), total.view(n, c).cpu().numpy(), total_sq.view(n, c).cpu().numpy(),
            vmin.cpu().numpy().astype(np.int64), vmax.cpu().numpy().astype(np.int64))


def _exact_moments(counts, totals, totals_sq, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and m2 per channel in unit scale from exact integer sums, each rounded once.

    ``mean = S / (n * scale)`` and ``m2 = (n * Q - S**2) / (n * scale**2)``: Python integer
    arithmetic is exact at any size and ``int / int`` is correctly rounded.
    """
    means = [s / (n * scale) if n else 0.0 for n, s in zip(counts, totals)]
    m2s = [(n * q - s * s) / (n * scale * scale) if n else 0.0 for n, s, q in zip(counts, totals, totals_sq)]
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
