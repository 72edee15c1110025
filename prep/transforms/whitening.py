r"""ZCA and PCA whitening of fixed-size datasets, streamed in one exact pass.

Whitening decorrelates the pixels: it maps each flattened image :math:`x \in \mathbb{R}^D`
(:math:`D = C H W`, unit scale, C x H x W order) to :math:`y = W (x - \mu)` whose covariance
over the dataset is (nearly) the identity. With the dataset's mean :math:`\mu`, its population
covariance :math:`\Sigma` (ddof = 0, unit scale, from :class:`~prep.stats.cross_moments.CrossMoments`)
and the eigen decomposition :math:`\Sigma = U \Lambda U^\top` (eigenvalues
:math:`\lambda_1 \ge \dots \ge \lambda_D \ge 0`, columns of :math:`U` orthonormal):

.. math::

    W_\text{ZCA} = U \,\mathrm{diag}\!\left(\frac{1}{\sqrt{\lambda_i + \varepsilon}}\right) U^\top,
    \qquad
    W_\text{PCA} = \mathrm{diag}\!\left(\frac{1}{\sqrt{\lambda_i + \varepsilon}}\right) U^\top

and the whitened covariance is
:math:`W \Sigma W^\top = U \,\mathrm{diag}(\lambda_i / (\lambda_i + \varepsilon))\, U^\top` (ZCA),
the identity up to :math:`\varepsilon / (\lambda_i + \varepsilon)` per direction. ZCA
(zero-phase) is the whitening whose output stays closest to its input in mean squared error,
so whitened images still look like images (edges enhanced); PCA whitening rotates onto the principal axes (row ``i`` of
:math:`W_\text{PCA}` is the ``i``-th eigenvector, scaled; each eigenvector's entry of largest
magnitude is positive). :math:`\varepsilon` (default :data:`DEFAULT_EPS` = 1e-5, in unit scale
squared, i.e. a std of about 0.003 or 0.8 gray levels of 255) bounds the gain
:math:`1/\sqrt{\varepsilon}` of directions with no variance: directions whose
:math:`\lambda \ll \varepsilon` (constant pixels, or all but ``N - 1`` directions when there are
fewer images than dimensions) are damped rather than amplified into noise. Eigenvalues that
round-off makes slightly negative are clamped to 0. The eigen decomposition is float64
``torch.linalg.eigh``; kornia's ``ZCAWhitening(eps=eps, unbiased=False).fit(x)`` on the same
data gives the same :math:`W` and :math:`\mu` (kornia needs every image in memory at once,
prep one batch).

:func:`compute_whitening` streams a source once (any source of :mod:`prep.sources`, decoding
folders in worker processes) and refuses datasets whose images differ in size (use
``transform=`` / ``--resize`` to give them one) or whose :math:`D` exceeds
:data:`~prep.stats.cross_moments.MAX_DIM` (16,384: the :math:`D \times D` float64 state is 2 GiB,
and the decomposition takes minutes). :meth:`Whitening.save` writes a ``.pt`` file that
:func:`load_whitening` validates, and :meth:`Whitening.transform` gives the torchvision pipeline
``Compose([ConvertPixels(mode), ToDtype(float32, scale=True), LinearTransformation(W^T, mu)])``.

    >>> import prep, torch
    >>> images = [torch.tensor([[[a, b]]], dtype=torch.uint8) for a, b in ((0, 0), (255, 0), (0, 255), (255, 255))]
    >>> zca = prep.compute_whitening(images, eps=0.0)
    >>> zca.mean.tolist(), zca.matrix.tolist()     # covariance 0.25 I, so W = 2 I
    ([0.5, 0.5], [[2.0, 0.0], [0.0, 2.0]])
    >>> zca.transform()(images[1]).tolist()        # (1 - 0.5) * 2, (0 - 0.5) * 2
    [[[1.0, -1.0]]]
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torchvision.transforms import v2

from prep._version import __version__
from prep.errors import OptionError, ShapeMismatchError
from prep.files import write_torch_atomic
from prep.options import BY_NAME
from prep.pixels import CHANNELS, check_mode
from prep.stats.cross_moments import CrossMoments
from prep.transforms.normalize import ConvertPixels

DEFAULT_EPS = BY_NAME["eps"].default  # 1e-5, unit scale squared: a std of ~0.0032, 0.8 gray levels of 255
FILE_FORMAT = "prep-whitening"
FILE_VERSION = 1


# ------------------------------------------------------------------ the result


@dataclass(frozen=True, eq=False)
class Whitening:
    """A whitening map ``y = W (x - mean)`` for images of one shape, and where it comes from.

    Attributes:
        matrix: ``W``, float64 ``(D, D)``, acting on column vectors of unit-scale values
            (symmetric for ZCA; rows are scaled eigenvectors for PCA whitening).
        mean: the mean image ``mu``, float64 ``(D,)``, unit scale, flattened C x H x W.
        eigenvalues: the covariance's eigenvalues, float64 ``(D,)``, decreasing, clamped at 0
            (unit scale squared: the variance along each principal direction).
        eps: the regularizer added to each eigenvalue.
        pca: True for PCA whitening, False for ZCA.
        shape: the images' ``(C, H, W)``; ``D = C * H * W``.
        mode: prep's pixel conversion (``RGB`` or ``L``) the images were read with.
        count: the number of images measured.
        exact: the sums behind the covariance were exact integers (8- and 16-bit data).
        source, fingerprint: what was measured (as in stats files).
        preprocessing: the ``repr`` of the transform applied before measuring (``--resize``), or None.
        prep_version: the prep that computed it.
        state: the :class:`~prep.stats.cross_moments.CrossMoments` it was computed from (not saved).
    """

    matrix: torch.Tensor
    mean: torch.Tensor
    eigenvalues: torch.Tensor
    eps: float
    pca: bool
    shape: tuple[int, int, int]
    mode: str
    count: int
    exact: bool
    source: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict | None = None
    preprocessing: str | None = None
    prep_version: str = __version__
    state: CrossMoments | None = None

    def __repr__(self) -> str:
        where = self.source.get("path") or self.source.get("kind") or "tensors"
        c, h, w = self.shape
        return (
            f"Whitening({'PCA' if self.pca else 'ZCA'}, source={where!r}, mode={self.mode!r}, "
            f"shape={c}x{h}x{w}, D={self.dim}, images={self.count}, eps={self.eps:g})"
        )

    @property
    def dim(self) -> int:
        """``D = C * H * W``."""
        return math.prod(self.shape)

    @classmethod
    def from_moments(
        cls,
        state: CrossMoments,
        *,
        eps: float = DEFAULT_EPS,
        pca: bool = False,
        mode: str | None = None,
        source: Mapping[str, Any] | None = None,
        fingerprint: dict | None = None,
        preprocessing: str | None = None,
    ) -> Whitening:
        """The whitening of the data summed in ``state`` (for example shards merged with
        :meth:`CrossMoments.merge <prep.stats.cross_moments.CrossMoments.merge>`); computed on the
        state's device, returned on the CPU. ``mode`` defaults to the one of the channel count."""
        eps = check_eps(eps)
        if not isinstance(pca, bool):
            raise OptionError(f"pca must be True or False; got {pca!r}")
        if mode is None:
            mode = "L" if state.shape[0] == 1 else "RGB"
        if CHANNELS[check_mode(mode)] != state.shape[0]:
            raise OptionError(f"mode {mode} has {CHANNELS[mode]} channel(s); the images have {state.shape[0]}")
        matrix, eigenvalues = whitening_matrix(state.covariance(), eps, pca)
        return cls(
            matrix=matrix.cpu(),
            mean=state.mean().cpu(),
            eigenvalues=eigenvalues.cpu(),
            eps=eps,
            pca=pca,
            shape=state.shape,
            mode=mode,
            count=state.count,
            exact=state.exact,
            source=dict(source or {}),
            fingerprint=fingerprint,
            preprocessing=preprocessing,
            state=state,
        )

    def transform(self) -> v2.Compose:
        """``Compose([ConvertPixels(mode), ToDtype(float32, scale=True), WhiteningTransformation(...)])``,
        the last torchvision's ``LinearTransformation(W^T, mean)`` with the image shape checked first.

        Takes what :class:`~prep.transforms.normalize.ConvertPixels` takes (PIL images, tensors
        ``(..., C, H, W)``, NumPy images) of this :attr:`shape`, and gives float32 tensors
        ``W (x - mean)`` of the same shape. torchvision computes ``(x - mean) @ M`` on row
        vectors, so ``M`` is ``W^T`` (``W`` itself for ZCA). Images of another shape raise
        :class:`ShapeMismatchError`: apply the measuring transform (:attr:`preprocessing`) first.
        """
        matrix = self.matrix.T.to(torch.float32).contiguous()
        return v2.Compose(
            [
                ConvertPixels(self.mode),
                v2.ToDtype(torch.float32, scale=True),
                WhiteningTransformation(matrix, self.mean.to(torch.float32), self.shape, self.preprocessing),
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """What :meth:`save` writes: plain values and CPU tensors, loadable with ``weights_only=True``."""
        return {
            "format": FILE_FORMAT,
            "format_version": FILE_VERSION,
            "kind": "pca" if self.pca else "zca",
            "W": self.matrix.cpu().contiguous(),
            "mean": self.mean.cpu().contiguous(),
            "eigenvalues": self.eigenvalues.cpu().contiguous(),
            "eps": self.eps,
            "D": self.dim,
            "shape": list(self.shape),
            "mode": self.mode,
            "count": self.count,
            "exact": self.exact,
            "source": dict(self.source),
            "fingerprint": self.fingerprint,
            "preprocessing": self.preprocessing,
            "prep_version": self.prep_version,
        }

    def save(self, path: str | os.PathLike) -> None:
        """Write :meth:`to_dict` with ``torch.save`` atomically: a temporary file in the target's
        directory, flushed to disk, then renamed over the target (``os.replace``), so a reader or a
        crash sees the old file or the new one. A symlink is followed; a replaced file keeps its
        mode, a new one gets ``0666 & ~umask``."""
        write_torch_atomic(path, self.to_dict(), "whitening file")

    def summary(self) -> str:
        """A few lines for people: what was measured, the spectrum, and how to use the file."""
        lam = self.eigenvalues
        c, h, w = self.shape
        src = self.source
        where = f"{src.get('kind', '')} {src.get('path') or ''}".strip() + (
            f"  split={src['split']}" if src.get("split") else ""
        )
        below = int((lam < self.eps).sum())
        lines = [
            f"source                {where}  mode={self.mode}",
            f"images                {self.count}  of {c}x{h}x{w} (D = {self.dim})"
            + (f"  after {self.preprocessing}" if self.preprocessing else ""),
            f"sums                  {'exact integers' if self.exact else 'float64'}",
            f"whitening             {'PCA' if self.pca else 'ZCA'}, eps = {self.eps:g} (unit scale squared)",
            f"eigenvalues           largest {float(lam[0]):.6g}, smallest {float(lam[-1]):.6g}; "
            f"{below} of {self.dim} below eps",
            f"variance kept         top 10: {_share(lam, 10):.1%}, top 100: {_share(lam, 100):.1%}",
        ]
        return "\n".join(lines)


def _share(eigenvalues: torch.Tensor, k: int) -> float:
    total = float(eigenvalues.sum())
    return float(eigenvalues[:k].sum()) / total if total > 0 else 1.0


def check_eps(eps: Any) -> float:
    """``eps`` as a float when it is a finite number >= 0, else :class:`OptionError`."""
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not math.isfinite(eps) or eps < 0:
        raise OptionError(f"eps must be a finite number >= 0; got {eps!r}")
    return float(eps)


def whitening_matrix(covariance: torch.Tensor, eps: float, pca: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, eigenvalues)`` of a symmetric covariance (float64 ``(D, D)``), see the module.

    Eigenvalues are sorted in decreasing order and clamped at 0; each eigenvector is signed so
    that its entry of largest magnitude is positive (the first such entry on ties). With
    ``eps = 0`` every eigenvalue must be positive.
    """
    values, vectors = torch.linalg.eigh(covariance.to(torch.float64))  # ascending
    values = values.flip(0).clamp_min(0.0)
    vectors = vectors.flip(1)
    peak = vectors.abs().argmax(0)
    signs = torch.sign(vectors.gather(0, peak[None])).squeeze(0)
    vectors = vectors * torch.where(signs == 0, 1.0, signs)
    regularized = values + eps
    if not bool((regularized > 0).all()):
        raise OptionError("the covariance is singular (an eigenvalue is 0) and eps = 0; give eps > 0")
    scale = regularized.rsqrt()
    if pca:
        return scale[:, None] * vectors.T, values
    matrix = (vectors * scale) @ vectors.T
    return (matrix + matrix.T) / 2, values


class WhiteningTransformation(v2.LinearTransformation):
    """torchvision's ``LinearTransformation(matrix, mean)`` that first checks the image shape.

    torchvision checks only ``C * H * W``, so a transposed image or an ``8x98`` one would pass
    a ``28x28`` matrix and be whitened wrongly; this names the shapes instead.
    """

    def __init__(
        self, matrix: torch.Tensor, mean: torch.Tensor, shape: tuple[int, int, int], preprocessing: str | None = None
    ) -> None:
        super().__init__(matrix, mean)
        self.shape = tuple(shape)
        self.preprocessing = preprocessing

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if tuple(inpt.shape[-3:]) != self.shape:
            hint = f"apply {self.preprocessing} first" if self.preprocessing else "resize the images first"
            raise ShapeMismatchError(
                f"image has shape {tuple(inpt.shape)} but the whitening matrix is for images "
                f"{'x'.join(map(str, self.shape))} (C x H x W); {hint}"
            )
        parent = getattr(v2.LinearTransformation, "transform", None) or v2.LinearTransformation._transform
        return parent(self, inpt, params)

    _transform = transform  # the name torchvision < 0.21 calls

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
