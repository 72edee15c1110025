"""``prep whiten``: the cross moments of a source's flattened images in one pass, and the
whitening computed from them (:mod:`prep.transforms.whitening`).

The pass is :func:`prep.engine.loop.run_pass` with a
:class:`~prep.engine.reducers.CrossMomentsReducer`, so it has what every pass has: the decoders
(``decoder``), worker processes, ``strict``, checkpoints and ``resume``, a random ``sample`` and
``shard`` (whose :class:`~prep.stats.cross_moments.CrossMoments` merge by addition:
:func:`compute_cross_moments` per shard, ``merge``, then :meth:`Whitening.from_moments`).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

from prep.engine.bands import native_mode
from prep.engine.checkpoint import remove_checkpoint
from prep.engine.loop import PassSettings, run_pass
from prep.engine.reducers import CrossMomentsReducer
from prep.errors import OptionError, PrepWarning, SourceError, printable
from prep.files import output_target
from prep.options import DECODER_CHOICES, DEFAULTS, SOURCE_OPTIONS, check_options
from prep.pixels import BANDS, CHANNELS, check_mode
from prep.sources import Source, TaskSource, resolve_source
from prep.stats.cross_moments import CrossMoments
from prep.transforms.measurement import built_transform, check_transform, describe_transform
from prep.transforms.whitening import DEFAULT_EPS, Whitening, check_eps

PASS_NAMES = (
    "root",
    "split",
    "mode",
    "batch_size",
    "device",
    "workers",
    "transform",
    "strict",
    "progress",
    "decoder",
    "shard",
    "sample",
    "seed",
    "checkpoint",
    "checkpoint_every",
    "resume",
)


def compute_whitening(
    source: Any,
    *,
    eps: float = DEFAULT_EPS,
    pca: bool = False,
    **options: Any,
) -> Whitening:
    """Measure the mean image and pixel covariance of ``source`` in one pass and whiten with them.

    Args:
        source: what :func:`prep.compute_stats` takes (a folder, archive, array file, idx file,
            dataset name, Dataset or iterable of images, or a Source) whose images all have
            one ``(C, H, W)`` after ``mode`` and ``transform``, with ``C * H * W <= 16384``.
        eps: added to each eigenvalue (unit scale squared, default :data:`DEFAULT_EPS`).
        pca: PCA whitening ``diag(...) U^T`` instead of ZCA ``U diag(...) U^T``.
        **options: as :func:`prep.compute_stats`: ``root``, ``split``, ``mode``, ``batch_size``
            (images per GEMM), ``device`` (where the sums and the eigen decomposition are
            computed), ``workers`` (decoding processes; the GEMMs run in this process),
            ``transform`` (e.g. ``prep.measurement_transform(resize="32x32")`` gives mixed-size
            images one size; recorded as :attr:`Whitening.preprocessing`), ``strict``,
            ``progress``, ``decoder`` (``auto``, ``pil``, ``torchvision``), ``shard``,
            ``sample`` and ``seed``, ``checkpoint``, ``checkpoint_every`` and ``resume``, and the
            source options of :func:`prep.resolve_source` (``download``, ``follow_symlinks``,
            ``checksum``, ``key``, ``layout``, ``archives``, ``image_key``).

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
    state, src, mode = _measure(source, options)
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
        mode=mode,
        source=src.describe(),
        fingerprint=src.fingerprint(),
        preprocessing=describe_transform(options.get("transform")),
    )


def compute_cross_moments(source: Any, **options: Any) -> CrossMoments:
    """The :class:`~prep.stats.cross_moments.CrossMoments` of ``source`` (options as
    :func:`compute_whitening`'s, less ``eps`` and ``pca``): for shards to be merged before
    :meth:`Whitening.from_moments`."""
    return _measure(source, options)[0]


def _measure(source: Any, given: dict[str, Any]) -> tuple[CrossMoments, Source, str]:
    from prep.engine.devices import resolve_device
    from prep.engine.measure import select_subset

    unknown = sorted(set(given) - set(PASS_NAMES) - set(SOURCE_OPTIONS))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    o: dict[str, Any] = {name: DEFAULTS.get(name) for name in (*PASS_NAMES, *SOURCE_OPTIONS)}
    o |= {"transform": None, "progress": False, **given}
    checkpoint = None if o["checkpoint"] is None else os.fspath(o["checkpoint"])
    if checkpoint is not None:
        output_target(checkpoint, "checkpoint")  # before any work: a pass must not end unable to save
    check_options(
        workers=o["workers"],
        batch_size=o["batch_size"],
        checkpoint_every=o["checkpoint_every"],
        resume=o["resume"],
        checkpoint=checkpoint,
    )
    decoder = "auto" if o["decoder"] is None else o["decoder"]
    if decoder not in DECODER_CHOICES:
        raise OptionError(f"decoder must be one of {', '.join(DECODER_CHOICES)}; got {decoder!r}")
    dev = resolve_device(o["device"])
    src = resolve_source(source, **{name: o[name] for name in SOURCE_OPTIONS})
    src = select_subset(src, o["shard"], o["sample"], o["seed"])
    if src.num_images() == 0:
        raise SourceError(f"{src.where()}: {src.empty_message()}")
    mode = check_mode(o["mode"] or native_mode(src))
    transform = built_transform(o["transform"])
    if transform is not None:
        if mode == BANDS:
            raise OptionError("a measuring transform (--resize, --center-crop) takes RGB or L images, not --mode bands")
        check_transform(transform, CHANNELS[mode])
        if decoder == "torchvision" and isinstance(src, TaskSource):
            raise OptionError(
                "a transform (--resize, --center-crop) is applied to PIL's pixels: use decoder pil or auto"
            )
    reducer = CrossMomentsReducer(src, mode, dev, decoder, o["batch_size"])
    identity = {
        "source": src.describe(),
        "fingerprint": src.fingerprint(),
        "resume_key": src.resume_key(),
        "options": {"pass": "whiten", "mode": mode, "transform": describe_transform(transform), "decoder": decoder},
    }
    settings = PassSettings(
        mode=mode,
        device=dev,
        transform=transform,
        workers=o["workers"],
        strict=o["strict"],
        batch_size=o["batch_size"],
        progress=_whiten_bar(o["progress"]),
        checkpoint=checkpoint,
        checkpoint_every=o["checkpoint_every"],
        resume=o["resume"],
        identity=identity,
    )
    progress = run_pass(src, reducer, settings)
    if reducer.state is None or reducer.state.count == 0:
        raise SourceError(f"{src.where()}: no decodable images (nothing to measure)")
    warn_skipped(progress.skipped, src, stacklevel=4)
    if checkpoint is not None:
        remove_checkpoint(checkpoint)
    return reducer.state, src, mode


def _whiten_bar(progress: bool | Callable[..., Any]) -> bool | Callable[..., Any]:
    """``progress`` with the bar labelled ``prep whiten`` instead of ``prep stats``."""
    if progress is not True:
        return progress

    def factory(**kwargs: Any) -> Any:
        from tqdm.auto import tqdm

        kwargs["desc"] = str(kwargs.get("desc", "")).replace("prep stats", "prep whiten", 1)
        return tqdm(**kwargs)

    return factory


def warn_skipped(skipped: Any, src: Source, stacklevel: int = 3) -> None:
    """One :class:`~prep.errors.PrepWarning` naming the first skipped files (a
    :class:`~prep.stats.file.SkippedFiles`) and their count."""
    if skipped.count:
        shown = "; ".join(f"{printable(name)} ({printable(reason)})" for name, reason in list(skipped)[:3])
        more = f"; and {skipped.count - 3} more" if skipped.count > 3 else ""
        message = f"skipped {skipped.count} file(s) under {printable(src.where())}: {shown}{more}"
        warnings.warn(message, PrepWarning, stacklevel=stacklevel)
