"""The statistics pass: source -> batches or worker tasks -> device -> accumulator -> :class:`Stats`.

:func:`compute_stats` is what ``prep stats`` runs; :func:`load_or_compute` adds the reuse of an
up-to-date stats file. A :class:`~prep.sources.base.BatchSource` is read in this process and
each batch reduced on the chosen device; a :class:`~prep.sources.base.TaskSource` is decoded
and reduced by worker processes (:mod:`prep.engine.workers`) that return only accumulator states.
With ``checkpoint`` the progress is saved every ``checkpoint_every`` images
(:mod:`prep.engine.checkpoint`) and ``resume=True`` continues from it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import warnings
from collections.abc import Callable
from typing import Any

from prep.engine.bands import BandLayout, band_layout, native_mode
from prep.engine.checkpoint import remove_checkpoint
from prep.engine.exact_percentiles import needs_second_pass
from prep.engine.loop import PassSettings, run_pass
from prep.engine.reducers import MomentsReducer, VolumePass
from prep.engine.workers import (
    UNDECODABLE_REASONS,
)
from prep.errors import BadImageError, OptionError, OutputError, PrepError, PrepWarning, SourceError, StatsFileError
from prep.files import output_target, refuse_foreign
from prep.insight.per_image_report import PerImageReport
from prep.options import (
    DECODER_CHOICES,
    NODATA_NONE,
    api_options,
    check_options,
    parse_band_names,
    parse_bands,
    parse_nodata,
    parse_percentiles,
    source_options,
)
from prep.pixels import BANDS, FLOAT_MAX, SIXTEEN_BIT_MAX, check_mode
from prep.sources import Source, TaskSource, resolve_source
from prep.sources.base import Classes
from prep.sources.sample import Sampled, parse_sample, sample_report, sample_source
from prep.sources.shard import parse_shard, shard_source
from prep.stats.file import Stats, load_stats, pixels_of
from prep.stats.histogram import DEFAULT_PERCENTILES
from prep.transforms.measurement import built_transform, check_transform, describe_transform

DEVICE_DECODE = frozenset({"cuda"})  # device types where --decoder torchvision decodes JPEGs on the device
log = logging.getLogger("prep")


def compute_stats(source: Any, **options: Any) -> Stats:
    """Measure per-channel count, mean, std, min and max of ``source``; nothing is written.

    Every option has its default in :data:`prep.options.OPTIONS` (the same table ``prep stats``'
    flags come from); an unknown one raises ``TypeError``.

    Args:
        source: a directory, a zip or tar archive, WebDataset shards (a list of tar files or a
            brace pattern ``train-{000000..000127}.tar``), an ``.npy``/``.npz`` array file, an
            ``*-idx3-ubyte[.gz]`` file, a dataset name (``mnist``, ``fashion-mnist``,
            ``kmnist``, ``cifar10``, ``cifar100``, ``sample``, ``hf:NAME``), a
            ``torch.utils.data.Dataset`` or iterable of PIL images / image tensors / dicts, or a
            Source (see :mod:`prep.sources`).
        root, split: where named datasets live (torchvision's layout) and which split.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        workers: decoding processes for folders (default: the CPU count; 0 = in-process;
            capped at :data:`prep.engine.workers.MAX_WORKERS_PER_CPU` per CPU).
        batch_size: images per batch for sources read in this process (default: about 1M
            pixels on the CPU, 32M on CUDA).
        mode: ``"RGB"`` or ``"L"`` (default: the source's native mode).
        transform: a torchvision v2 transform applied to each image (after ``mode``) before it
            is measured, e.g. :func:`prep.transforms.measurement.measurement_transform` ``(resize=256,
            center_crop=224)``; it must keep the pixel dtype (:mod:`prep.transforms.measurement`). Its
            ``repr`` is recorded in the stats file and the reuse check.
        strict: raise :class:`~prep.errors.BadImageError` at the first undecodable file
            instead of skipping it.
        download: fetch a named dataset through torchvision first.
        follow_symlinks: follow symlinks in folders (as ``ImageFolder``); False lists them as
            skipped, for datasets that must not leave their root.
        checksum: fingerprint folders by their files' contents (a SHA-256 of every file, one
            extra read) instead of their sizes and modification times.
        key: the image extension of WebDataset samples (``"jpg"``), or the array of an ``.npz``.
        layout: ``"NHWC"`` or ``"NCHW"`` for NumPy arrays whose shape is ambiguous.
        archives: a directory is a set of tar shards (WebDataset), not an image folder.
        image_key: the image field of dict items (default ``image`` or ``img``).
        percentiles: the percentiles the stats file lists (default
            :data:`prep.stats.histogram.DEFAULT_PERCENTILES`); any other comes from
            :meth:`Stats.percentile`. Exact, from the histogram, for 8-bit data.
        shard: ``"I/N"`` or ``(I, N)``: measure only shard I of N (image i is in shard i mod N;
            :mod:`prep.sources.shard`); :func:`prep.merge_stats` combines the N results.
        sample, seed: measure a uniformly random subset of ``sample`` images (or of that fraction
            of them, for a float in (0, 1]), the same for the same ``seed``; the stats carry 95%
            confidence intervals of each channel's mean and std (:mod:`prep.sources.sample`).
        per_class: also measure each class of a folder in ``ImageFolder``'s layout (its
            first-level subfolders; or a zip/tar of one) in the same pass: ``Stats.classes``
            lists them in ``ImageFolder``'s order and :meth:`Stats.class_stats` gives a class's
            statistics; a source without classes raises :class:`~prep.errors.OptionError`.
        per_image: write a CSV row per image here during the pass (:mod:`prep.insight.per_image_report`),
            and name the suspicious images (constant, near black/white, brightness beyond
            ``outlier_k`` stds of the images', byte-identical duplicates) under ``outliers``.
        covariance: measure the colour covariance (C x C, exact for 8- and 16-bit data) and its
            eigen decomposition (PCA lighting constants, :meth:`Stats.lighting`); None (the
            default) is on. ``False`` leaves it out.
        decoder: how image files (folders, archives, shards) are decoded: ``"auto"`` (None:
            PIL's pixels, by torchvision.io for each JPEG kind whose pixels it decodes exactly as
            PIL's ``convert(mode)``, checked on the first file of the kind, where
            :mod:`prep.stats.kernels` was built; by PIL otherwise), ``"pil"`` (PIL for every file, as
            torchvision's ``ImageFolder``) or ``"torchvision"``
            (torchvision.io's pixels for JPEGs; with ``device="cuda"`` said explicitly, decoded
            on the GPU by nvjpeg, whose rounding may differ from libjpeg-turbo's). Recorded in
            the stats file; see :mod:`prep.decode.decoders`.
        distributed: inside an initialised ``torch.distributed`` process group (torchrun), each
            rank measures shard ``rank/world_size`` and every rank returns the statistics of the
            whole dataset (:mod:`prep.engine.distributed`).
        progress: True for a tqdm bar on stderr, or a tqdm-like factory ``f(total=..., ...)``.
        checkpoint, checkpoint_every, resume: save the progress every ``checkpoint_every``
            images to ``checkpoint``; with ``resume`` continue from it.

    Returns:
        :class:`~prep.stats.file.Stats`; ``.save(path)`` writes the stats file. A checkpoint has served
        its purpose once the statistics are returned and is removed.
    """
    options = api_options(options)
    checkpoint = options["checkpoint"]
    stats = _measure_distributed(source, options) if options["distributed"] else _measure(source, options)
    if checkpoint is not None:
        remove_checkpoint(os.fspath(checkpoint))
    return stats


def import_torch() -> None:
    """Import torch and torchvision (seconds, the first time) with a Ctrl-C held until they are in:
    one inside torch's C++ import aborts the process instead of raising KeyboardInterrupt."""
    from prep.signals import deferred_sigint

    with deferred_sigint():
        import torch  # noqa: F401
        import torchvision  # noqa: F401


def _measure(source: Any, options: dict[str, Any]) -> Stats:
    """:func:`compute_stats` without removing the checkpoint; ``options`` are its keyword arguments."""
    import_torch()
    o = options
    checkpoint, transform, workers = o["checkpoint"], built_transform(o["transform"]), o["workers"]
    if checkpoint is not None:
        output_target(checkpoint, "checkpoint")  # before any work: a pass must not end unable to save
    parse_percentiles(o["percentiles"])  # a bad list is refused before the pass
    check_options(
        workers=workers,
        batch_size=o["batch_size"],
        checkpoint_every=o["checkpoint_every"],
        resume=o["resume"],
        checkpoint=checkpoint,
    )
    from prep.engine.devices import resolve_device

    dev = resolve_device(o["device"])
    o["covariance"] = True if o["covariance"] is None else bool(o["covariance"])  # None: the default, on
    src = _subset(resolve_source(source, **source_options(o)), o)
    total = src.num_images()
    if total == 0:
        raise SourceError(f"{src.where()}: {src.empty_message()}")
    mode = check_mode(o["mode"] or native_mode(src))
    volumes = volume_pass(src, o, mode, transform)
    nodata = parse_nodata(o["nodata"])
    if o["nonzero"]:
        if nodata is not None:
            raise OptionError("--nonzero is --nodata 0 in every channel; give one of them")
        nodata = (0.0,)
    layout = band_layout(src, mode, parse_bands(o["bands"]), parse_band_names(o["band_names"]), nodata)
    if transform is not None:
        check_transform(transform, layout.channels)
    classes = source_classes(src) if o["per_class"] else None
    report = None
    if o["per_image"] is not None:
        if o["resume"]:
            raise OptionError("a per-image report is written in one go; it cannot resume (drop resume)")
        report = PerImageReport(o["per_image"], layout.channels, _outlier_k(o["outlier_k"]))
    decoder = recorded_decoder(src, o, dev, mode)
    reducer = MomentsReducer(
        src,
        mode,
        o["decoder"] or "auto",
        track_images=isinstance(src, Sampled),
        covariance=o["covariance"],
        report=report,
        on_device=decoding_device(o, dev) if isinstance(src, TaskSource) and mode != BANDS else None,
        classes=classes,
        layout=layout,
        volumes=volumes,
    )
    if volumes is not None and volumes.mask is not None and volumes.mask.per_label:
        reducer.class_states = {}
    settings = PassSettings(
        mode=mode,
        device=dev,
        transform=transform,
        workers=workers,
        strict=o["strict"],
        batch_size=o["batch_size"],
        progress=o["progress"],
        checkpoint=None if checkpoint is None else os.fspath(checkpoint),
        checkpoint_every=o["checkpoint_every"],
        resume=o["resume"],
    )
    identity = (
        checkpoint_identity(src, mode, transform, o["covariance"], decoder, classes, layout) if checkpoint else {}
    )
    if checkpoint and volumes is not None and volumes.mask is not None:
        identity["options"]["voxels"] = volumes.mask.describe()
    settings.identity = identity
    try:
        progress = run_pass(src, reducer, settings)
    except BaseException:
        if report is not None:
            report.abort()
        raise
    q = parse_percentiles(o["percentiles"]) or DEFAULT_PERCENTILES
    exact = None
    if o["exact_percentiles"] and needs_second_pass(reducer.state):
        exact = _exact_percentiles(src, reducer, settings, q, transform)
    stats = Stats(
        source=src.describe(),
        fingerprint=src.fingerprint(),
        mode=mode,
        transform=describe_transform(transform),
        decoder=decoder,
        state=reducer.state,
        exact_percentiles=exact,
        **progress.skipped.stats_fields(),  # the first SKIPPED_LISTED named, all counted
        percentiles_q=q,
        sample=sample_report(src, reducer.state),
        outliers=None if report is None else report.finish(),
        band_names=layout.names,
        bands=layout.bands,
        classes=_class_names(classes, reducer.class_states),
        class_states=reducer.class_states,
        volume=None if volumes is None else volumes.describe(),
    )
    if volumes is not None:
        for message in volumes.warnings:
            warnings.warn(message, PrepWarning, stacklevel=2)
    _check_result(stats, src)
    return stats


def _exact_percentiles(
    src: Source, first: MomentsReducer, settings: PassSettings, q: tuple[float, ...], transform: Any
) -> tuple[tuple[float, ...], ...]:
    """The second pass of ``exact_percentiles`` (:mod:`prep.engine.exact_percentiles`): the same
    source, decoders and options, no checkpoint; the data must not change in between."""
    from prep.engine.exact_percentiles import PercentileReducer, exact_values, plan

    before = src.fingerprint()
    assert first.state.wide is not None  # needs_second_pass said so
    planned = plan(first.state.wide, q)
    decoder = first.file_decoder(settings.mode, transform)
    bands = first.layout.bands if first.mode == BANDS else None
    reducer = PercentileReducer(planned, decoder, first.layout.nodata, bands)
    again = dataclasses.replace(settings, checkpoint=None, resume=False, identity={})
    log.info("exact percentiles: a second pass over %s", src.where())
    run_pass(src, reducer, again)
    if src.fingerprint() != before:
        raise SourceError(f"{src.where()}: the data changed during the two passes of --exact-percentiles")
    values = exact_values(planned, reducer.collected, first.state.pixel_max)
    return tuple(tuple(row) for row in values)


def _voxels_asked(options: dict[str, Any]) -> dict[str, Any] | None:
    """The voxel rule ``options`` ask of a volume pass (as the stats file's ``volume`` holds it)."""
    from prep.engine.volumes import VoxelMask, voxel_mask

    if not any(options.get(name) not in (None, False) for name in VOLUME_OPTIONS[1:]):
        return None
    mask = voxel_mask(options["foreground"], options["ignore_label"], options["label_values"], options["per_label"])
    return (mask or VoxelMask()).describe()


def _voxels_of(stats: Stats) -> dict[str, Any] | None:
    """The voxel rule of a stats file (None: every voxel, or not volumes)."""
    rule = {k: v for k, v in (stats.volume or {}).items() if k != "scaling"}
    return rule if rule and rule.get("voxels") != "every voxel" else None


def _class_names(classes: Classes | None, states: dict[str, Any] | None) -> tuple[str, ...] | None:
    """The classes a stats file lists: the source's, or the label values measured (by value)."""
    if classes is not None:
        return classes.names
    if states is None:
        return None
    return tuple(sorted(states, key=int))


VOLUME_OPTIONS = ("labels", "foreground", "ignore_label", "label_values", "per_label")


def volume_pass(src: Source, options: dict[str, Any], mode: str, transform: Any) -> VolumePass | None:
    """What a pass over NIfTI volumes carries (:class:`VolumePass`), after refusing the options that
    do not apply; None for other sources, which refuse the volume options."""
    from prep.engine.volumes import voxel_mask
    from prep.sources.nifti import volume_source_of

    volumes = volume_source_of(src)
    if volumes is None:
        given = [name for name in VOLUME_OPTIONS if options.get(name) not in (None, False)]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise OptionError(f"{src.where()}: {flag} is for NIfTI volumes (label maps), not a {src.kind} source")
        return None
    if mode != BANDS:
        raise OptionError(f"{src.where()}: volumes are measured in their own values (--mode bands), not {mode}")
    if transform is not None:
        raise OptionError(f"{src.where()}: a transform (--resize, --center-crop) is for 2-D images, not volumes")
    if options["per_image"] is not None:
        raise OptionError(f"{src.where()}: --per-image is for 2-D images; volumes are listed by case in the summary")
    if options["per_class"]:
        raise OptionError(f"{src.where()}: volumes have no class folders; --per-label measures each label value")
    mask = voxel_mask(options["foreground"], options["ignore_label"], options["label_values"], options["per_label"])
    if mask is not None:
        volumes.check_labels()
    return VolumePass(mask)


def source_classes(src: Source) -> Classes:
    """The classes of ``src`` for ``per_class``: refused (:class:`OptionError`, one line) for a
    source without classes and for one with images outside every class folder."""
    classes = src.classes()
    if classes is None:
        raise OptionError(
            f"{src.where()}: per_class (--per-class) needs a folder in ImageFolder's layout (class subfolders) "
            f"or a zip/tar of one; a {src.kind} source has no classes"
        )
    if classes.outside:
        first = classes.outside[0]
        more = f" and {len(classes.outside) - 1} more" if len(classes.outside) > 1 else ""
        raise OptionError(
            f"{src.where()}: per_class (--per-class): {first}{more} lie outside every class folder (ImageFolder "
            "leaves them out); move them into a class subfolder, or measure without per_class"
        )
    return classes


def checkpoint_identity(
    src: Source,
    mode: str,
    transform: Any,
    covariance: bool,
    decoder: str | None,
    classes: Classes | None = None,
    layout: BandLayout | None = None,
) -> dict:
    """What a checkpoint of a ``prep stats`` pass records, and what a resumed pass must match
    (with classes, their names: a pass without them records none, as before)."""
    options: dict[str, Any] = {
        "mode": mode,
        "transform": describe_transform(transform),
        "covariance": covariance,
        "decoder": pixels_of(decoder),  # auto resumes pil's checkpoints and back
    }
    if classes is not None:
        options["classes"] = list(classes.names)
    if layout is not None and (layout.bands is not None or layout.nodata is not None):
        options["bands"] = None if layout.bands is None else list(layout.bands)
        options["nodata"] = None if layout.nodata is None else [repr(v) for v in layout.nodata]
    return {
        "source": src.describe(),
        "fingerprint": src.fingerprint(),
        "resume_key": src.resume_key(),
        "options": options,
    }


def _outlier_k(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise OptionError(f"outlier_k must be a positive number; got {value!r}")
    return float(value)


def _subset(src: Source, options: dict[str, Any]) -> Source:
    """``src``, or the shard or the random sample of it that ``options`` ask for."""
    return select_subset(src, options["shard"], options["sample"], options["seed"], options["distributed"])


def select_subset(src: Source, shard: Any, sample: Any, seed: int, distributed: bool = False) -> Source:
    """``src``, or its shard ``"I/N"`` or its random ``sample`` (a count or a fraction) for ``seed``."""
    shard, sample = parse_shard(shard), parse_sample(sample)
    if shard is not None and distributed:
        raise OptionError("torchrun shards by rank: drop shard (--shard)")
    if shard is not None and sample is not None:
        raise OptionError("sample and shard cannot be combined (sample the whole dataset)")
    if sample is not None and distributed:
        raise OptionError("a sample (--sample) is measured by one process, not under torchrun")
    return sample_source(shard_source(src, shard), sample, seed)


def _measure_distributed(source: Any, options: dict[str, Any]) -> Stats:
    """:func:`_measure` of this rank's shard, then the whole dataset's statistics on every rank."""
    from prep.engine.distributed import gather, raise_first_error, rank_and_world
    from prep.stats.merge import merge_stats

    rank, world = rank_and_world()
    if options["shard"] is not None:
        raise OptionError("a distributed run shards by rank; drop shard")
    if options["checkpoint"] is not None and world > 1:
        raise OptionError("checkpoints are per process; a distributed run cannot use one")
    if options["per_image"] is not None and world > 1:
        raise OptionError("a per-image report is written by one process; a distributed run cannot write one")
    if world == 1:
        return _measure(source, {**options, "distributed": False})
    local = {
        **options,
        "distributed": False,
        "shard": (rank, world),
        "progress": options["progress"] if rank == 0 else False,
    }

    def shard() -> tuple:
        with warnings.catch_warnings(record=True):  # a shard's warnings: the whole job's come below
            return ("ok", _measure(source, local).to_dict())

    items = gather(_rank_item(shard))
    raise_first_error(items)
    stats = merge_stats([Stats.from_dict(data) for _, data in items])
    with warnings.catch_warnings(record=rank != 0):  # rank 0 speaks for the job
        _check_result(stats, resolve_source(source, **source_options(options)))
    return stats


def load_or_compute(out: str | os.PathLike, source: Any, *, force: bool = False, **options: Any) -> tuple[Stats, bool]:
    """The stats in ``out`` when they still describe ``source``, else a new pass saved to ``out``.

    Returns ``(stats, reused)``. ``options`` are those of :func:`compute_stats`; why a file is
    not reused (stale data, another mode, damage) is logged on the ``prep`` logger. The
    checkpoint, if any, is removed only once ``out`` is written. With ``distributed=True``
    rank 0 alone reads and writes ``out``, and every rank returns the same statistics.
    """
    out = os.fspath(out)
    options = api_options(options)
    if options["distributed"]:  # the source is resolved inside the first collective
        return _load_or_compute_distributed(out, source, force, options)
    src = _subset(resolve_source(source, **source_options(options)), options)
    options["shard"] = options["sample"] = None  # src is the shard or sample already
    existing = _reusable_or_none(out, src, force, options)
    if existing is not None:
        return existing, True
    stats = _measure(src, {**options, "download": False})
    stats.save(out)
    if options["checkpoint"] is not None:
        remove_checkpoint(os.fspath(options["checkpoint"]))
    return stats, False


def _reusable_or_none(out: str, src: Source, force: bool, options: dict[str, Any]) -> Stats | None:
    """After checking ``out`` (and the checkpoint and per-image report) can be written: the
    reusable stats in ``out``."""
    target = output_target(out, "stats file")
    others = {"checkpoint": options["checkpoint"], "per-image report": options["per_image"]}
    seen = {target: "stats file"}
    for what, path in others.items():
        if path is not None:
            other = output_target(path, what)
            if other in seen:
                raise OutputError(f"{path}: the {what} and the {seen[other]} must be different files")
            seen[other] = what
    refuse_foreign(out, target, _is_stats_head, "prep stats file")
    if force:
        return None
    if options["per_image"] is not None:
        log.info("a per-image report needs a pass; measuring")
        return None
    # only nvjpeg (--decoder torchvision with an explicit device) needs the device resolved, and
    # torch with it: every other decision about reuse is made without importing torch
    on_device = options["decoder"] == "torchvision" and options["device"] not in (None, "auto")
    if on_device:
        from prep.engine.devices import resolve_device

        dev: Any = resolve_device(options["device"])
    else:
        dev = _HOST
    mode = options["mode"] or native_mode(src)
    existing = reusable_stats(
        out,
        src,
        mode,
        describe_transform(options["transform"]),
        recorded_decoder(src, options, dev, mode),
    )
    if existing is None:
        return None
    if options["covariance"] and existing.covariance is None:  # asked for by name, not by default
        log.warning("%s has no covariance (made without it); recomputing", out)
        return None
    if _voxels_asked(options) != _voxels_of(existing):
        log.warning("%s measured other voxels (%s); recomputing", out, (existing.volume or {}).get("voxels"))
        return None
    if options["per_class"] and existing.classes is None:
        log.warning("%s has no per-class statistics (made without --per-class); recomputing", out)
        return None
    changed = _bands_changed(existing, options)
    if changed:
        log.warning("%s measured other %s; recomputing", out, changed)
        return None
    if options["exact_percentiles"] and needs_second_pass(existing.state) and existing.exact_percentiles is None:
        log.warning("%s has no exact percentiles (made without --exact-percentiles); recomputing", out)
        return None
    if options["strict"]:
        _refuse_undecodable(existing, src)
    wanted = parse_percentiles(options["percentiles"])
    if wanted is not None and wanted != existing.percentiles_q and existing.histogram is not None:
        existing = dataclasses.replace(existing, percentiles_q=wanted)  # from the stored histogram
        existing.save(out)
    return existing


def _bands_changed(existing: Stats, options: dict[str, Any]) -> str | None:
    """What of ``--bands``, ``--nodata`` and ``--band-names``, where given, differs from what
    ``existing`` measured (None: nothing; an option not given accepts what the file holds)."""
    bands = parse_bands(options["bands"])
    if bands is not None and bands != existing.bands:
        return "bands"
    nodata = parse_nodata(options["nodata"])
    if nodata is not None:
        if nodata == NODATA_NONE:
            if existing.nodata is not None:
                return "nodata values"
        else:
            values = [float(v) for v in (nodata * existing.channels if len(nodata) == 1 else nodata)]
            if existing.nodata is None or any(
                not (a == b or (math.isnan(a) and math.isnan(b))) for a, b in zip(values, existing.nodata)
            ):
                return "nodata values"
    names = parse_band_names(options["band_names"])
    if names is not None and names != existing.band_names:
        return "band names"
    return None


def _load_or_compute_distributed(out: str, source: Any, force: bool, options: dict[str, Any]) -> tuple[Stats, bool]:
    """:func:`load_or_compute` in a process group: every rank resolves ``source`` and rank 0
    decides about ``out`` (and writes it); a failure on any rank, before the pass, reaches
    every rank through the first collective, so none waits for a peer that has left."""
    from prep.engine.distributed import gather, raise_first_error, rank_and_world

    rank, _ = rank_and_world()
    whole = {**options, "shard": None, "sample": None}  # what the pass takes: src is the shard or sample already
    src: Source | None = None

    def decide() -> tuple:
        nonlocal src
        src = _subset(resolve_source(source, **source_options(options)), options)
        existing = _reusable_or_none(out, src, force, whole) if rank == 0 else None
        return ("compute", None) if existing is None else ("reuse", existing.to_dict())

    decisions = gather(_rank_item(decide))
    raise_first_error(decisions)
    decision = decisions[0]
    if decision[0] == "reuse":
        return Stats.from_dict(decision[1]), True
    stats = _measure_distributed(src, whole)
    if rank == 0:
        stats.save(out)
    return stats, False


def _rank_item(work: Callable[[], tuple]) -> tuple:
    """What a rank contributes to a collective: ``work()``'s item, or ``("error", message, exit
    code)`` for any failure, so that no rank leaves the others waiting in the collective."""
    try:
        return work()
    except PrepError as exc:
        return ("error", str(exc), exc.exit_code)
    except Exception as exc:  # never leave the other ranks waiting in the collective
        return ("error", f"{type(exc).__name__}: {exc}", 2)


class _Host:
    """The device of a pass that decodes in its workers, as far as the reuse decision asks."""

    type = "cpu"


_HOST = _Host()


def _refuse_undecodable(stats: Stats, src: Source) -> None:
    """Under ``strict``, a reused file fails as its pass would have: at the first undecodable file."""
    for entry in stats.skipped:
        if entry["reason"].startswith(UNDECODABLE_REASONS):
            raise BadImageError(f"{src.display(entry['path'])}: {entry['reason']}")
    reasons = stats.skipped_reasons or {}
    undecodable = sum(n for category, n in reasons.items() if category.startswith(UNDECODABLE_REASONS))
    if undecodable:  # none of them among the files the stats file names
        raise BadImageError(f"{src.where()}: {undecodable} file(s) could not be read or decoded")


def _is_stats_head(head: bytes) -> bool:
    """Whether a file's first bytes are a prep stats file's (JSON with a schema_version)."""
    return head.lstrip().startswith(b"{") and b'"schema_version"' in head


def reusable_stats(
    out: str, source: Source, mode: str, transform: str | None = None, decoder: str | None = None
) -> Stats | None:
    """The stats in ``out`` when they still describe ``source`` in ``mode`` after ``transform``
    (its description), decoded by ``decoder`` (:func:`recorded_decoder`); else None, logging why."""
    if not os.path.exists(out):
        return None
    try:
        existing = load_stats(out)
    except StatsFileError as exc:
        log.warning("%s; recomputing", exc)
        return None
    reason = existing.stale_reason(source.describe(), source.fingerprint(), mode, transform, decoder)
    if reason:
        log.warning("%s is stale: %s; recomputing", out, reason)
        return None
    return existing


def recorded_decoder(src: Source, options: dict[str, Any], dev: Any, mode: str | None = None) -> str | None:
    """What decodes ``src``'s image files under ``options`` on device ``dev``, as the stats file
    records it (``options.decoder``): None for sources that hold no encoded images (arrays,
    datasets: ``pil`` and ``auto`` change nothing there, ``torchvision`` is refused),
    ``torchvision-cuda`` for nvjpeg, else the decoder asked for (``auto`` by default)."""
    name = options["decoder"]
    if name is not None and name not in DECODER_CHOICES:
        raise OptionError(f"decoder must be one of {', '.join(DECODER_CHOICES)}; got {name!r}")
    if not isinstance(src, TaskSource):
        if name == "torchvision":
            raise OptionError(
                f"{src.where()}: decoder torchvision (--decoder) is for image files (folders, archives, "
                f"shards), not a {src.kind} source"
            )
        return None
    if mode == BANDS:  # every file as stored: tifffile for TIFFs, PIL unconverted otherwise
        if name == "torchvision":
            raise OptionError("--mode bands reads every band as stored; decoder torchvision converts: drop --decoder")
        return BANDS
    name = "auto" if name is None else name
    if options["transform"] is not None and name == "torchvision":
        raise OptionError("a transform (--resize, --center-crop) is applied to PIL's pixels: use decoder pil or auto")
    return "torchvision-cuda" if decoding_device(options, dev) is not None and dev.type == "cuda" else name


def decoding_device(options: dict[str, Any], dev: Any) -> Any:
    """The device that decodes JPEGs, or None for the workers: ``--decoder torchvision`` with an
    explicit ``--device cuda`` (nvjpeg; ``auto`` never changes the pixels), or a device type the
    tests add to :data:`DEVICE_DECODE` to run the same path on the CPU."""
    explicit = options["device"] not in (None, "auto")
    if options["decoder"] == "torchvision" and explicit and options["transform"] is None and dev.type in DEVICE_DECODE:
        return dev
    return None


def _check_result(stats: Stats, src: Source) -> None:
    from prep.errors import printable  # file names are untrusted: escape sequences are not printed

    s = stats.summary
    where = src.where()
    if stats.skipped_count:
        shown = "; ".join(f"{printable(x['path'])} ({printable(x['reason'])})" for x in stats.skipped[:3])
        more = f"; and {stats.skipped_count - 3} more" if stats.skipped_count > 3 else ""
        message = f"skipped {stats.skipped_count} file(s) under {printable(where)}: {shown}{more}"
        warnings.warn(message, PrepWarning, stacklevel=3)
    if s.images == 0 or max(s.count, default=0) == 0:
        raise SourceError(f"{where}: no decodable images (nothing to measure)")
    if min(s.count) == 0:
        empty = [name for name, n in zip(stats.channel_names, s.count) if n == 0]
        raise SourceError(f"{where}: band(s) {', '.join(empty)} have no valid pixel (every one is nodata or NaN)")
    for c, bad in enumerate(s.nonfinite):
        if bad:
            warnings.warn(f"channel {c}: {bad} NaN/inf value(s) left out of the statistics", PrepWarning, stacklevel=3)
    zero = [c for c, v in enumerate(s.std) if v == 0]
    if zero:
        warnings.warn(
            f"channel(s) {zero} have zero variance (std 0): normalize() will need eps", PrepWarning, stacklevel=3
        )
    beyond_8_bits = _BEYOND_8_BITS.get(s.pixel_max)
    if isinstance(src, TaskSource) and beyond_8_bits and stats.mode != BANDS:  # files as ImageFolder loads them
        warnings.warn(
            f"{printable(where)} holds {beyond_8_bits[0]}; torchvision's default loader (ImageFolder's) "
            f"{beyond_8_bits[1]}, so its tensors do not have these statistics: load them with a loader "
            "that keeps their values (see the decoders page of the docs)",
            PrepWarning,
            stacklevel=3,
        )


# the pixel max of a pass whose files were not all 8-bit (a merged state keeps the largest, so a
# folder mixing 8- and 16-bit images has 16-bit's): what prep measured, and what ImageFolder's
# default loader, Image.open(p).convert("RGB"), does to the same files instead
_BEYOND_8_BITS = {
    SIXTEEN_BIT_MAX: (
        "16-bit images, measured as values / 65535",
        "clips them to 8 bits (every value above 255 is 255)",
    ),
    FLOAT_MAX: (
        "float images, measured as their values",
        "truncates them to 8-bit integers (unit-scale values become 0 or 1 of 255)",
    ),
}
