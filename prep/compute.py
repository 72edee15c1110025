"""The statistics pass: source -> uint8 batches -> device -> accumulator -> :class:`Stats`.

:func:`compute_stats` is what ``prep stats`` runs. Array sources (idx, CIFAR) are reduced in
large batches on the chosen device; folders are decoded and reduced by worker processes that
return only their accumulator state; Python datasets are iterated in order. With
``checkpoint`` the accumulator state and position are saved atomically every
``checkpoint_every`` images, and ``resume=True`` continues from them.
"""

from __future__ import annotations

import itertools
import json
import logging
import multiprocessing
import os
import signal
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from PIL import Image

from .accumulator import ChannelMoments
from .atomic import write_json_atomic
from .devices import resolve_device, to_device
from .errors import PrepError, SourceError, StatsFileError, os_reason
from .pixels import CHANNELS, check_mode, eight_bit_histogram, is_eight_bit, native_mode, stack_histograms, to_array
from .sources import ArraySource, DatasetSource, FolderSource, Source, resolve_source
from .sources.folder import IMG_EXTENSIONS, reduce_files
from .stats import Stats

# Default batch sizes for array sources, in pixels: on the CPU, batches whose float32 copies
# (2 x 4 MiB) stay in cache run fastest; on CUDA, large batches amortize the kernel launches.
PIXELS_PER_BATCH = {"cpu": 1 << 20, "cuda": 1 << 25}
FOLDER_CHUNK = 32  # images per worker task: small enough for smooth progress and a short tail
DATASET_FLUSH = 256  # dataset items reduced together before merging into the running state
CHECKPOINT_KIND = "prep.checkpoint"
log = logging.getLogger("prep")


class PrepWarning(UserWarning):
    """Something the user should know about the numbers (skipped files, zero variance, NaN)."""


def default_workers() -> int:
    """The number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


@dataclass
class _Run:
    """The moving parts of one pass: state, position, skipped files, progress, checkpointing."""

    source: Source
    mode: str
    state: ChannelMoments
    fingerprint: dict | None
    position: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    progress: Any = None
    checkpoint: str | None = None
    checkpoint_every: int = 10_000
    _last_saved: int = 0

    def advance(self, part: ChannelMoments | None, images: int, skipped=()) -> None:
        if part is not None:
            self.state = self.state.merge(part)
        self.skipped.extend(skipped)
        self.position += images
        if self.progress is not None:
            self.progress.update(images)
        if self.checkpoint and self.position - self._last_saved >= self.checkpoint_every:
            self.save_checkpoint()

    def identity(self) -> dict[str, Any]:
        return {"source": self.source.describe(), "fingerprint": self.fingerprint, "options": {"mode": self.mode}}

    def save_checkpoint(self) -> None:
        try:
            write_json_atomic(self.checkpoint, {
                "kind": CHECKPOINT_KIND, "schema_version": 1, **self.identity(), "position": self.position,
                "skipped": [list(s) for s in self.skipped], "state": self.state.state_dict(),
            })
        except OSError as exc:
            raise PrepError(f"{self.checkpoint}: cannot write checkpoint ({os_reason(exc)})") from None
        self._last_saved = self.position

    def load_checkpoint(self) -> None:
        path = self.checkpoint
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return  # nothing to resume from yet: start at the beginning
        except (OSError, ValueError) as exc:
            raise StatsFileError(f"{path}: cannot read checkpoint ({exc})") from None
        if not isinstance(data, dict) or data.get("kind") != CHECKPOINT_KIND:
            raise StatsFileError(f"{path}: not a prep checkpoint")
        mine = json.loads(json.dumps(self.identity()))
        for key, value in mine.items():
            if data.get(key) != value:
                raise StatsFileError(f"{path}: checkpoint field '{key}' does not match this run "
                                     "(different data or options); delete it or drop --resume")
        position = data.get("position")
        if not isinstance(position, int) or position < 0:
            raise StatsFileError(f"{path}: checkpoint field 'position' must be a non-negative integer")
        state = ChannelMoments.from_state_dict(data.get("state"), where="state")
        if state.channels != self.state.channels:
            raise StatsFileError(f"{path}: checkpoint field 'state.channels' does not match mode {self.mode}")
        self.state, self.position, self._last_saved = state, position, position
        self.skipped = [tuple(s) for s in data.get("skipped", [])]
        log.info("resuming from %s at image %d", path, position)
        if self.progress is not None:
            self.progress.update(position)


def compute_stats(
    source: Any,
    *,
    root: str | os.PathLike = "data",
    split: str = "train",
    device: str | torch.device | None = "auto",
    workers: int | None = None,
    batch_size: int | None = None,
    mode: str | None = None,
    strict: bool = False,
    download: bool = False,
    progress: bool | Callable[..., Any] = False,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10_000,
    resume: bool = False,
) -> Stats:
    """Measure per-channel count, mean, std, min and max of ``source``; nothing is written.

    Args:
        source: a directory, an ``*-idx3-ubyte[.gz]`` file, a dataset name (``mnist``,
            ``fashion-mnist``, ``kmnist``, ``cifar10``, ``cifar100``, ``sample``), a
            ``torch.utils.data.Dataset`` or iterable of PIL images / image tensors, or a Source.
        root, split: where named datasets live (torchvision's layout) and which split.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        workers: decoding processes for folders (default: the CPU count; 0 = in-process).
        batch_size: images per batch for array sources (default: about 1M pixels on the
            CPU, 32M on CUDA).
        mode: ``"RGB"`` or ``"L"`` (default: the source's native mode).
        strict: raise :class:`~prep.errors.BadImageError` at the first undecodable file
            instead of skipping it.
        download: fetch a named dataset through torchvision first.
        progress: True for a tqdm bar on stderr, or a tqdm-like factory ``f(total=..., ...)``.
        checkpoint, checkpoint_every, resume: save the state every ``checkpoint_every``
            images to ``checkpoint``; with ``resume`` continue from it.

    Returns:
        :class:`~prep.stats.Stats`; ``.save(path)`` writes the stats file.
    """
    src = resolve_source(source, root=root, split=split, download_missing=download)
    dev = resolve_device(device)
    workers = default_workers() if workers is None else int(workers)
    if workers < 0:
        raise PrepError(f"workers must be >= 0; got {workers}")
    if batch_size is not None and batch_size < 1:
        raise PrepError(f"batch_size must be >= 1; got {batch_size}")
    if checkpoint_every < 1:
        raise PrepError(f"checkpoint_every must be >= 1; got {checkpoint_every}")
    if resume and checkpoint is None:
        raise PrepError("resume needs a checkpoint file")
    if isinstance(src, DatasetSource) and mode is None:
        src, mode = _infer_dataset_mode(src)
    mode = check_mode(mode or src.native_mode)

    total = src.num_images()
    if isinstance(src, FolderSource) and total == 0:
        raise SourceError(f"{src.path}: no image files found (looked for {', '.join(IMG_EXTENSIONS)})")
    run = _Run(src, mode, ChannelMoments(CHANNELS[mode]), src.fingerprint(),
               checkpoint=None if checkpoint is None else os.fspath(checkpoint), checkpoint_every=checkpoint_every)
    with _progress_bar(progress, total, src) as bar:
        run.progress = bar
        if resume:
            run.load_checkpoint()
        if isinstance(src, ArraySource):
            _reduce_arrays(run, dev, batch_size)
        elif isinstance(src, FolderSource):
            _reduce_folder(run, workers, strict)
        else:
            _reduce_dataset(run, dev)
    stats = Stats(source=src.describe(), fingerprint=run.fingerprint, mode=mode, state=run.state,
                  skipped=[{"path": p, "reason": r} for p, r in run.skipped])
    _check_result(stats, src)
    if checkpoint is not None:
        try:
            os.unlink(checkpoint)  # the pass is complete: the checkpoint has served its purpose
        except OSError:
            pass
    return stats


def _check_result(stats: Stats, src: Source) -> None:
    s = stats.summary
    where = src.path or src.kind
    if stats.skipped:
        shown = "; ".join(f"{x['path']} ({x['reason']})" for x in list(stats.skipped)[:3])
        more = f"; and {len(stats.skipped) - 3} more" if len(stats.skipped) > 3 else ""
        warnings.warn(f"skipped {len(stats.skipped)} file(s) under {where}: {shown}{more}", PrepWarning, stacklevel=3)
    if min(s.count, default=0) == 0:
        raise SourceError(f"{where}: no decodable images (nothing to measure)")
    for c, bad in enumerate(s.nonfinite):
        if bad:
            warnings.warn(f"channel {c}: {bad} NaN/inf value(s) left out of the statistics", PrepWarning, stacklevel=3)
    zero = [c for c, v in enumerate(s.std) if v == 0]
    if zero:
        warnings.warn(f"channel(s) {zero} have zero variance (std 0): normalize() will need eps", PrepWarning,
                      stacklevel=3)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def _progress_bar(progress: bool | Callable[..., Any], total: int | None, src: Source):
    if not progress:
        return _NullBar()
    factory = progress
    if progress is True:
        from tqdm.auto import tqdm as factory
    label = src.kind if src.kind != "folder" else os.path.basename(os.path.normpath(src.path)) or src.path
    return factory(total=total, desc=f"prep stats {label}", unit="img", dynamic_ncols=True)


# ------------------------------------------------------------------ arrays (idx, CIFAR)
def _reduce_arrays(run: _Run, dev: torch.device, batch_size: int | None) -> None:
    native = run.source.native_mode
    pixels = PIXELS_PER_BATCH.get(dev.type, PIXELS_PER_BATCH["cpu"])
    for batch in run.source.iter_batches(run.position, batch_size, pixels):
        run.state.update(convert_mode(to_device(batch, dev), native, run.mode))
        run.advance(None, len(batch))
    if run.position == 0:
        raise SourceError(f"{run.source.path}: contains no images")


def convert_mode(batch: torch.Tensor, native: str, mode: str) -> torch.Tensor:
    """Convert a uint8 batch between ``L`` and ``RGB`` exactly as PIL's ``convert`` does.

    L -> RGB replicates the channel; RGB -> L is ITU-R 601-2 luma in PIL's fixed point:
    ``(19595 R + 38470 G + 7471 B + 32768) >> 16``.
    """
    if native == mode:
        return batch
    if mode == "RGB":
        return batch.expand(-1, 3, -1, -1)
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32, device=batch.device).view(1, 3, 1, 1)
    luma = (batch.to(torch.int32) * weights).sum(1, keepdim=True) + 32768
    return (luma >> 16).to(torch.uint8)


# ------------------------------------------------------------------ folders
def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool


def _reduce_chunk(args: tuple) -> tuple[ChannelMoments, list]:
    return reduce_files(*args)


def _reduce_folder(run: _Run, workers: int, strict: bool) -> None:
    listing = run.source.listing
    already = set(run.skipped)  # after --resume the checkpoint lists them already
    run.skipped.extend(s for s in listing.skipped if s not in already)
    todo = listing.images[run.position:]
    if not todo:
        return
    chunk = max(1, min(FOLDER_CHUNK, len(todo) // max(1, 4 * workers)))
    root = str(listing.root)
    tasks = [(root, todo[i:i + chunk], run.mode, strict) for i in range(0, len(todo), chunk)]
    if workers <= 1 or len(tasks) == 1:
        for task in tasks:
            part, skipped = _reduce_chunk(task)
            run.advance(part, len(task[1]), skipped)
        return
    methods = multiprocessing.get_all_start_methods()
    # fork starts workers in milliseconds without re-importing torch; workers use only PIL/NumPy
    # for 8-bit files, which is fork-safe.
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    with ctx.Pool(min(workers, len(tasks)), initializer=_ignore_sigint) as pool:
        for task, (part, skipped) in zip(tasks, pool.imap(_reduce_chunk, tasks)):
            run.advance(part, len(task[1]), skipped)


# ------------------------------------------------------------------ Python datasets
def _image_of(item: Any) -> Any:
    return item[0] if isinstance(item, (tuple, list)) and item else item


def _infer_dataset_mode(src: DatasetSource) -> tuple[DatasetSource, str]:
    """Mode from the first item: grey PIL modes and 1-channel tensors give L, the rest RGB."""
    if hasattr(src.dataset, "__getitem__") and src.num_images():
        first = _image_of(src.dataset[0])
    else:
        iterator = iter(src.dataset)
        try:
            head = next(iterator)
        except StopIteration:
            raise SourceError(f"{src.name}: dataset is empty") from None
        src = DatasetSource(itertools.chain([head], iterator))
        first = _image_of(head)
    if isinstance(first, Image.Image):
        return src, native_mode(first)
    if isinstance(first, torch.Tensor) and first.ndim >= 3:
        return src, "L" if first.shape[-3] == 1 else "RGB"
    raise SourceError(f"{src.name}: item 0 is a {type(first).__name__}, not a PIL image or (C, H, W) tensor")


def _reduce_dataset(run: _Run, dev: torch.device) -> None:
    """Iterate the dataset in order, reducing up to ``DATASET_FLUSH`` items per merge: 8-bit PIL
    images through their histograms, runs of equal-shaped tensors stacked into one batch."""
    channels = run.state.channels
    part, pending = ChannelMoments(channels), 0
    histograms: list[list[int]] = []
    tensors: list[torch.Tensor] = []

    def flush_tensors() -> None:
        if tensors:
            part.update(torch.stack(tensors).to(dev))
            tensors.clear()

    def flush() -> None:
        nonlocal part, pending
        flush_tensors()
        if histograms:
            part.update_histograms(stack_histograms(histograms, run.mode))
            histograms.clear()
        if pending:
            run.advance(part, pending)
        part, pending = ChannelMoments(channels), 0

    for index, item in run.source.iter_items(run.position):
        image = _image_of(item)
        if isinstance(image, Image.Image):
            if is_eight_bit(image):
                histograms.append(eight_bit_histogram(image, run.mode))
            else:
                part.update_array(*to_array(image, run.mode))
        elif isinstance(image, torch.Tensor):
            if image.ndim not in (3, 4) or image.shape[-3] != channels:
                raise SourceError(f"{run.source.name}: item {index} has shape {tuple(image.shape)}; "
                                  f"expected ({channels}, H, W) for mode {run.mode}")
            if tensors and (image.shape, image.dtype, image.device) != (
                    tensors[0].shape, tensors[0].dtype, tensors[0].device):
                flush_tensors()
            if image.ndim == 4:  # already a batch
                part.update(image.to(dev))
            else:
                tensors.append(image)
        else:
            raise SourceError(f"{run.source.name}: item {index} is a {type(image).__name__}, "
                              "not a PIL image or image tensor")
        pending += 1
        if pending >= DATASET_FLUSH:
            flush()
    flush()
    if run.position == 0:
        raise SourceError(f"{run.source.name}: dataset is empty")
