"""The one pass loop: a source's images -> a reducer, in batches or worker tasks.

Every statistic prep computes (the per-channel moments of ``prep stats``, the cross moments of
``prep whiten``) is a :class:`Reducer`, and :func:`run_pass` is the only loop that feeds one.
The engine owns everything that is not the statistic: the progress bar, the position in the
source, the skipped files and ``strict``, the worker pool and its size, the transform's
picklability, the batch size and the torch thread count, and checkpoints. A reducer owns its
state and says how a batch (read in this process) and a worker's result (a chunk of files
decoded elsewhere) change it.

A source is either a :class:`~prep.sources.base.BatchSource` (arrays, idx files, CIFAR,
Python datasets: read here, each batch reduced on the device) or a
:class:`~prep.sources.base.TaskSource` (folders, archives, shards: chunks of files decoded by
worker processes, :mod:`prep.engine.workers`, whose results are folded in file order).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prep.engine.checkpoint import Progress, load_checkpoint, save_checkpoint
from prep.engine.workers import MAX_WORKERS_PER_CPU, cpu_count, map_ordered, worker_limit
from prep.errors import BadImageError, OptionError, PrepError, SourceError
from prep.insight.summary import progress_bar
from prep.pixels import convert_channels, pixel_max_of
from prep.sources.base import BatchSource, FileChunk, Source, TaskSource
from prep.transforms.measurement import apply_transform, is_picklable

FOLDER_CHUNK = 32  # files per worker task where their sizes are not known: smooth progress, a short tail
# where the listing knows the sizes (TaskSource.sized), a task ends at TASK_BYTES of files or at
# TASK_FILES files: 20,000 thumbnails of 3 KB make 40 tasks instead of 625 (each costs a round
# trip and a fold), and photos of a few MB still go one or two to a task
TASK_BYTES = 2 << 20
TASK_FILES = 1024
log = logging.getLogger("prep")


class Reducer(ABC):
    """A statistic computed in one pass: declared state, updated by batches and worker results.

    Subclasses hold their state and implement :meth:`update` (a batch read in this process),
    :meth:`worker_job` (what a worker runs on a chunk of files) and :meth:`fold` (that result,
    in file order). :meth:`state_dict` / :meth:`load_state_dict` make a pass resumable; the
    state itself merges (``merge``) so shards, workers and ranks combine.
    """

    #: ``"json"`` or ``"torch"``: how a checkpoint of this reducer's state is written
    checkpoint_format = "json"

    @abstractmethod
    def update(self, pixels: Any, pixel_max: float | None, first: int, name: Callable[[int], str]) -> None:
        """Add a batch ``(N, C, H, W)`` of pixels whose first image is the source's image ``first``;
        ``pixel_max`` is the raw maximum the values are divided by (None: from the dtype), and
        ``name(i)`` how messages name the batch's image ``i``."""

    @abstractmethod
    def worker_job(self, mode: str, transform: Any, workers: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        """``(fn, args)``: each worker runs ``fn(chunk, *args)``, which returns an object with a
        ``skipped`` list of ``(name, reason)`` pairs; ``fn`` and ``args`` must pickle."""

    @abstractmethod
    def fold(self, chunk: FileChunk, result: Any) -> None:
        """Fold a worker's result for ``chunk`` into the state (called in file order)."""

    def finish(self) -> None:  # noqa: B027 - optional hook
        """Called once after the last batch or chunk."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """The state, for a checkpoint."""

    @abstractmethod
    def load_state_dict(self, state: Any, where: str) -> None:
        """Replace the state by a checkpoint's (validated; a bad one raises
        :class:`~prep.errors.StatsFileError` naming ``where``)."""

    @property
    def images(self) -> int:
        """Images in the state (a checkpoint's position is at least this)."""
        return 0


@dataclass
class PassSettings:
    """What the engine needs besides the source and the reducer (resolved by the caller)."""

    mode: str
    device: Any  # a torch.device
    transform: Any = None
    workers: int | None = None  # None: the CPU count
    strict: bool = False
    batch_size: int | None = None
    progress: bool | Callable[..., Any] = False
    checkpoint: str | None = None
    checkpoint_every: int = 10_000
    resume: bool = False
    identity: dict[str, Any] = field(default_factory=dict)  # what a checkpoint records and must match


def run_pass(src: Source, reducer: Reducer, settings: PassSettings) -> Progress:
    """Feed every image of ``src`` to ``reducer``; returns the pass's :class:`Progress` (images
    consumed, files skipped). Undecodable files are skipped (listed) or, with ``strict``, end
    the pass with :class:`~prep.errors.BadImageError`."""
    total = src.num_images()
    run = _Run(src, reducer, settings)
    expected = total if total is not None else src.estimated_images()
    with progress_bar(settings.progress, expected, src.label()) as bar:
        run.bar = bar
        run.refine_total = total is None
        if settings.resume:
            run.resume()
        if isinstance(src, TaskSource):
            _run_tasks(src, run)
        elif isinstance(src, BatchSource):
            _run_batches(src, run)
        else:
            raise SourceError(f"{src.where()}: a {type(src).__name__} offers neither batches nor tasks")
        reducer.finish()
    return run.progress


def worker_count(requested: int | None, transform: Any) -> int:
    """The worker processes a task source gets: ``requested`` (default: the CPU count) capped at
    :data:`~prep.engine.workers.MAX_WORKERS_PER_CPU` per CPU, 0 for a transform that cannot be
    sent to them."""
    asked = cpu_count() if requested is None else requested
    workers = worker_limit(asked)
    if workers < asked:
        log.warning("workers capped at %d (%d per CPU); %d asked for", workers, MAX_WORKERS_PER_CPU, asked)
    if transform is not None and workers > 0 and not is_picklable(transform):
        log.warning("the transform cannot be sent to worker processes (not picklable); decoding in-process")
        workers = 0
    return workers


class _Run:
    """The moving parts of one pass: progress, the bar and the checkpoint cadence."""

    def __init__(self, src: Source, reducer: Reducer, settings: PassSettings) -> None:
        self.src = src
        self.reducer = reducer
        self.settings = settings
        self.progress = Progress()
        self.bar: Any = None
        self.refine_total = False  # the bar's total is an estimate the source refines as it is read
        self.resumed = False
        self._last_saved = 0

    def resume(self) -> None:
        s = self.settings

        def load_state(raw: Any, where: str) -> tuple[Reducer, int]:
            self.reducer.load_state_dict(raw, where)
            return self.reducer, self.reducer.images

        if s.checkpoint is None:
            raise OptionError("resume needs a checkpoint file")
        fmt = self.reducer.checkpoint_format
        loaded = load_checkpoint(s.checkpoint, s.identity, load_state, self.src.num_images(), fmt)
        if loaded is None:
            log.warning("no checkpoint at %s; starting from the beginning", s.checkpoint)
            return
        self.progress = Progress(None, loaded.position, loaded.skipped)
        self.resumed = True
        self._last_saved = loaded.position
        self.bar.update(loaded.position)

    def advance(self, images: int, skipped: Any = ()) -> None:
        """Count ``images`` more as done and checkpoint when due."""
        p = self.progress
        p.skipped.extend(skipped)
        p.position += images
        if self.refine_total:
            estimate = self.src.estimated_images()
            if estimate is not None and getattr(self.bar, "total", estimate) != estimate:
                self.bar.total = estimate
                getattr(self.bar, "refresh", lambda: None)()
        self.bar.update(images)
        s = self.settings
        if s.checkpoint and p.position - self._last_saved >= s.checkpoint_every:
            saved = Progress(self.reducer, p.position, p.skipped)  # the reducer gives its state_dict()
            save_checkpoint(s.checkpoint, s.identity, saved, self.reducer.checkpoint_format)
            self._last_saved = p.position


def _run_batches(src: BatchSource, run: _Run) -> None:
    """Read batches in this process; reduce each on the device (on the CPU with one torch thread:
    the reductions are memory-bound, and with other processes busy on every core torch's thread
    pool made them 3.8x slower, one thread 1.5x; see ``scripts/bench.py --only contention``)."""
    import torch

    from prep.engine.devices import pixels_per_batch, to_device

    s = run.settings
    threads = torch.get_num_threads()
    if s.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        start = run.progress.position
        for batch, images in src.iter_batches(start, s.mode, pixels_per_batch(s.device), s.batch_size):
            first = run.progress.position
            pixels = convert_channels(to_device(batch, s.device), s.mode)
            pixel_max = None
            if s.transform is not None:
                pixel_max = pixel_max_of(pixels.dtype)  # 16-bit data is transformed as float32 raw values
                try:
                    pixels = apply_transform(s.transform, pixels)
                except PrepError as exc:
                    raise type(exc)(f"{src.where()}: the batch from image {first}: {exc}") from None

            def name(i: int, first: int = first) -> str:
                return f"{src.where()}: image {first + i}"

            run.reducer.update(pixels, pixel_max, first, name)
            run.advance(images)
    finally:
        torch.set_num_threads(threads)


def _run_tasks(src: TaskSource, run: _Run) -> None:
    """Decode chunks of files in worker processes and fold each result in order."""
    s = run.settings
    if not run.resumed:  # after a resume the checkpoint counts them already
        run.progress.skipped.extend(src.listed_skipped())
    workers = worker_count(s.workers, s.transform)
    total = src.num_images() or 0
    remaining = max(0, total - run.progress.position)
    files = TASK_FILES if src.sized else FOLDER_CHUNK
    size = max(1, min(files, remaining // max(1, 4 * workers)))  # at least 4 tasks a worker: a short tail
    fn, args = run.reducer.worker_job(s.mode, s.transform, workers)
    tasks = src.iter_tasks(run.progress.position, size, TASK_BYTES if src.sized else None)
    for chunk, result in map_ordered(fn, tasks, workers, *args, describe=describe_chunk):
        run.reducer.fold(chunk, result)  # may skip more files (the device path decodes here)
        if s.strict and result.skipped:
            name, reason = result.skipped[0]
            raise BadImageError(f"{chunk.reader.display(name)}: {reason}")
        run.advance(len(chunk.names), result.skipped)


def describe_chunk(chunk: FileChunk) -> str:
    """How a message names the files of a chunk."""
    first = chunk.reader.display(chunk.names[0])
    return first if len(chunk.names) == 1 else f"{first} and {len(chunk.names) - 1} more file(s)"
