r"""Mergeable first and second raw moments of flattened images: the state behind ZCA whitening.

Each image of shape ``(C, H, W)`` is one sample :math:`x \in \mathbb{R}^D`, :math:`D = C H W`,
flattened in C x H x W order (as ``torch.Tensor.reshape`` and torchvision's
``LinearTransformation`` flatten it). :class:`CrossMoments` keeps, in the raw units of the data
(0..255 for uint8, 0..65535 for 16-bit, unit scale for floats):

.. math::

    N, \qquad s = \sum_{n=1}^{N} x_n \in \mathbb{R}^D, \qquad
    S = \sum_{n=1}^{N} x_n x_n^\top = X^\top X \in \mathbb{R}^{D \times D}

updated by one float64 GEMM per batch (``S += X_b^T X_b``, on the batch's device) and merged by
addition, so shards, workers or ranks combine in any grouping. From them, in unit scale (raw
values divided by the pixel max ``p``):

.. math::

    \mu = \frac{s}{N p}, \qquad
    \Sigma = \frac{N S - s s^\top}{N^2 p^2} \quad (\text{population covariance, ddof } = 0)

**Exactness.** Integer data (uint8, 16-bit) gives integer products, and float64 represents
every integer below :math:`2^{53}` exactly, so each GEMM and each addition is exact, whatever
order the BLAS sums in, while every entry of :math:`S` stays below :math:`2^{53}` (the
values are non-negative, so partial sums never exceed the final ones, and
:math:`|S_{ij}| \le \max_i S_{ii}`). For uint8 data that holds for any
:math:`N \le 2^{53} / 255^2 \approx 138{,}519{,}019{,}680` images (about 138.5 billion, in
the worst case of every pixel 255; darker data allows more); for 16-bit data for
:math:`N \le 2^{53} / 65535^2 \approx 2{,}097{,}216` images. :attr:`CrossMoments.exact` says whether
the state is still exact. The covariance numerator :math:`N S - s s^\top` is then formed in
int64 (exact while :math:`N \max_i S_{ii} < 2^{63}`, about 11.9 million uint8 images) and
divided once in float64, so :math:`\Sigma` is correctly rounded up to two roundings; beyond
that it is computed in float64. Float data is accumulated in float64 without that guarantee.

**Cost.** The state holds :math:`8 D^2` bytes (75 MiB for CIFAR's :math:`D = 3072`, 2 GiB at
the limit :data:`MAX_DIM` :math:`= 16384`); a batch of ``n`` images costs :math:`2 n D^2`
flops.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

from prep.fields import is_int
from prep.pixels import checked_sixteen_bit, pixel_max_of

MAX_DIM = 16_384  # largest D = C*H*W: the D x D float64 state is 2 GiB there, eigh takes minutes
EXACT_LIMIT = 2**53  # float64 holds every integer below this exactly
INT64_LIMIT = 2**63
UINT8_EXACT_IMAGES = EXACT_LIMIT // 255**2  # 138,519,019,680 uint8 images of any values
SIXTEEN_BIT_EXACT_IMAGES = EXACT_LIMIT // 65535**2  # 2,097,216 16-bit images of any values


class CrossMoments:
    """Count, sum vector and cross-product matrix of flattened images, in float64 (see the module).

    Args:
        shape: the images' ``(C, H, W)``; every update must have it.
        device: where the sums live (``"cpu"``, ``"cuda"``): updates run there.

    The pixel max (255, 65535 or 1, by :mod:`prep.pixels`' rule) is taken from the first
    update; a later batch of another kind of data is refused, since raw sums of different
    scales cannot be added.

        >>> import torch
        >>> m = CrossMoments((1, 1, 2))
        >>> _ = m.update(torch.tensor([[[[0, 255]]], [[[255, 255]]]], dtype=torch.uint8))
        >>> m.count, m.total.tolist(), m.cross.tolist(), m.exact
        (2, [255.0, 510.0], [[65025.0, 65025.0], [65025.0, 130050.0]], True)
        >>> m.mean().tolist(), m.covariance().tolist()
        ([0.5, 1.0], [[0.25, 0.0], [0.0, 0.0]])
    """

    def __init__(self, shape: tuple[int, int, int] | list[int], device: Any = "cpu") -> None:
        sizes = tuple(int(v) for v in shape)
        if len(sizes) != 3 or min(sizes) < 1:
            raise ValueError(f"shape must be (C, H, W) with positive sizes; got {sizes}")
        dim = math.prod(sizes)
        if dim > MAX_DIM:
            raise ValueError(f"D = C*H*W = {dim} values per image exceeds the limit of {MAX_DIM}")
        self.shape: tuple[int, int, int] = (sizes[0], sizes[1], sizes[2])
        self.dim = dim
        self.count = 0
        self.pixel_max: float | None = None
        self.integer = True  # every value so far was an integer (uint8 or 16-bit data)
        self.total = torch.zeros(dim, dtype=torch.float64, device=device)
        self.cross = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    @property
    def device(self) -> torch.device:
        return self.total.device

    @property
    def exact(self) -> bool:
        """True when :attr:`total` and :attr:`cross` are the exact integer sums (integer data, every
        entry below 2^53)."""
        return self.integer and (self.count == 0 or self._max_square() < EXACT_LIMIT)

    def _max_square(self) -> int:
        """The largest entry of :attr:`cross` (its diagonal bounds every entry)."""
        return int(self.cross.diagonal().max().item())

    def update(self, batch: torch.Tensor, pixel_max: float | None = None) -> CrossMoments:
        """Add a batch ``(n, C, H, W)`` (uint8, 16-bit integers or floats) of :attr:`shape`.

        ``pixel_max``: the pixel max of the data when its dtype does not tell (16-bit values
        passed through a transform as float32); by default from the dtype. Returns ``self``.
        """
        if batch.ndim != 4 or tuple(batch.shape[1:]) != self.shape:
            raise ValueError(f"batch of shape {tuple(batch.shape)} does not hold images of shape {self.shape}")
        if pixel_max is None:
            pixel_max = pixel_max_of(batch.dtype)
        if self.pixel_max is not None and pixel_max != self.pixel_max:
            raise ValueError(
                f"images with pixel max {pixel_max:g} cannot join sums of images with pixel max {self.pixel_max:g} "
                "(8-bit, 16-bit and float data mixed)"
            )
        n = batch.shape[0]
        if n == 0:
            return self
        batch = checked_sixteen_bit(batch)  # integers other than uint8: int64 within 0..65535
        x = batch.to(device=self.device, dtype=torch.float64).reshape(n, self.dim)
        if batch.dtype.is_floating_point:
            if not bool(torch.isfinite(x).all()):
                raise ValueError("images hold NaN or infinite values, which have no covariance")
            self.integer = self.integer and bool((x == x.round()).all())
        self.pixel_max = pixel_max
        self.total.addmv_(x.T, torch.ones(n, dtype=torch.float64, device=self.device))  # s += X^T 1 (a GEMV)
        self.cross.addmm_(x.T, x)  # S += X^T X: one float64 GEMM, exact for integers below 2^53
        self.count += n
        return self

    def merge(self, other: CrossMoments) -> CrossMoments:
        """The state of both datasets together (on this state's device); neither input changes."""
        if other.shape != self.shape:
            raise ValueError(f"cannot merge states of images {self.shape} and {other.shape}")
        if self.pixel_max is not None and other.pixel_max is not None and self.pixel_max != other.pixel_max:
            raise ValueError(f"cannot merge states of pixel max {self.pixel_max:g} and {other.pixel_max:g}")
        out = self.copy()
        out.count += other.count
        out.total += other.total.to(out.device)
        out.cross += other.cross.to(out.device)
        out.pixel_max = self.pixel_max if self.pixel_max is not None else other.pixel_max
        out.integer = self.integer and other.integer
        return out

    def copy(self) -> CrossMoments:
        return self.to(self.device)

    def to(self, device: Any) -> CrossMoments:
        """This state with its sums on ``device``."""
        out = CrossMoments(self.shape, device=device)
        out.count, out.pixel_max, out.integer = self.count, self.pixel_max, self.integer
        out.total.copy_(self.total)
        out.cross.copy_(self.cross)
        return out

    def mean(self) -> torch.Tensor:
        """:math:`\\mu = s / (N p)`: the mean image, flattened, float64, unit scale."""
        p = self._require_data()
        return self.total / (self.count * p)

    def covariance(self) -> torch.Tensor:
        """:math:`\\Sigma = (N S - s s^T) / (N^2 p^2)`: population covariance (ddof=0), float64, unit
        scale (see the module for when it is exact)."""
        p = self._require_data()
        n = self.count
        if self.exact and n * self._max_square() < INT64_LIMIT and int(self.total.max().item()) ** 2 < INT64_LIMIT:
            s = self.total.to(torch.int64)
            numerator = n * self.cross.to(torch.int64) - s[:, None] * s[None, :]  # exact integers
            return numerator.to(torch.float64) / (float(n) * n * p * p)
        mean = self.total / n
        cov = (self.cross / n - mean[:, None] * mean[None, :]) / (p * p)
        return (cov + cov.T) / 2

    def _require_data(self) -> float:
        """The pixel max, once there is data; else ``ValueError``."""
        if self.count == 0 or self.pixel_max is None:
            raise ValueError("no images were added: mean and covariance are undefined")
        return self.pixel_max

    def state_dict(self) -> dict[str, Any]:
        """The state as plain values and CPU tensors (``torch.save``-able, ``weights_only`` loadable)."""
        return {
            "shape": list(self.shape),
            "count": self.count,
            "pixel_max": self.pixel_max,
            "integer": self.integer,
            "total": self.total.cpu(),
            "cross": self.cross.cpu(),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], device: Any = "cpu") -> CrossMoments:
        """Rebuild a state from :meth:`state_dict`, validating every field (``ValueError`` naming it)."""
        missing = {"shape", "count", "pixel_max", "integer", "total", "cross"} - set(state)
        if missing:
            raise ValueError(f"state has no field(s) {', '.join(sorted(missing))}")
        shape = state["shape"]
        if not isinstance(shape, list | tuple) or len(shape) != 3 or not all(is_int(v) and v > 0 for v in shape):
            raise ValueError(f"field 'shape' must be 3 positive integers; got {shape!r}")
        out = cls(shape, device=device)
        count, pixel_max, integer = state["count"], state["pixel_max"], state["integer"]
        if not is_int(count) or count < 0:
            raise ValueError(f"field 'count' must be a non-negative integer; got {count!r}")
        if pixel_max is not None and pixel_max not in (1.0, 255.0, 65535.0):
            raise ValueError(f"field 'pixel_max' must be 1, 255 or 65535; got {pixel_max!r}")
        if not isinstance(integer, bool):
            raise ValueError(f"field 'integer' must be a bool; got {integer!r}")
        for name, size in (("total", (out.dim,)), ("cross", (out.dim, out.dim))):
            value = state[name]
            if not isinstance(value, torch.Tensor) or value.dtype != torch.float64 or tuple(value.shape) != size:
                got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(f"field '{name}' must be a float64 tensor of shape {size}; got {got}")
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"field '{name}' holds NaN or infinite values")
            getattr(out, name).copy_(value)
        out.count, out.pixel_max, out.integer = int(count), None if pixel_max is None else float(pixel_max), integer
        return out

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CrossMoments)
            and (self.shape, self.count, self.pixel_max, self.integer)
            == (other.shape, other.count, other.pixel_max, other.integer)
            and torch.equal(self.total.cpu(), other.total.cpu())
            and torch.equal(self.cross.cpu(), other.cross.cpu())
        )

    __hash__ = None  # type: ignore[assignment]  # mutable: not hashable

    def __repr__(self) -> str:
        return (
            f"CrossMoments(shape={self.shape}, count={self.count}, pixel_max={self.pixel_max}, "
            f"exact={self.exact}, device={self.device})"
        )
