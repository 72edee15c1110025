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

    >>> import prep.transforms.whitening as pw, torch
    >>> images = [torch.tensor([[[a, b]]], dtype=torch.uint8) for a, b in ((0, 0), (255, 0), (0, 255), (255, 255))]
    >>> zca = pw.compute_whitening(images, eps=0.0)
    >>> zca.mean.tolist(), zca.matrix.tolist()     # covariance 0.25 I, so W = 2 I
    ([0.5, 0.5], [[2.0, 0.0], [0.0, 2.0]])
    >>> zca.transform()(images[1]).tolist()        # (1 - 0.5) * 2, (0 - 0.5) * 2
    [[[1.0, -1.0]]]
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from prep._version import __version__
from prep.engine.workers import MAX_WORKERS_PER_CPU, cpu_count, describe_failure, map_ordered, worker_limit
from prep.errors import (
    BadImageError,
    OptionError,
    OutputError,
    PrepError,
    PrepWarning,
    ShapeMismatchError,
    SourceError,
    StatsFileError,
    os_reason,
)
from prep.files import output_target, write_atomic
from prep.insight.summary import progress_bar
from prep.options import DEFAULTS, SOURCE_OPTIONS, check_options
from prep.pixels import CHANNELS, MODES, check_mode, convert_channels, pixel_max_of, to_array
from prep.sources import BatchSource, FileChunk, Source, TaskSource, resolve_source
from prep.sources.base import open_regular
from prep.stats.cross_moments import MAX_DIM, CrossMoments
from prep.transforms.measurement import apply_transform, check_transform, describe_transform, is_picklable
from prep.transforms.normalize import ConvertPixels

DEFAULT_EPS = 1e-5  # unit scale squared: a std of ~0.0032, 0.8 gray levels of 255
FILE_FORMAT = "prep-whitening"
FILE_VERSION = 1
FOLDER_CHUNK = 32  # files per worker task, as in prep.engine.measure
FILE_FIELDS = (  # every field of a whitening file, in the order they are checked
    "format_version",
    "kind",
    "W",
    "mean",
    "eigenvalues",
    "eps",
    "D",
    "shape",
    "mode",
    "count",
    "exact",
    "source",
    "fingerprint",
    "preprocessing",
    "prep_version",
)
MAX_FILE_BYTES = 2 * 8 * MAX_DIM * MAX_DIM + (64 << 20)  # a float64 W at the largest D, with room
log = logging.getLogger("prep")


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
        """``Compose([ConvertPixels(mode), ToDtype(float32, scale=True), LinearTransformation(W^T, mean)])``.

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


# ------------------------------------------------------------------ the file


def write_torch_atomic(path: str | os.PathLike, obj: Any, what: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`prep.files.write_atomic`)."""
    text = os.fspath(path)
    output_target(text, what)
    try:
        write_atomic(text, lambda f: torch.save(obj, f))
    except OSError as exc:
        raise OutputError(f"{text}: cannot write the {what} ({os_reason(exc)})") from None


def _check_matrix(w: torch.Tensor, eigenvalues: torch.Tensor, eps: float, kind: str, bad) -> None:
    """``W`` must be the whitening matrix of these eigenvalues and eps, in O(D**2): with
    ``g = 1/sqrt(lambda + eps)``, ZCA's ``W`` is symmetric with trace ``sum(g)``, PCA's rows have
    squared norms ``g**2`` in order, and both have ``|W|_F**2 = sum(g**2)`` (U is orthogonal)."""
    gains = 1.0 / torch.sqrt(eigenvalues + eps)
    scale = float(gains.max()) if len(gains) else 1.0
    if not math.isclose(float((w * w).sum()), float((gains * gains).sum()), rel_tol=1e-6):
        raise bad("W", "is not the whitening matrix of the eigenvalues and eps (its norm differs); was it edited?")
    if kind == "zca":
        if float((w - w.T).abs().max()) > 1e-9 * scale:
            raise bad("W", "must be symmetric for ZCA whitening; was it edited?")
        if not math.isclose(float(w.trace()), float(gains.sum()), rel_tol=1e-6):
            raise bad("W", "is not the ZCA matrix of the eigenvalues and eps (its trace differs); was it edited?")
    elif not torch.allclose((w * w).sum(1), gains * gains, rtol=1e-6, atol=0):
        raise bad("W", "is not the PCA whitening matrix of the eigenvalues and eps (row norms differ)")


def load_whitening(path: str | os.PathLike) -> Whitening:
    """Read and validate a file written by :meth:`Whitening.save`.

    The file is read with ``torch.load(weights_only=True)``, which builds only tensors and plain
    values (never arbitrary pickled objects), and only when it is a regular file of at most
    :data:`MAX_FILE_BYTES`. Any damage raises a one-line :class:`~prep.errors.StatsFileError`
    naming the file and the field.
    """
    text = os.fspath(path)
    data = _read_file(text)

    def bad(name: str, what: str) -> StatsFileError:
        return StatsFileError(f"{text}: field '{name}' {what}")

    if not isinstance(data, dict):
        raise StatsFileError(f"{text}: not a prep whitening file (holds a {type(data).__name__}, not a dict)")
    if data.get("format") != FILE_FORMAT:
        raise StatsFileError(f"{text}: not a prep whitening file (field 'format' is {data.get('format')!r})")
    for name in FILE_FIELDS:
        if name not in data:
            raise bad(name, "is missing")
    if data["format_version"] != FILE_VERSION or isinstance(data["format_version"], bool):
        raise bad("format_version", f"is {data['format_version']!r}; this prep reads version {FILE_VERSION}")
    if data["kind"] not in ("zca", "pca"):
        raise bad("kind", f"must be 'zca' or 'pca'; got {data['kind']!r}")
    dim = data["D"]
    if not _is_int(dim) or not 1 <= dim <= MAX_DIM:
        raise bad("D", f"must be an integer from 1 to {MAX_DIM}; got {dim!r}")
    shape = data["shape"]
    if not isinstance(shape, list | tuple) or len(shape) != 3 or not all(_is_int(v) and v > 0 for v in shape):
        raise bad("shape", f"must be [C, H, W] of positive integers; got {shape!r}")
    if math.prod(shape) != dim:
        raise bad("shape", f"{list(shape)} does not hold D = {dim} values")
    mode = data["mode"]
    if mode not in MODES or CHANNELS[mode] != shape[0]:
        raise bad("mode", f"must be one of {', '.join(MODES)} with {shape[0]} channel(s); got {mode!r}")
    for name, size in (("W", (dim, dim)), ("mean", (dim,)), ("eigenvalues", (dim,))):
        value = data[name]
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float64 or tuple(value.shape) != size:
            got = f"{value.dtype} {tuple(value.shape)}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise bad(name, f"must be a float64 tensor of shape {size}; got {got}")
        if not bool(torch.isfinite(value).all()):
            raise bad(name, "holds NaN or infinite values")
    if bool((data["eigenvalues"] < 0).any()):
        raise bad("eigenvalues", "holds negative values")
    eps = data["eps"]
    if isinstance(eps, bool) or not isinstance(eps, float | int) or not math.isfinite(eps) or eps < 0:
        raise bad("eps", f"must be a finite number >= 0; got {eps!r}")
    _check_matrix(data["W"], data["eigenvalues"], float(eps), data["kind"], bad)
    if not _is_int(data["count"]) or data["count"] < 1:
        raise bad("count", f"must be a positive integer; got {data['count']!r}")
    if not isinstance(data["exact"], bool):
        raise bad("exact", f"must be true or false; got {data['exact']!r}")
    if not isinstance(data["source"], dict):
        raise bad("source", f"must be a dict; got {type(data['source']).__name__}")
    if data["fingerprint"] is not None and not isinstance(data["fingerprint"], dict):
        raise bad("fingerprint", f"must be a dict or None; got {type(data['fingerprint']).__name__}")
    for name in ("preprocessing", "prep_version"):
        if data[name] is not None and not isinstance(data[name], str):
            raise bad(name, f"must be a string; got {type(data[name]).__name__}")
    return Whitening(
        matrix=data["W"],
        mean=data["mean"],
        eigenvalues=data["eigenvalues"],
        eps=float(eps),
        pca=data["kind"] == "pca",
        shape=tuple(shape),
        mode=mode,
        count=data["count"],
        exact=data["exact"],
        source=data["source"],
        fingerprint=data["fingerprint"],
        preprocessing=data["preprocessing"],
        prep_version=data["prep_version"] or "unknown",
    )


def _read_file(text: str) -> Any:
    """``torch.load(weights_only=True)`` of a regular file of at most :data:`MAX_FILE_BYTES`."""
    try:
        with open_regular(text) as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_FILE_BYTES:
                raise StatsFileError(f"{text}: cannot read the whitening file (larger than {MAX_FILE_BYTES >> 20} MiB)")
            return torch.load(f, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise StatsFileError(f"{text}: cannot read the whitening file ({os_reason(exc)})") from None
    except StatsFileError:
        raise
    except Exception as exc:  # torch.load raises many types for damaged or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StatsFileError(
            f"{text}: not a readable prep whitening file ({type(exc).__name__}{': ' + reason[:200] if reason else ''})"
        ) from None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ------------------------------------------------------------------ the pass


def compute_whitening(
    source: Any,
    *,
    root: str | os.PathLike = DEFAULTS["root"],
    split: str | None = DEFAULTS["split"],
    mode: str | None = DEFAULTS["mode"],
    batch_size: int | None = DEFAULTS["batch_size"],
    device: Any = DEFAULTS["device"],
    workers: int | None = DEFAULTS["workers"],
    eps: float = DEFAULT_EPS,
    pca: bool = False,
    transform: Any = None,
    strict: bool = DEFAULTS["strict"],
    progress: bool | Callable[..., Any] = False,
    **source_options: Any,
) -> Whitening:
    """Measure the mean image and pixel covariance of ``source`` in one pass and whiten with them.

    Args:
        source: what :func:`prep.compute_stats` takes (a folder, archive, array file, idx file,
            dataset name, Dataset or iterable of images, or a Source) whose images all have
            one ``(C, H, W)`` after ``mode`` and ``transform``, with ``C * H * W <= 16384``.
        root, split: where named datasets live and which split (as in ``compute_stats``).
        mode: ``"RGB"`` or ``"L"`` (default: the source's native mode).
        batch_size: images per GEMM for sources read in this process (default: about 1M
            values on the CPU, 32M on CUDA).
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``: where the sums and
            the eigen decomposition are computed.
        workers: decoding processes for folders and archives (default: the CPU count; 0 =
            in-process); they decode, the GEMMs run in this process on ``device``.
        eps: added to each eigenvalue (unit scale squared, default :data:`DEFAULT_EPS`).
        pca: PCA whitening ``diag(...) U^T`` instead of ZCA ``U diag(...) U^T``.
        transform: a v2 transform applied to each image before it is measured, e.g.
            ``prep.transforms.measurement.measurement_transform(resize="32x32")``; gives mixed-size images
            one size. Recorded as :attr:`Whitening.preprocessing`.
        strict: raise :class:`~prep.errors.BadImageError` at the first undecodable file
            instead of skipping it (with a warning).
        progress: True for a tqdm bar on stderr, or a tqdm-like factory.
        **source_options: the other options of :func:`prep.resolve_source` (``download``,
            ``follow_symlinks``, ``checksum``, ``key``, ``layout``, ``archives``, ``image_key``).

    Returns:
        a :class:`Whitening`; ``.save(path)`` writes it, ``.transform()`` applies it,
        ``.state`` holds the mergeable sums.

    Raises:
        SourceError: images of different shapes, ``D > 16384``, NaN or mixed 8/16-bit data,
            no images; OptionError: bad options.
    """
    eps = check_eps(eps)
    if not isinstance(pca, bool):
        raise OptionError(f"pca must be True or False; got {pca!r}")
    state, src, resolved_mode, skipped = _measure(
        source,
        root=root,
        split=split,
        mode=mode,
        batch_size=batch_size,
        device=device,
        workers=workers,
        transform=transform,
        strict=strict,
        progress=progress,
        source_options=source_options,
    )
    _warn_skipped(skipped, src)
    if state.count <= state.dim:
        warnings.warn(
            f"{src.where()}: {state.count} images for D = {state.dim} dimensions: the covariance has rank "
            f"< D, and eps = {eps:g} sets the scale of the directions the data does not span",
            PrepWarning,
            stacklevel=2,
        )
    return Whitening.from_moments(
        state,
        eps=eps,
        pca=pca,
        mode=resolved_mode,
        source=src.describe(),
        fingerprint=src.fingerprint(),
        preprocessing=describe_transform(transform),
    )


def compute_cross_moments(source: Any, **options: Any) -> CrossMoments:
    """The :class:`~prep.stats.cross_moments.CrossMoments` of ``source`` (options as
    :func:`compute_whitening`'s, less ``eps`` and ``pca``): for shards to be merged before
    :meth:`Whitening.from_moments`."""
    names = ("root", "split", "mode", "batch_size", "device", "workers", "transform", "strict", "progress")
    known = {name: options.pop(name) for name in names if name in options}
    defaults = {name: DEFAULTS.get(name) for name in names} | {"transform": None, "progress": False}
    state, src, _mode, skipped = _measure(source, **{**defaults, **known}, source_options=options)
    _warn_skipped(skipped, src)
    return state


def _measure(
    source: Any,
    *,
    root,
    split,
    mode,
    batch_size,
    device,
    workers,
    transform,
    strict,
    progress,
    source_options: dict[str, Any],
) -> tuple[CrossMoments, Source, str, list[tuple[str, str]]]:
    unknown = sorted(set(source_options) - set(SOURCE_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    check_options(workers=workers, batch_size=batch_size)
    from prep.engine.devices import resolve_device

    dev = resolve_device(device)
    options = {name: DEFAULTS[name] for name in SOURCE_OPTIONS} | source_options | {"root": root, "split": split}
    src = resolve_source(source, **options)
    total = src.num_images()
    if total == 0:
        raise SourceError(f"{src.where()}: {src.empty_message()}")
    mode = check_mode(mode or src.native_mode)
    if transform is not None:
        check_transform(transform, CHANNELS[mode])
    run = _Run(src, mode, dev)
    expected = total if total is not None else src.estimated_images()
    with progress_bar(_whiten_bar(progress), expected, src.label()) as bar:
        run.bar = bar
        if isinstance(src, TaskSource):
            requested = cpu_count() if workers is None else workers
            workers = worker_limit(requested)
            if workers < requested:
                log.warning("workers capped at %d (%d per CPU); %d asked for", workers, MAX_WORKERS_PER_CPU, requested)
            if transform is not None and workers > 0 and not is_picklable(transform):
                log.warning("the transform cannot be sent to worker processes (not picklable); decoding in-process")
                workers = 0
            _run_tasks(src, run, workers, strict, transform, batch_size)
        elif isinstance(src, BatchSource):
            _run_batches(src, run, batch_size, transform)
        else:
            raise SourceError(f"{src.where()}: a {type(src).__name__} offers neither batches nor tasks")
    if run.state is None or run.state.count == 0:
        raise SourceError(f"{src.where()}: no decodable images (nothing to measure)")
    return run.state, src, mode, run.skipped


def _whiten_bar(progress: bool | Callable[..., Any]) -> bool | Callable[..., Any]:
    """``progress`` with the bar labelled ``prep whiten`` instead of ``prep stats``."""
    if progress is not True:
        return progress

    def factory(**kwargs: Any) -> Any:
        from tqdm.auto import tqdm

        kwargs["desc"] = str(kwargs.get("desc", "")).replace("prep stats", "prep whiten", 1)
        return tqdm(**kwargs)

    return factory


class _Run:
    """The moving parts of one pass: the state (made at the first image), its shape's origin, the bar."""

    def __init__(self, source: Source, mode: str, device: torch.device) -> None:
        self.source = source
        self.mode = mode
        self.device = device
        self.state: CrossMoments | None = None
        self.shape: tuple[int, ...] | None = None  # of the first image
        self.pixel_max: float | None = None  # of the first image
        self.first: str = ""  # how messages name the first image
        self.position = 0  # images read so far
        self.skipped: list[tuple[str, str]] = []
        self.bar: Any = None

    def check(self, shape: tuple[int, ...], pixel_max: float, where: str) -> None:
        """Refuse an image (named ``where``) whose shape or pixel max differs from the first image's."""
        if self.shape is None:
            check_dim(shape, where)
            self.shape, self.pixel_max, self.first = shape, pixel_max, where
        elif shape != self.shape:
            raise SourceError(mismatch_message(where, shape, self.first, self.shape))
        elif pixel_max != self.pixel_max:
            raise SourceError(
                f"{where}: pixel max {pixel_max:g}, but {self.first} has {self.pixel_max:g}; whitening needs one "
                "kind of data (8-bit, 16-bit or float images, not a mix)"
            )

    def add(self, batch: torch.Tensor, pixel_max: float | None, names: Callable[[int], str]) -> None:
        """Add ``(n, C, H, W)`` pixels; ``names(i)`` says how messages name the batch's image ``i``."""
        self.check(tuple(batch.shape[1:]), pixel_max_of(batch.dtype) if pixel_max is None else pixel_max, names(0))
        if self.state is None:
            self.state = CrossMoments(self.shape, device=self.device)
        try:
            self.state.update(batch, pixel_max)
        except ValueError as exc:
            raise SourceError(f"{names(0)}: {exc}") from None


def check_dim(shape: tuple[int, ...], where: str) -> None:
    """Refuse images whose ``C * H * W`` exceeds :data:`~prep.stats.cross_moments.MAX_DIM`, naming ``where``."""
    dim = math.prod(shape)
    if dim > MAX_DIM:
        raise SourceError(
            f"{where}: images of {'x'.join(map(str, shape))} have D = {dim} values; whitening is limited to "
            f"D <= {MAX_DIM} (a {MAX_DIM}x{MAX_DIM} float64 covariance is 2 GiB); resize them (--resize)"
        )


def mismatch_message(where: str, shape: tuple, first: str, first_shape: tuple) -> str:
    fmt = "x".join
    return (
        f"{where}: image of {fmt(map(str, shape))} (C x H x W), but {first} is {fmt(map(str, first_shape))}; "
        "whitening needs images of one size (give them one with --resize HxW)"
    )


def _run_batches(src: BatchSource, run: _Run, batch_size: int | None, transform: Any) -> None:
    """Read batches in this process; add each on the device."""
    from prep.engine.devices import pixels_per_batch, to_device

    for batch, images in src.iter_batches(0, run.mode, pixels_per_batch(run.device), batch_size):
        start = run.position

        def names(i: int, start: int = start) -> str:
            return f"{src.where()}: image {start + i}"

        pixels = convert_channels(to_device(batch, run.device), run.mode)
        pixel_max = None
        if transform is not None:
            pixel_max = pixel_max_of(pixels.dtype)  # 16-bit data is transformed as float32 raw values
            pixels = apply_transform(transform, pixels)
        run.add(pixels, pixel_max, names)
        run.position += images
        run.bar.update(images)


# ------------------------------------------------------------------ folders: decoding workers


@dataclass
class DecodedChunk:
    """What a worker returns: ``(name, pixels (C, H, W), pixel max)`` of each decoded image, and
    ``(name, reason)`` of the files it could not decode."""

    images: list[tuple[str, np.ndarray, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_chunk(chunk: FileChunk, mode: str, transform: Any = None) -> DecodedChunk:
    """Decode the files of ``chunk`` with PIL (``ImageFolder``'s loader, :mod:`prep.pixels`' rule);
    runs inside a worker or in-process.

    The pixels come back, not D x D partial sums: a chunk of 32 CIFAR images is 100 KB where its
    cross-product matrix would be 75 MB to send through a pipe, and the GEMMs belong on the
    device. An image whose ``D`` exceeds the limit raises :class:`~prep.errors.SourceError`
    naming it, checked from the header before decoding when there is no transform.
    """
    out = DecodedChunk()
    for name in chunk.names:
        where = chunk.reader.display(name)
        try:
            with chunk.reader.open(name) as fp, Image.open(fp) as img:
                if transform is None:
                    width, height = img.size
                    check_dim((CHANNELS[mode], height, width), where)
                array, pixel_max = to_array(img, mode)
        except PrepError:
            raise
        except Exception as exc:  # decoders raise many types for bad files; all mean "not decodable"
            out.skipped.append((name, describe_failure(exc)))
            continue
        if transform is not None:
            array = apply_transform(transform, torch.from_numpy(array)).numpy()  # 16-bit: float32 raw values
            check_dim(array.shape, where)
        out.images.append((where, array, pixel_max))
    return out


def _run_tasks(src: TaskSource, run: _Run, workers: int, strict: bool, transform: Any, batch_size: int | None) -> None:
    """Decode chunks in ``workers`` processes; check each image's shape here, in the source's order,
    and gather the pixels into batches for the device."""
    from prep.engine.devices import pixels_per_batch

    run.skipped.extend(src.listed_skipped())
    total = src.num_images() or 0
    size = max(1, min(FOLDER_CHUNK, total // max(1, 4 * workers)))
    pending: list[np.ndarray] = []
    pending_max = None
    limit = pixels_per_batch(run.device)

    def flush() -> None:
        if pending:
            batch = torch.from_numpy(np.stack(pending))
            pending.clear()
            run.add(batch, pending_max, lambda i: run.first)

    tasks = src.iter_tasks(0, size)
    for chunk, result in map_ordered(decode_chunk, tasks, workers, run.mode, transform, describe=_describe_chunk):
        if strict and result.skipped:
            name, reason = result.skipped[0]
            raise BadImageError(f"{chunk.reader.display(name)}: {reason}")
        run.skipped.extend(result.skipped)
        for where, array, pixel_max in result.images:
            run.check(tuple(array.shape), pixel_max, where)
            pending.append(array)
            pending_max = pixel_max
            if len(pending) * array.size >= limit or len(pending) == batch_size:
                flush()
        run.position += len(chunk.names)
        run.bar.update(len(chunk.names))
    flush()


def _describe_chunk(chunk: FileChunk) -> str:
    first = chunk.reader.display(chunk.names[0])
    return first if len(chunk.names) == 1 else f"{first} and {len(chunk.names) - 1} more file(s)"


def _warn_skipped(skipped: list[tuple[str, str]], src: Source) -> None:
    if skipped:
        shown = "; ".join(f"{name} ({reason})" for name, reason in skipped[:3])
        more = f"; and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        warnings.warn(f"skipped {len(skipped)} file(s) under {src.where()}: {shown}{more}", PrepWarning, stacklevel=3)


__all__ = [
    "DEFAULT_EPS",
    "MAX_DIM",
    "CrossMoments",
    "ShapeMismatchError",
    "Whitening",
    "WhiteningTransformation",
    "compute_cross_moments",
    "compute_whitening",
    "load_whitening",
    "whitening_matrix",
]
