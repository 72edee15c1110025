"""Mergeable per-channel statistics: :class:`ChannelMoments`.

The state is declared once, in :data:`STATE_FIELDS`: each field's type, whether it is one value
per channel, and how two states combine. Construction, :meth:`~ChannelMoments.merge`,
:meth:`~ChannelMoments.state_dict` and :meth:`~ChannelMoments.from_state_dict` (with its
validation) are derived from that table, as torchmetrics derives them from ``add_state``; a new
statistic is one row there and its update.

Per channel ``c`` the moments are ``count``, ``mean`` and ``m2`` (the sum of squared deviations
from the mean) in float64 and unit scale. Two states merge with the parallel formula of Chan,
Golub and LeVeque (1979)::

    n     = n_a + n_b
    delta = mean_b - mean_a
    mean  = mean_a + delta * n_b / n
    m2    = m2_a + m2_b + delta**2 * n_a * n_b / n

and the population variance (ddof=0, what ``transforms.Normalize`` assumes) is ``m2 / n``.

For 8-bit data the state also keeps the exact integer sums ``S = sum(x)`` and
``Q = sum(x**2)`` of the raw values (Python integers: they never overflow and merge by
addition). The final ``mean = S / (255 n)`` and ``var = (n Q - S**2) / (255 n)**2`` are exact
fractions, each rounded once to float64 (``std`` is the correctly rounded square root of that
``var``), so 8-bit statistics are identical to the last bit whatever the batch size, order,
worker count or device.

Each batch is reduced where it lives (CPU or CUDA) to per-image sums, and only those few
numbers reach the host. The same state serves folder workers, dataset shards, checkpoints
and ``torch.distributed``: ``state_dict`` is plain JSON.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.errors import StatsFileError
from prep.fields import short_repr
from prep.pixels import EIGHT_BIT_MAX, LEVELS, SIXTEEN_BIT_MAX, checked_sixteen_bit, pixel_max_of

if TYPE_CHECKING:
    import torch

IMAGE_MOMENTS = ("n", "s", "q", "nn", "ns", "ss", "nq", "sq", "qq")
MAX_CHANNELS = 4  # the sums of image_moments
STATE_VERSION = 2  # 2: image_std_sum in fixed point (exact in any order), histogram; 1 is still read
IMAGE_STD_SCALE = 2**48  # image_std_sum holds each image's std rounded to a multiple of 2**-48
SLICE_ELEMENTS = 1 << 20  # values reduced at a time: bounds the scratch memory of any image size
EXACT_GROUP = 256  # float32 sums of up to 258 squares of 0..255 stay integers below 2**24: exact
_LEVEL_POWERS = np.stack([np.arange(LEVELS, dtype=np.float64), np.arange(LEVELS, dtype=np.float64) ** 2], axis=1)


@dataclass(frozen=True)
class StateField:
    """One piece of :class:`ChannelMoments` state.

    ``kind``: ``int`` (int64), ``float`` (float64) or ``exact`` (Python integers of any size).
    ``merge``: ``sum``, ``min``, ``max``, or ``moments`` (count/mean/m2, merged together by
    Chan's formula). ``empty``: the value of an empty state, and the identity of the merge;
    ``min``/``max`` store it as JSON ``null`` (they are infinite until a pixel arrives).
    ``optional``: the whole field may be None (exact sums and the histogram, once non-8-bit data
    is mixed in). ``width``: a row of values per channel instead of one (the histogram).
    """

    name: str
    kind: str
    merge: str
    per_channel: bool = True
    empty: float = 0
    minimum: float | None = None
    optional: bool = False
    width: int = 0  # values per channel: 0 for one, else a row of ``width`` (a histogram)

    def default(self, channels: int) -> Any:
        if self.kind == "exact":
            return [[0] * self.width for _ in range(channels)] if self.width else [0] * channels
        dtype = np.int64 if self.kind == "int" else np.float64
        if self.width:
            return np.full((channels, self.width), self.empty, dtype)
        if self.per_channel:
            return np.full(channels, self.empty, dtype)
        return dtype(self.empty).item()


STATE_FIELDS: tuple[StateField, ...] = (
    StateField("count", "int", "moments", minimum=0),
    StateField("mean", "float", "moments"),
    StateField("m2", "float", "moments", minimum=0),
    StateField("min", "float", "min", empty=math.inf),
    StateField("max", "float", "max", empty=-math.inf),
    StateField("exact_sum", "exact", "sum", minimum=0, optional=True),
    StateField("exact_sumsq", "exact", "sum", minimum=0, optional=True),
    StateField("histogram", "int", "sum", minimum=0, optional=True, width=LEVELS),  # raw 8-bit value counts
    # per channel, sums over images of n, s, q, n*n, n*s, s*s, n*q, s*q, q*q (n pixels, s and q the
    # raw sum and sum of squares of the image; integer data): what a sample's intervals need
    StateField("image_moments", "exact", "sum", minimum=0, optional=True, width=len(IMAGE_MOMENTS)),
    # raw sums of x_i * x_j over every pixel, row i holding channel i's products with channels
    # 0..3 (zero beyond the channel count); integer data, when asked for (the colour covariance)
    StateField("cross", "exact", "sum", minimum=0, optional=True, width=MAX_CHANNELS),
    StateField("images", "int", "sum", per_channel=False, minimum=0),
    StateField("image_std_sum", "exact", "sum", minimum=0),  # per-image stds in units of 2**-48
    StateField("image_std_count", "int", "sum", minimum=0),
    StateField("nonfinite", "int", "sum", minimum=0),
    StateField("pixel_max", "float", "max", per_channel=False, minimum=0),
)


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
        >>> import torch
        >>> acc = ChannelMoments(channels=1)
        >>> _ = acc.update(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
        >>> acc.compute().mean, acc.compute().std
        ((0.5,), (0.5,))
    """

    def __init__(self, channels: int, track_images: bool = False, covariance: bool = False) -> None:
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1 to {MAX_CHANNELS}; got {channels}")
        self.channels = channels
        for f in STATE_FIELDS:
            setattr(self, f.name, f.default(channels))
        if not track_images:  # the per-image products cost a little; sampled passes want them
            self.image_moments = None
        if not covariance:  # the cross sums cost a pass over the pixels; asked for with covariance
            self.cross = None
        self._workspace: dict = {}  # scratch buffers reused across updates; not part of the state

    # ------------------------------------------------------------------ update
    def update(self, batch: torch.Tensor, pixel_max: float | None = None) -> ChannelMoments:
        """Fold in a batch ``(N, C, H, W)`` (or one image ``(C, H, W)``) on any device.

        Values are read by :mod:`prep.pixels`' rule for the dtype (uint8 / 255, other integers
        / 65535, floats as they are) unless ``pixel_max`` says otherwise.
        """
        import torch

        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
        if batch.ndim != 4 or batch.shape[1] != self.channels:
            raise ValueError(f"expected a batch (N, {self.channels}, H, W); got shape {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return self
        if batch.shape[1] > 1 and batch.stride(1) == 0:  # one channel broadcast (grey measured as RGB)
            part = ChannelMoments(1, self.image_moments is not None, self.cross is not None)
            part.update(batch[:, :1], pixel_max)
            return self._absorb(self.merge(part.repeated(self.channels)))
        if batch.dtype == torch.uint8 and pixel_max in (None, EIGHT_BIT_MAX):
            n, total, total_sq = uint8_sums(batch, self._workspace)
            hist = uint8_histogram(batch)
            cross = None if self.cross is None else _uint8_cross_sums(batch, total_sq)
            return self._fold_integers(n, total, total_sq, *histogram_range(hist), hist=hist, cross=cross)
        scale = pixel_max_of(batch.dtype) if pixel_max is None else float(pixel_max)
        if pixel_max is None:
            batch = checked_sixteen_bit(batch)
        if not batch.dtype.is_floating_point and scale == SIXTEEN_BIT_MAX:  # 16-bit: exact integer sums
            cross = None if self.cross is None else _cross_sums(batch)
            self._fold_integers(*_integer_image_sums(batch), scale=SIXTEEN_BIT_MAX, cross=cross)
            return self
        n, mean, m2, vmin, vmax, nonfinite = _float_image_moments(batch, scale)
        self._fold_images(n, mean, m2, vmin, vmax)
        self.nonfinite += nonfinite
        self.exact_sum = self.exact_sumsq = self.histogram = self.image_moments = self.cross = None
        self.pixel_max = max(self.pixel_max, scale)
        return self

    def update_image(self, array: np.ndarray, pixel_max: float) -> ChannelMoments:
        """Fold in one image ``(C, H, W)`` held in NumPy, on the CPU; a 1-channel image is read
        as the same grey in every channel (reduced once, never copied per channel)."""
        import torch

        image = torch.from_numpy(np.require(array, requirements=["C", "W"]))
        if image.ndim == 3 and image.shape[0] == 1 and self.channels > 1:
            image = image.expand(self.channels, *image.shape[1:])
        return self.update(image, pixel_max)

    def update_histograms(self, hist: np.ndarray, cross: Any = None) -> ChannelMoments:
        """Fold in 8-bit images given as per-image histograms ``(N, C, 256)`` of counts, with their
        summed ``(C, C)`` raw cross sums when the state keeps them."""
        hist = np.asarray(hist, dtype=np.int64)
        if hist.ndim == 2:
            hist = hist[None]
        if hist.shape[1:] != (self.channels, LEVELS):
            raise ValueError(f"expected histograms (N, {self.channels}, {LEVELS}); got {hist.shape}")
        if hist.shape[0] == 0:
            return self
        sums = hist.astype(np.float64) @ _LEVEL_POWERS  # float64 products of integers below 2**53 are exact
        present = hist.sum(0) > 0
        vmin = np.where(present.any(1), present.argmax(1), LEVELS)
        vmax = np.where(present.any(1), LEVELS - 1 - present[:, ::-1].argmax(1), -1)
        return self._fold_integers(hist.sum(-1), sums[..., 0], sums[..., 1], vmin, vmax, hist=hist.sum(0), cross=cross)

    def _fold_integers(
        self,
        n_img,
        s_img,
        q_img,
        vmin,
        vmax,
        scale: int = EIGHT_BIT_MAX,
        hist: np.ndarray | None = None,
        cross: Any = None,
    ) -> ChannelMoments:
        """Fold in integer images from exact per-image ``(N, C)`` pixel counts, sums and sums of
        squares of raw values, and the batch's raw per-channel min/max (empty: above/below any value).

        The batch's mean and m2 come from its exact integer totals, each rounded once, so constant
        data has m2 exactly 0. The exact totals, and the batch's ``(C, 256)`` histogram ``hist``, are
        kept in the state for 8-bit data (``scale`` 255).
        """
        n_img = np.asarray(n_img, np.int64)
        s_img = np.asarray(s_img).astype(np.int64)
        q_img = np.asarray(q_img).astype(np.int64)
        valid = n_img > 0
        nf = np.maximum(n_img, 1).astype(np.float64)
        if int(n_img.max()) * int(q_img.max()) < 2**62:  # exact integer numerator, rounded once
            var_img = (n_img * q_img - s_img * s_img) / (nf * nf)
        else:  # images of many megapixels: float64 is accurate enough for a per-image diagnostic
            var_img = np.maximum(q_img / nf - (s_img / nf) ** 2, 0.0)
        self._count_images(n_img.shape[0], np.sqrt(var_img) / scale, valid)
        counts = [int(v) for v in n_img.sum(0)]
        totals, totals_sq = _column_totals(s_img), _column_totals(q_img)
        n, mean, m2 = _exact_moments(counts, totals, totals_sq, scale)
        self._fold(
            n,
            mean,
            m2,
            np.where(n > 0, np.asarray(vmin) / scale, np.inf),
            np.where(n > 0, np.asarray(vmax) / scale, -np.inf),
        )
        if scale != EIGHT_BIT_MAX or hist is None:
            self.histogram = None
        elif self.histogram is not None:
            self.histogram = self.histogram + np.asarray(hist, np.int64)
        if self.cross is not None:
            if cross is None:
                self.cross = None  # data that came without its cross sums: no covariance
            else:
                pad = [[int(v) for v in row] + [0] * (MAX_CHANNELS - len(row)) for row in cross]
                self.cross = [[a + b for a, b in zip(mine, theirs)] for mine, theirs in zip(self.cross, pad)]
        if self.image_moments is not None:
            self.image_moments = [
                [a + b for a, b in zip(mine, theirs)]
                for mine, theirs in zip(self.image_moments, _image_products(n_img, s_img, q_img))
            ]
        if scale != EIGHT_BIT_MAX:
            self.exact_sum = self.exact_sumsq = None
        elif self.exact_sum is not None:
            self.exact_sum = [a + b for a, b in zip(self.exact_sum, totals)]
            self.exact_sumsq = [a + b for a, b in zip(self.exact_sumsq, totals_sq)]
        self.pixel_max = max(self.pixel_max, float(scale))
        return self

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
        self._count_images(n_img.shape[0], np.sqrt(m2_img / np.maximum(weights, 1)), n_img > 0)

    def _count_images(self, images: int, image_std: np.ndarray, valid: np.ndarray) -> None:
        self.images += int(images)
        fixed = np.rint(np.where(valid, image_std, 0.0) * IMAGE_STD_SCALE)  # each image rounded once
        if fixed.size and fixed.max() >= 2**62:  # stds beyond 2**14 (raw float data): Python integers
            totals = [sum(int(v) for v in column) for column in fixed.T]
        else:
            totals = _column_totals(fixed.astype(np.int64))
        self.image_std_sum = [a + b for a, b in zip(self.image_std_sum, totals)]
        self.image_std_count = self.image_std_count + valid.sum(0)

    # ------------------------------------------------------------------ merge
    def merge(self, other: ChannelMoments) -> ChannelMoments:
        """Return the state of the union of both datasets; neither input changes."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {self.channels}-channel and {other.channels}-channel states")
        out = self.copy()
        out._fold(other.count, other.mean, other.m2, other.min, other.max)
        for f in STATE_FIELDS:
            if f.merge in ("moments", "min", "max") and f.per_channel:
                continue  # folded together above
            mine, theirs = getattr(out, f.name), getattr(other, f.name)
            if f.merge == "max":
                value = max(mine, theirs)
            elif mine is None or theirs is None:  # an optional field one side no longer has
                value = None
            elif f.kind == "exact" and f.width:
                value = [[a + b for a, b in zip(row_a, row_b)] for row_a, row_b in zip(mine, theirs)]
            elif f.kind == "exact":
                value = [a + b for a, b in zip(mine, theirs)]
            else:
                value = mine + theirs
            setattr(out, f.name, value)
        return out

    def all_gather_merge(self, group: Any = None) -> ChannelMoments:
        """The merged state of every rank of a ``torch.distributed`` process group.

        Each rank measures its own shard; this gathers the (JSON-sized) states, and every rank
        merges them in rank order, so all ranks get the same result, with every statistic the
        ranks kept (covariance, per-image moments). Collective: every rank must call it.
        """
        import torch.distributed as dist

        states: list[Any] = [None] * dist.get_world_size(group)
        dist.all_gather_object(states, self.state_dict(), group=group)
        merged = ChannelMoments.from_state_dict(states[0])
        for state in states[1:]:
            merged = merged.merge(ChannelMoments.from_state_dict(state))
        return merged

    def copy(self) -> ChannelMoments:
        return ChannelMoments.from_state_dict(self.state_dict())

    def repeated(self, channels: int) -> ChannelMoments:
        """A 1-channel state as the state of ``channels`` identical channels (grey read as RGB)."""
        if self.channels != 1:
            raise ValueError(f"only a 1-channel state can be repeated; this one has {self.channels}")
        out = ChannelMoments(channels)
        for f in STATE_FIELDS:
            value = getattr(self, f.name)
            if f.name == "cross" and value is not None:  # every pair of identical channels: sum of x*x
                value = [[value[0][0]] * channels + [0] * (MAX_CHANNELS - channels) for _ in range(channels)]
            elif f.per_channel and value is not None:
                value = value * channels if f.kind == "exact" else np.repeat(value, channels, axis=0)
            setattr(out, f.name, value)
        return out

    def _absorb(self, other: ChannelMoments) -> ChannelMoments:
        """Take ``other``'s state as this one's (an in-place ``merge``); returns ``self``."""
        for f in STATE_FIELDS:
            setattr(self, f.name, getattr(other, f.name))
        return self

    # ------------------------------------------------------------------ compute
    def compute(self) -> ChannelSummary:
        """Per-channel statistics in unit scale; exact from the integer sums for 8-bit data."""
        n = self.count
        if self.exact_sum is not None:
            mean, var = _exact_mean_var(n.tolist(), self.exact_sum, self.exact_sumsq)
        else:
            mean = self.mean
            with np.errstate(invalid="ignore", divide="ignore"):
                var = self.m2 / n
        with np.errstate(invalid="ignore", divide="ignore"):
            per_image = np.array([Fraction(t, IMAGE_STD_SCALE) for t in self.image_std_sum], np.float64)
            per_image = per_image / self.image_std_count

        def floats(values) -> tuple[float, ...]:
            return tuple(float(v) if math.isfinite(v) else math.nan for v in values)

        return ChannelSummary(
            count=tuple(int(v) for v in n),
            mean=floats(np.where(n > 0, mean, np.nan)),
            std=floats(np.sqrt(var)),
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
        out: dict[str, Any] = {"version": STATE_VERSION, "channels": self.channels}
        for f in STATE_FIELDS:
            out[f.name] = _to_json(f, getattr(self, f.name))
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], where: str = "state") -> ChannelMoments:
        """Rebuild a state, validating every field; errors name the field (``state.m2``...)."""
        if not isinstance(state, Mapping):
            raise StatsFileError(f"{where}: expected an object")
        version = state.get("version")
        if isinstance(version, bool) or version not in (1, STATE_VERSION):
            raise StatsFileError(f"{where}.version: expected 1 or {STATE_VERSION}; got {short_repr(version)}")
        if version == 1:
            state = _upgrade_v1(state, where)
        channels = state.get("channels")
        if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= 4:
            raise StatsFileError(f"{where}.channels: expected 1 to 4; got {channels!r}")
        out = cls(channels)
        for f in STATE_FIELDS:
            setattr(out, f.name, _from_json(f, state.get(f.name), channels, f"{where}.{f.name}"))
        out._check_consistency(where)
        return out

    def _check_consistency(self, where: str) -> None:
        """Relations between fields that no single field's type can express."""
        empty = self.count == 0
        if np.any(np.isinf(self.min) != empty) or np.any(np.isinf(self.max) != empty):
            raise StatsFileError(f"{where}.min: must be null exactly where count is 0")
        if np.any((self.min > self.max) & ~empty):
            raise StatsFileError(f"{where}.min: exceeds {where}.max")
        if (self.exact_sum is None) != (self.exact_sumsq is None):
            raise StatsFileError(f"{where}.exact_sum: exact_sum and exact_sumsq must both be null or both be set")
        if self.histogram is not None:
            self._check_histogram(where)
        if self.cross is not None:
            c = self.channels
            square = [row[:c] for row in self.cross[:c]]
            if any(v for row in self.cross for v in row[c:]) or any(
                square[i][j] != square[j][i] for i in range(c) for j in range(c)
            ):
                raise StatsFileError(f"{where}.cross: must be symmetric, with zeros beyond the channels")
            if self.exact_sumsq is not None and [square[i][i] for i in range(c)] != list(self.exact_sumsq):
                raise StatsFileError(f"{where}.cross: its diagonal must equal {where}.exact_sumsq")
            for i in range(c):
                for j in range(c):  # Cauchy-Schwarz
                    if square[i][j] ** 2 > square[i][i] * square[j][j]:
                        raise StatsFileError(f"{where}.cross: inconsistent with its diagonal")
        if self.exact_sum is not None:
            for n, total, total_sq in zip(self.count.tolist(), self.exact_sum, self.exact_sumsq):
                # Cauchy-Schwarz: S**2 <= n * Q; and Q <= 255 * S for values in 0..255
                if total > EIGHT_BIT_MAX * n or total * total > n * total_sq or total_sq > EIGHT_BIT_MAX * total:
                    raise StatsFileError(f"{where}.exact_sum: inconsistent with {where}.count and exact_sumsq")

    def _check_histogram(self, where: str) -> None:
        """The histogram must count every pixel, span exactly min..max, and give the exact sums."""
        if self.exact_sum is None:
            raise StatsFileError(f"{where}.histogram: must be null when exact_sum is")
        if self.histogram.sum(1).tolist() != self.count.tolist():
            raise StatsFileError(f"{where}.histogram: its counts do not add up to {where}.count")
        low, high = histogram_range(self.histogram)
        empty = self.count == 0
        if np.any(~empty & ((low / EIGHT_BIT_MAX != self.min) | (high / EIGHT_BIT_MAX != self.max))):
            raise StatsFileError(f"{where}.histogram: does not span {where}.min..{where}.max")
        levels = list(range(LEVELS))
        for c, row in enumerate(self.histogram.tolist()):
            total = sum(v * h for v, h in zip(levels, row))
            total_sq = sum(v * v * h for v, h in zip(levels, row))
            if (total, total_sq) != (self.exact_sum[c], self.exact_sumsq[c]):
                raise StatsFileError(f"{where}.histogram: inconsistent with {where}.exact_sum and exact_sumsq")

    def __getstate__(self) -> dict:  # what crosses process boundaries: the state, not the scratch
        return {**self.__dict__, "_workspace": {}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelMoments) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"ChannelMoments(channels={self.channels}, images={self.images}, count={self.count.tolist()})"


# ---------------------------------------------------------------------- serialisation
def _upgrade_v1(state: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A version-1 state (``image_std_sum`` as floats, no histogram) in version 2's form."""
    sums = state.get("image_std_sum")
    if not isinstance(sums, list) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v < 2**60 for v in sums
    ):
        raise StatsFileError(f"{where}.image_std_sum: expected non-negative numbers")
    return {**state, "version": STATE_VERSION, "image_std_sum": [round(v * IMAGE_STD_SCALE) for v in sums]}


def _to_json(f: StateField, value: Any) -> Any:
    if value is None or f.kind == "exact":
        return value
    if f.width:
        return value.tolist()
    if not f.per_channel:
        return int(value) if f.kind == "int" else float(value)
    if f.kind == "int":
        return [int(v) for v in value]
    return [float(v) if math.isfinite(v) else None for v in value]  # only min/max can be infinite (empty)


def _from_json(f: StateField, value: Any, channels: int, where: str) -> Any:
    if value is None and f.optional:
        return None
    numbers = (int,) if f.kind in ("int", "exact") else (int, float)
    kind_name = "integer" if f.kind in ("int", "exact") else "number"
    if not f.per_channel:
        return _check_number(value, numbers, kind_name, f, where)
    if f.width:
        if not isinstance(value, list) or len(value) != channels:
            raise StatsFileError(f"{where}: expected {channels} rows of {f.width} {kind_name}s")
        for row in value:
            if not isinstance(row, list) or len(row) != f.width:
                raise StatsFileError(f"{where}: expected {channels} rows of {f.width} {kind_name}s")
            for v in row:
                _check_number(v, numbers, kind_name, f, where)
        return [list(row) for row in value] if f.kind == "exact" else np.array(value, np.int64)
    if not isinstance(value, list) or len(value) != channels:
        raise StatsFileError(f"{where}: expected a list of {channels} {kind_name}s")
    values = [
        f.empty if v is None and math.isinf(f.empty) else _check_number(v, numbers, kind_name, f, where) for v in value
    ]
    if f.kind == "exact":
        return values
    return np.array(values, np.int64 if f.kind == "int" else np.float64)


def _check_number(v: Any, numbers: tuple[type, ...], kind_name: str, f: StateField, where: str) -> Any:
    if isinstance(v, bool) or not isinstance(v, numbers):
        raise StatsFileError(f"{where}: expected {kind_name} values; got {v!r}")
    if f.kind == "int" and not -(2**63) <= v < 2**63:
        raise StatsFileError(f"{where}: integer out of range; got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise StatsFileError(f"{where}: values must be finite; got {v!r}")
    if f.minimum is not None and v < f.minimum:
        raise StatsFileError(f"{where}: values must be >= {f.minimum}; got {v!r}")
    return v


# ---------------------------------------------------------------------- reductions
def uint8_histogram(batch: torch.Tensor) -> np.ndarray:
    """The ``(C, 256)`` counts of each raw value per channel of a uint8 batch ``(N, C, H, W)``, by
    ``torch.bincount`` on the batch's own device (exact integers)."""
    import torch

    rows = [torch.bincount(batch[:, c].reshape(-1), minlength=LEVELS) for c in range(batch.shape[1])]
    return torch.stack(rows).cpu().numpy().astype(np.int64)


def histogram_range(hist: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel raw min and max of ``(C, 256)`` counts; 256 and -1 for an empty channel."""
    present = np.asarray(hist) > 0
    any_present = present.any(1)
    vmin = np.where(any_present, present.argmax(1), LEVELS)
    vmax = np.where(any_present, LEVELS - 1 - present[:, ::-1].argmax(1), -1)
    return vmin.astype(np.int64), vmax.astype(np.int64)


def uint8_sums(batch: torch.Tensor, workspace: dict | None = None, method: str = "auto"):
    """Exact per-image ``(N, C)`` pixel counts, sums and sums of squares of a uint8 batch, reduced
    on the batch's own device.

    ``method="float32-groups"`` (the CPU's choice under ``auto``) sums pixels through float32 in
    groups of at most 256, where every product and partial sum is an integer below 2**24 and
    therefore exact in any summation order; the float32 buffers are reused from ``workspace``
    across batches. ``method="float64"`` (CUDA's choice) sums in float64, exact while a sum
    stays below 2**53. Both are plain torch code, so the CPU tests run each of them. Large
    images are reduced :data:`SLICE_ELEMENTS` values at a time.
    """
    import torch

    if method not in ("auto", "float32-groups", "float64"):
        raise ValueError(f"method must be auto, float32-groups or float64; got {method!r}")
    n, c = batch.shape[:2]
    rows = batch.reshape(n * c, -1)
    pixels = rows.shape[1]
    workspace = {} if workspace is None else workspace
    total = torch.zeros(n * c, dtype=torch.float64, device=batch.device)
    total_sq = torch.zeros_like(total)
    for part in _pixel_slices(rows, EXACT_GROUP):
        width = part.shape[1]
        group = next((g for g in range(min(EXACT_GROUP, width), 0, -1) if width % g == 0), 1)
        use = method
        if use == "auto":
            use = "float32-groups" if batch.device.type == "cpu" and group >= 16 else "float64"
        if use == "float32-groups":
            size = part.numel()
            if workspace.get("values") is None or workspace["values"].numel() < size:
                workspace["values"] = torch.empty(size, device=batch.device)
                workspace["squares"] = torch.empty(size, device=batch.device)
            values = workspace["values"][:size].view(n * c, width)
            values.copy_(part)
            values = values.view(-1, group)
            squares = torch.mul(values, values, out=workspace["squares"][:size].view(-1, group))
            total += values.sum(1).view(n * c, -1).to(torch.float64).sum(1)
            total_sq += squares.sum(1).view(n * c, -1).to(torch.float64).sum(1)
        else:
            x = part.to(torch.float64)
            total += x.sum(1)
            total_sq += (x * x).sum(1)
    return np.full((n, c), pixels, np.int64), total.view(n, c).cpu().numpy(), total_sq.view(n, c).cpu().numpy()


def _pixel_slices(rows: torch.Tensor, multiple: int = 1):
    """Column slices of ``rows`` (R, P) of about :data:`SLICE_ELEMENTS` values each (a multiple
    of ``multiple`` columns where possible); one slice, the whole of ``rows``, for small batches."""
    count, pixels = rows.shape[0], rows.shape[-1]
    width = max(1, SLICE_ELEMENTS // max(1, count))
    if width >= pixels:
        yield rows
        return
    width = max(multiple, width // multiple * multiple)
    for start in range(0, pixels, width):
        yield rows[..., start : start + width]


def _exact_moments(counts, totals, totals_sq, scale: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and m2 per channel in unit scale from exact integer sums, each rounded once.

    ``mean = S / (scale n)`` and ``m2 = (n Q - S**2) / (scale**2 n)``: Python integer arithmetic is
    exact at any size and ``int / int`` is correctly rounded.
    """
    means = [s / (n * scale) if n else 0.0 for n, s in zip(counts, totals)]
    m2s = [(n * q - s * s) / (n * scale * scale) if n else 0.0 for n, s, q in zip(counts, totals, totals_sq)]
    return np.array(counts, np.int64), np.array(means), np.array(m2s)


def _column_totals(values: np.ndarray) -> list[int]:
    """Exact per-column totals of non-negative int64 ``(N, C)`` values as Python ints."""
    if values.size == 0 or int(values.max()) < 2**63 // max(1, len(values)):  # int64 cannot overflow
        return [int(v) for v in values.sum(0)]
    return [sum(int(v) for v in column) for column in values.T]


def _integer_image_sums(batch: torch.Tensor):
    """Per-image ``(N, C)`` counts and exact int64 sums and sums of squares of a 16-bit batch (values
    0..65535: a sum of squares is exact up to 2**33 pixels per image), and per-channel min/max;
    reduced :data:`SLICE_ELEMENTS` values at a time, so no int64 copy of a large image is made."""
    import torch

    n, c = batch.shape[:2]
    x = batch.reshape(n * c, -1)
    pixels = x.shape[-1]
    total = torch.zeros(n * c, dtype=torch.int64, device=batch.device)
    total_sq = torch.zeros_like(total)
    for part in _pixel_slices(x):
        wide = part.to(torch.int64)
        total += wide.sum(-1)
        total_sq += (wide * wide).sum(-1)
    vmin = batch.amin(dim=(0, 2, 3)).to(torch.int64) if pixels else torch.full((c,), SIXTEEN_BIT_MAX + 1)
    vmax = batch.amax(dim=(0, 2, 3)).to(torch.int64) if pixels else torch.full((c,), -1)
    return (
        np.full((n, c), pixels, np.int64),
        total.view(n, c).cpu().numpy(),
        total_sq.view(n, c).cpu().numpy(),
        vmin.cpu().numpy(),
        vmax.cpu().numpy(),
    )


def _cross_sums(batch: torch.Tensor) -> list[list[int]]:
    """Raw ``sum(x_i * x_j)`` over every pixel of an integer batch, per channel pair ``(C, C)``.

    One float64 GEMM of the pixel matrix with itself per slice of pixels: every product and
    partial sum of 8-bit data is an integer below 2**53, so any summation order is exact; 16-bit
    values go through int64 (exact below 2**63, about 2 billion pixels per slice).
    """
    import torch

    c = batch.shape[1]
    x = batch.transpose(0, 1).reshape(c, -1)
    dtype = torch.float64 if batch.dtype == torch.uint8 else torch.int64
    total = [[0] * c for _ in range(c)]
    for part in _pixel_slices(x):
        values = part.to(dtype)
        gram = (values @ values.T) if dtype == torch.float64 else (values.unsqueeze(1) * values.unsqueeze(0)).sum(-1)
        gram = gram.cpu().tolist()
        total = [[a + int(b) for a, b in zip(row_t, row_g)] for row_t, row_g in zip(total, gram)]
    return total


def _uint8_cross_sums(batch: torch.Tensor, total_sq: np.ndarray) -> list[list[int]]:
    """:func:`_cross_sums` of a uint8 batch, whose sums of squares ``total_sq`` (per image and
    channel) are known already: one channel needs nothing more; a contiguous CPU batch goes to
    :mod:`prep.stats.kernels` where they were built; anything else to the float64 GEMM."""
    from prep.stats import kernels

    c = batch.shape[1]
    squares = [int(v) for v in np.asarray(total_sq).astype(np.int64).sum(0)]
    if c == 1:
        return [[squares[0]]]
    if kernels.AVAILABLE and batch.device.type == "cpu" and batch.is_contiguous():
        return kernels.cross_batch(batch.numpy(), squares)
    return _cross_sums(batch)


def _image_products(n_img, s_img, q_img) -> list[list[int]]:
    """Per channel, exact sums over images of :data:`IMAGE_MOMENTS` (Python integers)."""
    n, s, q = (np.asarray(a).astype(np.int64).astype(object) for a in (n_img, s_img, q_img))
    columns = (n, s, q, n * n, n * s, s * s, n * q, s * q, q * q)
    return [[int(v) for v in row] for row in zip(*(c.sum(0) for c in columns))]


Z95 = 1.959963984540054  # the standard normal's 97.5th percentile


def sample_intervals(moments: list[list[int]], sampled: int, total: int, pixel_max: float) -> dict[str, list[float]]:
    """Half-widths of 95% confidence intervals of each channel's mean and std (unit scale) from a
    simple random sample of ``sampled`` of ``total`` images, by the ratio estimator over images.

    With per-image pixel counts ``n_i``, raw sums ``s_i`` and sums of squares ``q_i``, the
    estimates are ``mu = S / N``, ``nu = Q / N`` and ``sigma = sqrt(nu - mu**2)``. Linearized,
    image i's residual is ``b_i = s_i - mu n_i`` for the mean and ``(a_i - 2 mu b_i) / (2 sigma)``
    with ``a_i = q_i - nu n_i`` for the std; an estimate's variance is
    ``(1 - m/M) / (m (m - 1) nbar**2) * sum(residual_i**2)`` with ``nbar = N / m``, and the
    half-width is 1.96 standard errors. The sums of products are exact integers from the state
    and are combined as exact fractions, so no cancellation loses digits.
    """
    from fractions import Fraction

    out: dict[str, list[float]] = {"mean": [], "std": []}
    m = sampled
    for big_n, big_s, big_q, nn, ns, ss, nq, sq, qq in moments:
        if m < 2 or big_n == 0:
            out["mean"].append(math.nan)
            out["std"].append(math.nan)
            continue
        mu, nu = Fraction(big_s, big_n), Fraction(big_q, big_n)
        var = nu - mu * mu
        sum_b2 = ss - 2 * mu * ns + mu * mu * nn
        sum_a2 = qq - 2 * nu * nq + nu * nu * nn
        sum_ab = sq - nu * ns - mu * nq + mu * nu * nn
        factor = (1 - Fraction(m, total)) / (m * (m - 1) * Fraction(big_n, m) ** 2)
        var_mean = factor * sum_b2
        var_std = factor * (sum_a2 - 4 * mu * sum_ab + 4 * mu * mu * sum_b2) / (4 * var) if var else Fraction(0)
        out["mean"].append(Z95 * math.sqrt(max(float(var_mean), 0.0)) / pixel_max)
        out["std"].append(Z95 * math.sqrt(max(float(var_std), 0.0)) / pixel_max)
    return out


def _exact_mean_var(counts, totals, totals_sq) -> tuple[np.ndarray, np.ndarray]:
    """``mean = S / (255 n)`` and ``var = (n Q - S**2) / (255 n)**2``, each an exact fraction rounded once."""
    scale = EIGHT_BIT_MAX
    means = [s / (n * scale) if n else math.nan for n, s in zip(counts, totals)]
    variances = [
        (n * q - s * s) / (n * n * scale * scale) if n else math.nan for n, s, q in zip(counts, totals, totals_sq)
    ]
    return np.array(means), np.array(variances)


def _float_image_moments(batch: torch.Tensor, scale: float):
    """Per-image ``(N, C)`` finite count, mean, m2, min, max in float64 on the batch's device.

    Two passes (the mean, then squared deviations from it), each over slices of
    :data:`SLICE_ELEMENTS` values, so the float64 scratch stays small whatever the image size.
    """
    import torch

    n, c = batch.shape[:2]
    x = batch.reshape(n * c, -1)
    dev_kw = {"dtype": torch.float64, "device": batch.device}
    count = torch.zeros(n * c, dtype=torch.int64, device=batch.device)
    total = torch.zeros(n * c, **dev_kw)
    vmin = torch.full((n * c,), math.inf, **dev_kw)
    vmax = torch.full((n * c,), -math.inf, **dev_kw)
    zero = torch.zeros((), **dev_kw)

    def unit(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        values = part.to(torch.float64)
        if scale != 1.0:
            values = values / scale
        return values, torch.isfinite(values)

    for part in _pixel_slices(x):
        values, finite = unit(part)
        count += finite.sum(-1)
        total += torch.where(finite, values, zero).sum(-1)
        vmin = torch.minimum(vmin, torch.where(finite, values, math.inf).amin(-1))
        vmax = torch.maximum(vmax, torch.where(finite, values, -math.inf).amax(-1))
    mean = total / count.clamp(min=1)
    m2 = torch.zeros_like(total)
    for part in _pixel_slices(x):
        values, finite = unit(part)
        deviation = torch.where(finite, values - mean[:, None], zero)
        m2 += (deviation * deviation).sum(-1)
    per_image = tuple(t.view(n, c).cpu().numpy() for t in (count, mean, m2, vmin, vmax))
    nonfinite = (x.shape[-1] - count).view(n, c).sum(0).cpu().numpy()
    return (*per_image, nonfinite)
