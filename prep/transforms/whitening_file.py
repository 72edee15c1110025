"""The whitening file: a ``.pt`` that :meth:`~prep.transforms.whitening.Whitening.save` writes and
:func:`load_whitening` reads back, validated field by field."""

from __future__ import annotations

import math
import os
from typing import Any

import torch

from prep.errors import StatsFileError
from prep.files import read_torch_bounded
from prep.pixels import CHANNELS, MODES
from prep.stats.cross_moments import MAX_DIM
from prep.transforms.whitening import FILE_FORMAT, FILE_VERSION, Whitening

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
# relative tolerance of the checks of W: float64 eigh leaves U orthogonal to about D * 2.2e-16
# (below 4e-12 at MAX_DIM), so a W that is off by more than 1e-9 was not computed from the file's
# eigenvalues and eps
MATRIX_TOLERANCE = 1e-9


def _check_matrix(w: torch.Tensor, eigenvalues: torch.Tensor, eps: float, kind: str, bad) -> None:
    """``W`` must be the whitening matrix of these eigenvalues and eps, to :data:`MATRIX_TOLERANCE`
    (relative), in O(D**2). With ``g = 1/sqrt(lambda + eps)`` and ``U`` orthogonal, ZCA's
    ``W = U diag(g) U^T`` is symmetric with trace ``sum(g)`` and PCA's ``W = diag(g) U^T`` has
    rows of squared norms ``g**2`` in order, orthogonal to each other (``W W^T x = g**2 x`` for a
    fixed random ``x``); both have ``|W|_F**2 = sum(g**2)``.

    What this catches: any scaling of ``W``, the eigenvalues or eps beyond 1e-9 (``W * (1 +
    1e-7)`` included), an asymmetric ZCA matrix, PCA rows out of order or no longer orthogonal,
    ``W`` of another kind, eigenvalues or eps. What it cannot: ``U`` is not in the file (the
    covariance is not kept), so ``W`` alone does not tell which orthogonal ``U`` it was made with:
    ``Q W Q^T`` for any orthogonal ``Q`` (a permutation ``P W P^T`` among them) is an equally valid
    ZCA matrix, and ``W Q^T`` an equally valid PCA one, of the same eigenvalues (those of rotated
    or permuted data); nor are ZCA edits that keep the trace, the norm and the symmetry (swapping
    two mirrored pairs of entries), which only an O(D**3) eigen decomposition would see. The mean
    is not tied to ``W`` at all: a shifted mean passes (it is checked to be finite)."""
    tol = MATRIX_TOLERANCE
    gains = 1.0 / torch.sqrt(eigenvalues + eps)
    scale = float(gains.max()) if len(gains) else 1.0
    if not math.isclose(float((w * w).sum()), float((gains * gains).sum()), rel_tol=tol):
        raise bad("W", "is not the whitening matrix of the eigenvalues and eps (its norm differs); was it edited?")
    if kind == "zca":
        if float((w - w.T).abs().max()) > tol * scale:
            raise bad("W", "must be symmetric for ZCA whitening; was it edited?")
        if not math.isclose(float(w.trace()), float(gains.sum()), rel_tol=tol):
            raise bad("W", "is not the ZCA matrix of the eigenvalues and eps (its trace differs); was it edited?")
        return
    if not torch.allclose((w * w).sum(1), gains * gains, rtol=tol, atol=0):
        raise bad("W", "is not the PCA whitening matrix of the eigenvalues and eps (row norms differ)")
    probe = torch.randn(len(gains), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    error = torch.linalg.vector_norm(w @ (w.T @ probe) - gains * gains * probe)
    if float(error) > tol * scale**2 * float(torch.linalg.vector_norm(probe)):
        raise bad("W", "is not the PCA whitening matrix of the eigenvalues and eps (rows not orthogonal)")


def load_whitening(path: str | os.PathLike) -> Whitening:
    """Read and validate a file written by :meth:`Whitening.save`.

    The file is read with ``torch.load(weights_only=True)``, which builds only tensors and plain
    values (never arbitrary pickled objects), and only when it is a regular file of at most
    :data:`MAX_FILE_BYTES`. Any damage raises a one-line :class:`~prep.errors.StatsFileError`
    naming the file and the field.
    """
    text = os.fspath(path)
    data = read_torch_bounded(text, "whitening file", MAX_FILE_BYTES)

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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
