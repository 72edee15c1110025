"""Mergeable per-channel statistics: :class:`ChannelMoments`.

The state is declared once, in :data:`STATE_FIELDS`: each field's type, whether it is one value
per channel, and how two states combine. Construction, :meth:`~ChannelMoments.merge`,
:meth:`~ChannelMoments.state_dict` and :meth:`~ChannelMoments.from_state_dict` (with its
validation, :mod:`prep.stats.state_codec`) are derived from that table, as torchmetrics derives
them from ``add_state``; a new statistic is one row there and its update.

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

Each batch is reduced where it lives (CPU or CUDA) to per-image sums
(:mod:`prep.stats.reductions`), and only those few numbers reach the host. The same state serves
folder workers, dataset shards, checkpoints and ``torch.distributed``: ``state_dict`` is plain
JSON. A sampled pass's confidence intervals come from it by :mod:`prep.stats.intervals`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.pixels import EIGHT_BIT_MAX, LEVELS, checked_sixteen_bit, pixel_max_of
from prep.stats.exact import (
    added,
    column_totals,
    cross_in,
    exact_mean_var,
    exact_moments,
    image_products,
    image_products_exact,
)
from prep.stats.reductions import (
    WIDE_BINS,
    WIDE_FLOAT,
    WIDE_OFFSETS,
    WIDE_UNSIGNED,
    cross_sums,
    float_image_moments,
    float_key_histogram,
    histogram_range,
    integer_reduction,
    kernel_reduction,
    rekeyed,
    uint8_cross_sums,
    uint8_histogram,
    uint8_reduction,
    uint8_sums,
)
from prep.stats.state_codec import (
    IMAGE_STD_SCALE,
    STATE_VERSION,
    check_consistency,
    decode_field,
    encode_field,
    read_header,
)

if TYPE_CHECKING:
    import torch

IMAGE_MOMENTS = ("n", "s", "q", "nn", "ns", "ss", "nq", "sq", "qq")
MAX_CHANNELS = 1024  # channels (bands) a state may have
WIDE_MAX_CHANNELS = 64  # beyond: no wide histogram (512 KiB a channel; 64 bands hold 32 MiB a state)
CHANNELS_WIDTH = -1  # a StateField width: one value per channel (a C x C matrix)
_LEVEL_POWERS = np.stack([np.arange(LEVELS, dtype=np.float64), np.arange(LEVELS, dtype=np.float64) ** 2], axis=1)


@dataclass(frozen=True)
class StateField:
    """One piece of :class:`ChannelMoments` state.

    ``kind``: ``int`` (int64), ``float`` (float64) or ``exact`` (Python integers of any size).
    ``merge``: ``sum``, ``min``, ``max``, or ``moments`` (count/mean/m2, merged together by
    Chan's formula). ``empty``: the value of an empty state, and the identity of the merge;
    ``min``/``max`` store it as JSON ``null`` (they are infinite until a pixel arrives).
    ``optional``: the whole field may be None (exact sums and the histogram, once non-8-bit data
    is mixed in). ``width``: a row of values per channel instead of one (the histogram);
    :data:`CHANNELS_WIDTH` for a row as long as the channel count (the cross sums). ``sparse``:
    stored as its non-zero entries, and None in an empty state (the wide histogram).
    ``since``: the state version that added the field; an older state reads as empty there.
    """

    name: str
    kind: str
    merge: str
    per_channel: bool = True
    empty: float = 0
    minimum: float | None = None
    optional: bool = False
    width: int = 0  # values per channel: 0 for one, else a row of ``width`` (a histogram)
    sparse: bool = False
    since: int = 1

    def row(self, channels: int) -> int:
        """Values per channel: 0 for one, else the row's length."""
        return channels if self.width == CHANNELS_WIDTH else self.width

    def default(self, channels: int) -> Any:
        width = self.row(channels)
        if self.sparse:
            return None
        if self.kind == "exact":
            return [[0] * width for _ in range(channels)] if width else [0] * channels
        dtype = np.int64 if self.kind == "int" else np.float64
        if width:
            return np.full((channels, width), self.empty, dtype)
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
    StateField("image_moments", "exact", "sum", optional=True, width=len(IMAGE_MOMENTS)),
    # raw sums of x_i * x_j over every pixel, row i holding channel i's products with every
    # channel; integer data, when asked for (the colour covariance)
    StateField("cross", "exact", "sum", optional=True, width=CHANNELS_WIDTH),
    StateField("images", "int", "sum", per_channel=False, minimum=0),
    StateField("image_std_sum", "exact", "sum", minimum=0),  # per-image stds in units of 2**-48
    StateField("image_std_count", "int", "sum", minimum=0),
    StateField("nonfinite", "int", "sum", minimum=0),
    StateField("pixel_max", "float", "max", per_channel=False, minimum=0),
    StateField("nodata_count", "int", "sum", minimum=0, since=3),  # pixels equal to the channel's nodata value
    # the wide histogram: per channel, the counts of each 16-bit value (kind 1: 0..65535, kind 2:
    # -32768..32767) or of the top 16 bits of each float's order-preserving key (kind 3); kind 0:
    # no data yet, -1: not kept (data of another kind or unit mixed in, or too many channels)
    StateField("wide", "int", "wide", minimum=0, optional=True, width=WIDE_BINS, sparse=True, since=3),
    StateField("wide_kind", "int", "wide", per_channel=False, minimum=-1, since=3),
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

    # the state, one attribute per entry of STATE_FIELDS (declared here for readers and type checkers)
    count: np.ndarray  # int64 (C,)
    mean: np.ndarray  # float64 (C,)
    m2: np.ndarray  # float64 (C,)
    min: np.ndarray  # float64 (C,), +inf where empty
    max: np.ndarray  # float64 (C,), -inf where empty
    exact_sum: list[int] | None
    exact_sumsq: list[int] | None
    histogram: np.ndarray | None  # int64 (C, 256)
    image_moments: list[list[int]] | None
    cross: list[list[int]] | None
    images: int
    image_std_sum: list[int]
    image_std_count: np.ndarray  # int64 (C,)
    nonfinite: np.ndarray  # int64 (C,)
    pixel_max: float
    nodata_count: np.ndarray  # int64 (C,)
    wide: np.ndarray | None  # int64 (C, 65536)
    wide_kind: int

    def __init__(
        self,
        channels: int,
        track_images: bool = False,
        covariance: bool = False,
        nodata: tuple[float, ...] | None = None,
    ) -> None:
        if not 1 <= channels <= MAX_CHANNELS:
            raise ValueError(f"channels must be 1 to {MAX_CHANNELS}; got {channels}")
        self.channels = channels
        for f in STATE_FIELDS:
            setattr(self, f.name, f.default(channels))
        if channels > WIDE_MAX_CHANNELS:
            self.wide_kind = -1
        # configuration, not state: per channel, the value whose pixels are left out (or None)
        self.nodata = None if nodata is None else _checked_nodata(nodata, channels)
        if not track_images:  # the per-image products cost a little; sampled passes want them
            self.image_moments = None
        if not covariance:  # the cross sums cost a pass over the pixels; asked for with covariance
            self.cross = None
        self._workspace: dict = {}  # scratch buffers reused across updates; not part of the state

    # ------------------------------------------------------------------ update
    def update(
        self, batch: torch.Tensor, pixel_max: float | None = None, mask: torch.Tensor | None = None
    ) -> ChannelMoments:
        """Fold in a batch ``(N, C, H, W)`` (or one image ``(C, H, W)``) on any device.

        Values are read by :mod:`prep.pixels`' rule for the dtype (uint8 / 255, other integers
        / 65535, floats as they are) unless ``pixel_max`` says otherwise (1: the data's own
        values, any integer or float dtype). Integers of up to 16 bits, signed or not, are
        reduced exactly, with their wide histogram; other data in float64. ``mask`` (``(N, H, W)``
        booleans, or ``(H, W)`` for one image) measures only the pixels where it is True (a
        foreground, a label's region), in every channel.
        """
        import torch

        if batch.ndim == 3:
            batch = batch.unsqueeze(0)
            mask = None if mask is None else mask.reshape(1, *batch.shape[-2:])
        if batch.ndim != 4 or batch.shape[1] != self.channels:
            raise ValueError(f"expected a batch (N, {self.channels}, H, W); got shape {tuple(batch.shape)}")
        if batch.shape[0] == 0:
            return self
        masked = self.nodata is not None or mask is not None
        if batch.shape[1] > 1 and batch.stride(1) == 0 and not masked:  # grey measured as RGB
            part = ChannelMoments(1, self.image_moments is not None, self.cross is not None)
            part.wide_kind = self.wide_kind if self.wide_kind < 0 else 0
            part.update(batch[:, :1], pixel_max)
            return self._absorb(self.merge(part.repeated(self.channels)))
        if batch.dtype == torch.uint8 and pixel_max in (None, EIGHT_BIT_MAX) and not masked:
            native = uint8_reduction(batch, self.cross is not None)  # one read, where the kernels were built
            if native is not None:
                n, total, total_sq, hist, cross = native
            else:
                n, total, total_sq = uint8_sums(batch, self._workspace)
                hist = uint8_histogram(batch)
                cross = None if self.cross is None else uint8_cross_sums(batch, total_sq)
            return self._fold_integers(n, total, total_sq, *histogram_range(hist), hist=hist, cross=cross)
        scale = pixel_max_of(batch.dtype) if pixel_max is None else float(pixel_max)
        if not batch.dtype.is_floating_point:
            if self.nodata is not None:
                _check_nodata_fits(self.nodata, batch.dtype)
            reduced = None
            if mask is None and pixel_max is not None:
                reduced = kernel_reduction(batch, self.nodata, self._wide_target(batch, float(pixel_max)))
            if reduced is None:
                if batch.dtype in _unsigned_wide():  # torch reads uint16/uint32 but few of its ops take them
                    batch = batch.to(torch.int32 if batch.dtype == torch.uint16 else torch.int64)
                if pixel_max is None:
                    batch = checked_sixteen_bit(batch)
                reduced = integer_reduction(batch, self.nodata, mask)
            if reduced is not None:  # values of up to 16 bits: exact sums and the wide histogram
                cross = None
                if self.cross is not None and not masked:
                    cross = (
                        uint8_cross_sums(batch, reduced.q)
                        if batch.dtype == torch.uint8
                        else cross_sums(batch, column_totals(np.asarray(reduced.q, np.int64)))
                    )
                counts8 = None
                if batch.dtype == torch.uint8 and reduced.wide is not None:
                    counts8 = reduced.wide[:, : EIGHT_BIT_MAX + 1]
                self.nodata_count = self.nodata_count + reduced.excluded
                return self._fold_integers(
                    reduced.n,
                    reduced.s,
                    reduced.q,
                    reduced.vmin,
                    reduced.vmax,
                    scale=scale,
                    hist=counts8,
                    cross=cross,
                    wide=(reduced.kind, reduced.wide),
                )
        n, mean, m2, vmin, vmax, nonfinite, excluded = float_image_moments(batch, scale, self.nodata, mask)
        wide = None
        if self.wide_kind >= 0 and self.pixel_max in (0, scale):
            wide = float_key_histogram(*_valid_values(batch, self.nodata, mask))
        self._fold_wide(WIDE_FLOAT if wide is not None else -1, wide, scale)
        self._fold_images(n, mean, m2, vmin, vmax)
        self.nonfinite += nonfinite
        self.nodata_count = self.nodata_count + excluded
        self.exact_sum = self.exact_sumsq = self.histogram = self.image_moments = self.cross = None
        self.pixel_max = max(self.pixel_max, scale)
        return self

    def update_image(self, array: np.ndarray, pixel_max: float, mask: np.ndarray | None = None) -> ChannelMoments:
        """Fold in one image ``(C, H, W)`` held in NumPy, on the CPU; a 1-channel image is read
        as the same grey in every channel (reduced once, never copied per channel). ``mask``
        ``(H, W)``: only its True pixels count."""
        import torch

        image = torch.from_numpy(np.require(array, requirements=["C", "W"]))
        if image.ndim == 3 and image.shape[0] == 1 and self.channels > 1:
            image = image.expand(self.channels, *image.shape[1:])
        region = None if mask is None else torch.from_numpy(np.require(mask, bool, ["C"]))
        return self.update(image, pixel_max, region)

    def as_one_image(self) -> ChannelMoments:
        """Count this state, made of several updates (the slabs of a volume), as one image: its
        images become 1 (0 when empty), its per-image std the whole state's, and with
        ``track_images`` its per-image products those of its exact totals (16-bit data; other
        data has none). Returns ``self``."""
        valid = self.count > 0
        std = np.asarray(self.compute().std, np.float64) if valid.any() else np.zeros(self.channels)
        self.images = 1 if valid.any() else 0
        self.image_std_sum = [int(v) for v in np.rint(np.where(valid, std, 0.0) * IMAGE_STD_SCALE)]
        self.image_std_count = valid.astype(np.int64)
        if self.image_moments is not None:
            if self.wide is not None and self.wide_kind in WIDE_OFFSETS:
                sums = [wide_sums(row, WIDE_OFFSETS[self.wide_kind]) for row in self.wide]
                n, s, q = ([[v] for v in column] for column in ([int(c) for c in self.count], *zip(*sums)))
                self.image_moments = image_products_exact(n, s, q)
            else:
                self.image_moments = None
        return self

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
        total = hist.sum(0)
        return self._fold_integers(
            hist.sum(-1), sums[..., 0], sums[..., 1], *histogram_range(total), hist=total, cross=cross
        )

    def update_image_sums(self, moments: np.ndarray, hist: np.ndarray, cross: Any = None) -> ChannelMoments:
        """Fold in 8-bit images given as their per-image ``(N, C, 3)`` pixel counts, sums and sums
        of squares (exact integers) and their summed ``(C, 256)`` histogram, with their summed
        ``(C, C)`` raw cross sums when the state keeps them: what :meth:`update_histograms` folds,
        from what the native kernels give per image, without a copy of every histogram."""
        moments = np.asarray(moments, dtype=np.int64)
        hist = np.asarray(hist, dtype=np.int64)
        if moments.ndim != 3 or moments.shape[1:] != (self.channels, 3) or hist.shape != (self.channels, LEVELS):
            raise ValueError(
                f"expected moments (N, {self.channels}, 3) and a histogram ({self.channels}, {LEVELS}); "
                f"got {moments.shape} and {hist.shape}"
            )
        if moments.shape[0] == 0:
            return self
        return self._fold_integers(
            moments[..., 0], moments[..., 1], moments[..., 2], *histogram_range(hist), hist=hist, cross=cross
        )

    def _fold_integers(
        self,
        n_img,
        s_img,
        q_img,
        vmin,
        vmax,
        scale: float = EIGHT_BIT_MAX,
        hist: np.ndarray | None = None,
        cross: Any = None,
        wide: tuple[int, np.ndarray | None] | None = None,
    ) -> ChannelMoments:
        """Fold in integer images from exact per-image ``(N, C)`` pixel counts, sums and sums of
        squares of raw values, and the batch's raw per-channel min/max (empty: above/below any value).

        The batch's mean and m2 come from its exact integer totals, each rounded once, so constant
        data has m2 exactly 0. The exact totals, and the batch's ``(C, 256)`` histogram ``hist``, are
        kept in the state for 8-bit data (``scale`` 255); ``wide`` is the batch's wide histogram
        ``(kind, counts)`` of 16-bit data.
        """
        if wide is None:
            self._fold_wide(-1, None, scale)
        elif wide[1] is not None:
            self._fold_wide(wide[0], wide[1], scale)
        # else: the counts were added into this state's histogram in place (kernel_reduction's ``into``)
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
        totals, totals_sq = column_totals(s_img), column_totals(q_img)
        n, mean, m2 = exact_moments(counts, totals, totals_sq, scale)
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
                target = max(self.pixel_max, float(scale))
                rows = [[int(v) for v in row] for row in cross]
                mine, theirs = cross_in(self.cross, self.pixel_max, target), cross_in(rows, scale, target)
                self.cross = None if mine is None or theirs is None else added(mine, theirs)
        if self.image_moments is not None:
            self.image_moments = [
                [a + b for a, b in zip(mine, theirs)]
                for mine, theirs in zip(self.image_moments, image_products(n_img, s_img, q_img))
            ]
        if scale != EIGHT_BIT_MAX:
            self.exact_sum = self.exact_sumsq = None
        elif self.exact_sum is not None and self.exact_sumsq is not None:
            self.exact_sum = [a + b for a, b in zip(self.exact_sum, totals)]
            self.exact_sumsq = [a + b for a, b in zip(self.exact_sumsq, totals_sq)]
        self.pixel_max = max(self.pixel_max, float(scale))
        return self

    def _wide_target(self, batch: torch.Tensor, scale: float) -> np.ndarray | None:
        """This state's 0..65535 histogram for a native pass to add a uint16 batch into in place
        (made when the state has none yet), or None where the batch's counts must be folded."""
        import torch

        if not hasattr(torch, "uint16") or batch.dtype != torch.uint16 or batch.device.type != "cpu":
            return None
        if self.pixel_max not in (0, scale) or self.wide_kind not in (0, WIDE_UNSIGNED):
            return None
        from prep.stats import kernels

        if not kernels.AVAILABLE:
            return None
        if self.wide is None:
            self.wide = np.zeros((self.channels, WIDE_BINS), np.int64)
        self.wide_kind = WIDE_UNSIGNED
        return self.wide

    def _fold_wide(self, kind: int, hist: np.ndarray | None, scale: float) -> None:
        """Add a batch's wide histogram (``kind`` -1: the batch has none) in the units ``scale``."""
        if self.pixel_max not in (0, scale):  # another unit: the bins would not be comparable
            kind, hist = -1, None
        self.wide_kind, self.wide = merged_wide(self.wide_kind, self.wide, kind, hist)

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
            totals = column_totals(fixed.astype(np.int64))
        self.image_std_sum = [a + b for a, b in zip(self.image_std_sum, totals)]
        self.image_std_count = self.image_std_count + valid.sum(0)

    # ------------------------------------------------------------------ merge
    def merge(self, other: ChannelMoments) -> ChannelMoments:
        """Return the state of the union of both datasets; neither input changes."""
        if other.channels != self.channels:
            raise ValueError(f"cannot merge {self.channels}-channel and {other.channels}-channel states")
        out = self.copy()
        out._fold(other.count, other.mean, other.m2, other.min, other.max)
        target = max(self.pixel_max, other.pixel_max)  # cross sums add in one unit: the larger raw max
        out.cross = cross_in(out.cross, self.pixel_max, target)
        if 0 in (self.pixel_max, other.pixel_max) or self.pixel_max == other.pixel_max:
            out.wide_kind, out.wide = merged_wide(out.wide_kind, out.wide, other.wide_kind, other.wide)
        else:  # bins of two units
            out.wide_kind, out.wide = -1, None
        for f in STATE_FIELDS:
            if (f.merge in ("moments", "min", "max") and f.per_channel) or f.merge == "wide":
                continue  # folded together above
            mine, theirs = getattr(out, f.name), getattr(other, f.name)
            if f.name == "cross":
                theirs = cross_in(theirs, other.pixel_max, target)
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
        """An independent copy of the state (and the nodata values)."""
        out = ChannelMoments(self.channels, nodata=self.nodata)
        for f in STATE_FIELDS:
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                value = value.copy()
            elif isinstance(value, list):
                value = [list(row) if isinstance(row, list) else row for row in value]
            setattr(out, f.name, value)
        return out

    def repeated(self, channels: int) -> ChannelMoments:
        """A 1-channel state as the state of ``channels`` identical channels (grey read as RGB)."""
        if self.channels != 1:
            raise ValueError(f"only a 1-channel state can be repeated; this one has {self.channels}")
        out = ChannelMoments(channels)
        for f in STATE_FIELDS:
            value = getattr(self, f.name)
            if f.name == "cross" and value is not None:  # every pair of identical channels: sum of x*x
                value = [[value[0][0]] * channels for _ in range(channels)]
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
            mean, var = exact_mean_var(n.tolist(), self.exact_sum, self.exact_sumsq)
        elif self.wide is not None and self.wide_kind in WIDE_OFFSETS and float(self.pixel_max).is_integer():
            # 16-bit data: exact from its histogram
            totals = [wide_sums(row, WIDE_OFFSETS[self.wide_kind]) for row in self.wide]
            mean, var = exact_mean_var(
                n.tolist(), [t[0] for t in totals], [t[1] for t in totals], scale=int(self.pixel_max)
            )
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
            out[f.name] = encode_field(f, getattr(self, f.name))
        return out

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], where: str = "state") -> ChannelMoments:
        """Rebuild a state, validating every field (:mod:`prep.stats.state_codec`); errors name the
        field (``state.m2``...)."""
        state, channels = read_header(state, where)
        out = cls(channels)
        for f in STATE_FIELDS:
            setattr(out, f.name, decode_field(f, state.get(f.name), channels, f"{where}.{f.name}"))
        check_consistency(out, where)
        return out

    def __getstate__(self) -> dict:  # what crosses process boundaries: the state, not the scratch
        return {**self.__dict__, "_workspace": {}}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ChannelMoments) and self.state_dict() == other.state_dict()

    def __repr__(self) -> str:
        return f"ChannelMoments(channels={self.channels}, images={self.images}, count={self.count.tolist()})"


# ---------------------------------------------------------------------- exact arithmetic


def _unsigned_wide() -> tuple:
    """torch's unsigned dtypes wider than 8 bits (as far as this torch has them)."""
    import torch

    return tuple(getattr(torch, name) for name in ("uint16", "uint32", "uint64") if hasattr(torch, name))


def merged_wide(kind_a: int, a: np.ndarray | None, kind_b: int, b: np.ndarray | None) -> tuple[int, np.ndarray | None]:
    """The wide histogram of the union of two parts (``kind`` 0: no data yet, -1: not kept); ``a``
    may be added to in place (the caller owns it), ``b`` is never changed.

    Integer kinds combine when one can hold the other's values (a ``0..65535`` histogram whose
    values are all below 32768 is also a ``-32768..32767`` one, and the reverse for non-negative
    data); anything else is not kept."""
    if kind_a == 0:
        return kind_b, None if b is None else b.copy()
    if kind_b == 0:
        return kind_a, a
    if kind_a < 0 or kind_b < 0 or a is None or b is None:
        return -1, None
    if kind_a == kind_b:
        a += b  # in place: ``a`` is the caller's own (a state's copy, or the state being updated)
        return kind_a, a
    if kind_a in WIDE_OFFSETS and kind_b in WIDE_OFFSETS:
        for kind, mine, theirs in ((kind_a, a, rekeyed(b, kind_b, kind_a)), (kind_b, rekeyed(a, kind_a, kind_b), b)):
            if mine is not None and theirs is not None:
                return kind, mine + theirs
    return -1, None


def wide_sums(row: np.ndarray, offset: int) -> tuple[int, int]:
    """The exact sum and sum of squares (Python integers) of the values a wide histogram row counts."""
    bins = np.flatnonzero(row)
    values = (bins + offset).astype(object)
    counts = row[bins].astype(object)
    return int((values * counts).sum()), int((values * values * counts).sum())


def _valid_values(
    batch: torch.Tensor, nodata: tuple[float, ...] | None, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A float batch ``(N, C, P)`` and which of its values count (finite, not nodata, in the mask)."""
    import torch

    values = batch.reshape(*batch.shape[:2], -1)
    valid = torch.isfinite(values)
    if mask is not None:
        valid &= mask.reshape(batch.shape[0], 1, -1).to(torch.bool)
    if nodata is not None:
        fills = torch.tensor(nodata, dtype=values.dtype, device=values.device)[None, :, None]
        valid &= values != fills
    return values, valid


def _check_nodata_fits(nodata: tuple[float, ...], dtype: torch.dtype) -> None:
    """``ValueError`` for a nodata value that is no value of integer ``dtype`` (no pixel could
    equal it: a mistake, such as -9999 for uint16 data)."""
    import torch

    bits = {"uint16": 16, "uint32": 32, "uint64": 64}
    name = str(dtype).removeprefix("torch.")
    low, high = (0, 2 ** bits[name] - 1) if name in bits else (torch.iinfo(dtype).min, torch.iinfo(dtype).max)
    for value in nodata:
        if math.isnan(value):
            continue
        if not float(value).is_integer() or not low <= value <= high:
            raise ValueError(f"nodata {value:g} does not fit {name} data ({low}..{high})")


def _checked_nodata(nodata: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """One nodata value per channel (a single value applies to every channel)."""
    values = tuple(float(v) for v in nodata)
    if len(values) == 1:
        values *= channels
    if len(values) != channels:
        raise ValueError(f"nodata: expected 1 or {channels} values (one per channel); got {len(values)}")
    return values
