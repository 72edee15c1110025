"""Decoding processes: each reduces a chunk of files to an accumulator state and returns only that.

:func:`reduce_chunk` is the one function a worker runs: it opens each file of a
:class:`~prep.sources.base.FileChunk` through the chunk's reader, decodes it with the decoder it
is given, and reduces it, so pixels never cross a process boundary. :func:`map_ordered` runs it
in a pool and yields results in task order with a bounded number in flight; a worker that dies
(killed, out of memory) ends the pass with a :class:`~prep.errors.PrepError` naming its files
instead of a hang, and so do workers that stop making progress (a process stopped with SIGSTOP,
a decoder that never returns): when no task completes for :data:`STALL_SECONDS` (or
``stall_timeout``), the pass ends naming the files the busy workers held.
"""

from __future__ import annotations

import contextlib
import io
import multiprocessing
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures import TimeoutError as FuturesTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from prep.decode.decoders import Decoder, ImageArray, ReducedImage, TorchvisionDecoder
from prep.decode.device import EncodedJpeg, decode_on_device
from prep.engine.bands import BandLayout, all_nodata
from prep.errors import BadImageError, PrepError, SourceError
from prep.insight.per_image_report import Row, digest_of, row_from_array, row_from_state, rows_from_histograms
from prep.pixels import BANDS, CHANNELS, LEVELS
from prep.signals import deferred_sigint
from prep.sources.base import FileChunk
from prep.stats.moments import ChannelMoments

MAX_WORKERS_PER_CPU = 4  # more processes than this per CPU only add memory and start-up time
IN_FLIGHT_PER_WORKER = 2  # tasks queued per worker: keeps every worker busy, bounds memory
POLL_SECONDS = 0.1  # how often a wait for a worker checks for Ctrl-C
# the longest no task may complete before the pass ends as stalled: a task is a chunk of files,
# and a single huge image (a gigapixel TIFF, a JPEG of Image.MAX_IMAGE_PIXELS) decodes in well
# under a minute on one core, so ten minutes is a stall, not a slow file
STALL_SECONDS = 600.0


@dataclass
class ChunkResult:
    """What a worker returns: the chunk's state, and ``(name, reason)`` of files it could not decode."""

    state: ChannelMoments
    skipped: list[tuple[str, str]] = field(default_factory=list)
    rows: list[Row | None] = field(default_factory=list)  # per-image rows, when asked for (None: still to come)
    # on the device path (prep.decode.device), the chunk's 8-bit images in file order, still to be
    # folded: (row slot or -1, name, EightBitHistogram or EncodedJpeg, digest); rows of them are None
    pending: list[tuple[int, str, Any, int]] = field(default_factory=list)
    # with classes: each class's state (class name -> state), the chunk's images routed by name
    classes: dict[str, ChannelMoments] = field(default_factory=dict)
    # volumes (prep.engine.volumes): what the pass says once it ends, and the header scaling
    # (slope, intercept) of each case's channels, counted
    warnings: list[str] = field(default_factory=list)
    scaling: dict[tuple[float, float], int] = field(default_factory=dict)

    def class_state(self, name: str, class_of: Callable[[str], str | None] | None) -> ChannelMoments | None:
        """The state of the class of the file ``name`` (made when first needed), or None without
        classes or for a file outside every class."""
        klass = None if class_of is None else class_of(name)
        if klass is None:
            return None
        state = self.classes.get(klass)
        if state is None:
            like = self.state
            state = self.classes[klass] = ChannelMoments(
                like.channels, like.image_moments is not None, like.cross is not None, nodata=like.nodata
            )
        return state


def reduce_chunk(
    chunk: FileChunk,
    mode: str,
    decoder: Decoder,
    track_images: bool = False,
    per_image: bool = False,
    covariance: bool = False,
    class_of: Callable[[str], str | None] | None = None,
    layout: BandLayout | None = None,
) -> ChunkResult:
    """Decode and reduce the files of ``chunk`` in ``mode``; runs inside a worker (or in-process).
    ``track_images`` keeps the per-image products a sample's confidence intervals need;
    ``per_image`` returns a row per image (:mod:`prep.insight.per_image_report`) with its file's digest;
    ``class_of`` (a file's name -> its class, :class:`~prep.sources.base.FirstFolder`) also
    reduces each file into its class's state (``classes``), beside the chunk's whole state.

    16-bit and float images are folded one by one, 8-bit ones at the end as one array of
    histograms. When the decoder passed JPEGs through to be decoded on the device, the 8-bit
    images are left in ``pending`` for :func:`fold_pending`, which folds them in the same order.
    """
    layout = layout or BandLayout(CHANNELS[mode])
    channels = layout.channels
    result = ChunkResult(ChannelMoments(channels, track_images, covariance, nodata=layout.nodata))
    eight_bit: list[tuple[int, str, Any, int]] = []
    for name in chunk.names:
        digest = 0
        try:
            with chunk.reader.open(name) as fp:
                if per_image:
                    data = fp.read()
                    digest = digest_of(data)
                    pixels = decoder(io.BytesIO(data), mode)
                else:
                    pixels = decoder(fp, mode)
        except BadImageError as exc:  # the file's fault, said by prep's own reader
            result.skipped.append((name, f"cannot decode: {exc}"))
            continue
        except PrepError as exc:  # not the file's fault (a transform that fails): ends the pass
            raise type(exc)(f"{chunk.reader.display(name)}: {exc}") from None
        except Exception as exc:  # decoders raise many types for bad files; all mean "not decodable"
            result.skipped.append((name, describe_failure(exc)))
            continue
        if isinstance(pixels, ReducedImage):  # a large image, reduced a piece at a time
            if pixels.state.channels != channels:
                raise SourceError(
                    f"{chunk.reader.display(name)}: {pixels.state.channels} band(s), but {layout.first} has {channels}"
                )
            if not pixels.state.count.any():
                result.skipped.append((name, "every pixel is nodata"))
                continue
            result.state = result.state.merge(pixels.state)
            klass = result.class_state(name, class_of)
            if klass is not None and class_of is not None:
                result.classes[str(class_of(name))] = klass.merge(pixels.state)
            if per_image:
                result.rows.append(row_from_state(name, pixels.size, pixels.state, digest))
            continue
        if isinstance(pixels, ImageArray):
            if mode == BANDS and pixels.array.shape[0] == channels and all_nodata(pixels.array, layout.nodata):
                result.skipped.append((name, "every pixel is nodata"))
                continue
            if mode == BANDS and pixels.array.shape[0] != channels:
                raise SourceError(
                    f"{chunk.reader.display(name)}: {pixels.array.shape[0]} band(s), but {layout.first} has {channels}"
                )
            try:
                _update_image(result, name, pixels, class_of)
            except ValueError as exc:  # a nodata value that cannot be one of its values
                raise SourceError(f"{chunk.reader.display(name)}: {exc}") from None
            if per_image:
                result.rows.append(
                    row_from_array(name, pixels.array, pixels.pixel_max, channels, digest, layout.nodata)
                )
            continue
        eight_bit.append((len(result.rows) if per_image else -1, name, pixels, digest))
        if per_image:  # the row is made with the chunk's other histograms at once
            result.rows.append(None)
    if any(isinstance(item[2], EncodedJpeg) for item in eight_bit):
        result.pending = eight_bit
    else:
        _fold_histograms(result, eight_bit, channels, class_of)
    return result


def _update_image(
    result: ChunkResult, name: str, pixels: ImageArray, class_of: Callable[[str], str | None] | None
) -> None:
    """Fold one 16-bit or float image into ``result``'s state, and into its class's state
    (reduced twice, so the whole state is the one a pass without classes computes)."""
    result.state.update_image(pixels.array, pixels.pixel_max)
    state = result.class_state(name, class_of)
    if state is not None:
        state.update_image(pixels.array, pixels.pixel_max)


def _fold_histograms(
    result: ChunkResult,
    items: list[tuple[int, str, Any, int]],
    channels: int,
    class_of: Callable[[str], str | None] | None = None,
) -> None:
    """Fold 8-bit images ``(row slot, name, EightBitHistogram, digest)`` into ``result`` at once,
    and each class's images into its class's state."""
    if not items:
        return
    images = [pixels for _, _, pixels, _ in items]
    rows = any(slot >= 0 for slot, _, _, _ in items)  # per-image rows were asked for
    # with every image's moments from the kernels (and no rows to make), the chunk folds from
    # them and one summed histogram; otherwise from every image's histogram, stacked
    by_sums = not rows and all(pixels.moments is not None for pixels in images)
    hist = None if by_sums else np.array([p.counts for p in images], np.int64).reshape(-1, channels, LEVELS)
    groups: list[tuple[ChannelMoments, list[int] | None]] = [(result.state, None)]  # None: every image
    if class_of is not None:
        members: dict[int, list[int]] = {}
        states: dict[int, ChannelMoments] = {}
        for k, (_, name, _, _) in enumerate(items):
            state = result.class_state(name, class_of)
            if state is not None:
                members.setdefault(id(state), []).append(k)
                states[id(state)] = state
        groups += [(states[key], ks) for key, ks in members.items()]
    for state, ks in groups:
        chosen = images if ks is None else [images[k] for k in ks]
        cross = _summed_cross(state, chosen, channels)
        if hist is None:
            total = np.zeros(channels * LEVELS, np.int64)
            for pixels in chosen:
                total += pixels.counts
            state.update_image_sums(np.array([p.moments for p in chosen]), total.reshape(channels, LEVELS), cross)
        else:
            state.update_histograms(hist if ks is None else hist[ks], cross=cross)  # the whole chunk: no copy
    if hist is not None and rows:
        for (slot, name, pixels, digest), row in zip(items, rows_from_histograms(hist)):
            if slot >= 0:
                result.rows[slot] = (name, *pixels.size, *row, digest)


def _summed_cross(state: ChannelMoments, images: list[Any], channels: int) -> list[list[int]] | None:
    """The summed ``(C, C)`` raw cross sums of the 8-bit ``images`` where ``state`` keeps them.

    An image without its cross sums leaves the chunk without them; with them, each is below
    255**2 * 2**40 and a chunk holds far fewer than 2**23 such images, so int64 sums are exact."""
    if state.cross is None or not all(pixels.cross is not None for pixels in images):
        return None
    total = np.sum([np.asarray(pixels.cross, np.int64) for pixels in images], axis=0, dtype=np.int64)
    return total.reshape(channels, channels).tolist()


def fold_pending(
    result: ChunkResult,
    names: list[str],
    mode: str,
    device: Any,
    covariance: bool = False,
    class_of: Callable[[str], str | None] | None = None,
) -> ChunkResult:
    """Decode the JPEGs a worker passed through on ``device`` (:func:`prep.decode.device.decode_on_device`)
    and fold the chunk's 8-bit images into ``result`` as :func:`reduce_chunk` would have, in the
    same order; a JPEG the device refuses is decoded on the CPU, or skipped with its reason.
    ``names`` are the chunk's files, which order the skipped ones."""
    if not result.pending:
        return result
    channels = CHANNELS[mode]
    pending = list(result.pending)
    encoded = [k for k, item in enumerate(pending) if isinstance(item[2], EncodedJpeg)]
    outcomes = decode_on_device([pending[k][2].data for k in encoded], mode, device, covariance)
    items: list[tuple[int, str, Any, int] | None] = list(pending)
    fallback = TorchvisionDecoder(covariance, verify=False)
    for k, pixels in zip(encoded, outcomes):
        item = items[k]
        assert item is not None
        slot, name, jpeg, digest = item
        items[k] = None
        try:
            if isinstance(pixels, Exception):
                pixels = fallback(io.BytesIO(jpeg.data), mode)
        except Exception as exc:  # as in reduce_chunk: the file is skipped with its reason
            result.skipped.append((name, describe_failure(exc)))
            continue
        if isinstance(pixels, ImageArray):  # not for 8-bit JPEGs, but a decoder may say otherwise
            _update_image(result, name, pixels, class_of)
            if slot >= 0:
                result.rows[slot] = row_from_array(name, pixels.array, pixels.pixel_max, channels, digest)
            continue
        items[k] = (slot, name, pixels, digest)
    _fold_histograms(result, [item for item in items if item is not None], channels, class_of)
    order = {name: i for i, name in enumerate(names)}
    result.skipped.sort(key=lambda entry: order.get(entry[0], len(order)))
    result.rows = [row for row in result.rows if row is not None]
    result.pending = []
    return result


UNDECODABLE_REASONS = ("cannot read", "cannot decode")  # how every reason of describe_failure starts


def describe_failure(exc: Exception) -> str:
    """A one-line reason for a file that could not be read or decoded."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = _FILE_OBJECT.sub("", text)  # PIL names the file object it read: the entry names the file
    return f"cannot decode: {type(exc).__name__}{': ' + text if text else ''}"


_FILE_OBJECT = re.compile(r"\s*<(?:_io\.\w+|InMemoryFile) (?:name=.*|object at 0x[0-9a-f]+)>$")


def worker_limit(requested: int) -> int:
    """``requested`` capped at :data:`MAX_WORKERS_PER_CPU` times the CPUs this process may use."""
    return min(requested, MAX_WORKERS_PER_CPU * cpu_count())


def cpu_count() -> int:
    """The number of CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


PARENT_POLL_SECONDS = 0.5  # how often a worker checks that prep is still there (without prctl)
_PR_SET_PDEATHSIG = 1


def _init_worker(parent: int) -> None:
    """Set up a decoding process: Ctrl-C is the parent's to handle (it stops the pool), and the
    worker ends when the parent does (SIGTERM, kill -9), never lingering as an orphan: its
    siblings hold the task pipe open, so it would otherwise wait for tasks forever."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch = sys.modules.get("torch")
    if torch is not None:  # forked after the parent used OpenMP: a thread pool would deadlock here
        torch.set_num_threads(1)
    if not _die_with_parent():
        threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before the line above
        os._exit(1)


def _die_with_parent() -> bool:
    """Ask Linux to send SIGKILL to this process when its parent exits; False where it cannot."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_when_orphaned(parent: int) -> None:
    while os.getppid() == parent:
        threading.Event().wait(PARENT_POLL_SECONDS)
    os._exit(1)


def map_ordered(
    fn: Callable[..., Any],
    tasks: Iterable[Any],
    workers: int,
    *args: Any,
    describe: Callable[[Any], str] = str,
    stall_timeout: float | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield ``(task, fn(task, *args))`` in task order, computed by ``workers`` processes.

    ``workers <= 1`` runs in this process. A dead worker raises :class:`PrepError` naming
    ``describe(task)`` of the tasks in flight; an exception raised by ``fn`` propagates. When no
    task completes for ``stall_timeout`` seconds (default :data:`STALL_SECONDS`) the workers
    are stopped and :class:`PrepError` names the tasks still running: a worker stopped by
    SIGSTOP or stuck in a decoder never leaves the pass waiting for ever. (In this process,
    ``workers <= 1``, nothing can bound ``fn``.) The caller's own work between results (a
    checkpoint) is not interrupted: the error comes from the wait for the next result.
    """
    stall = STALL_SECONDS if stall_timeout is None else float(stall_timeout)
    if workers <= 1:
        for task in tasks:
            yield task, fn(task, *args)
        return
    # fork starts workers in milliseconds without re-importing torch; workers use only PIL and
    # NumPy for 8-bit files, which is fork-safe.
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    pending: deque[tuple[Any, Future]] = deque()
    source = iter(tasks)
    finished = False
    with deferred_sigint() as interrupted:
        pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),))
        try:
            while True:
                while len(pending) < workers * IN_FLIGHT_PER_WORKER:
                    task = next(source, None)
                    if task is None:
                        break
                    pending.append((task, pool.submit(fn, task, *args)))
                if not pending:
                    break
                task = pending[0][0]
                result = _wait(pending, workers, interrupted, describe, stall)
                pending.popleft()
                yield task, result
            finished = True
        finally:
            if finished:
                pool.shutdown(wait=True)
            else:
                _stop(pool)


def _wait(
    pending: deque[tuple[Any, Future]],
    workers: int,
    interrupted: Callable[[], bool],
    describe: Callable[[Any], str],
    stall: float,
) -> Any:
    """The first pending task's result, checking for Ctrl-C every :data:`POLL_SECONDS`; a dead
    worker, or ``stall`` seconds without any pending task completing, is a PrepError."""
    future = pending[0][1]
    completed = sum(f.done() for _, f in pending)
    since = time.monotonic()
    while True:
        if interrupted():
            raise KeyboardInterrupt
        try:
            return future.result(timeout=POLL_SECONDS)
        except FuturesTimeout:
            pass
        except BrokenProcessPool:
            names = "; ".join(describe(t) for t, _ in list(pending)[:workers])
            raise PrepError(f"a decoding worker died (killed, or out of memory) while reading {names}") from None
        now_completed = sum(f.done() for _, f in pending)
        if now_completed > completed:  # another worker finished a task: the pool makes progress
            completed, since = now_completed, time.monotonic()
        elif time.monotonic() - since >= stall:
            running = [t for t, f in list(pending)[:workers] if not f.done()]
            names = "; ".join(describe(t) for t in running)
            raise PrepError(
                f"no decoding worker finished a task in {stall:g} s (a stopped process, or a decoder "
                f"that does not return) while reading {names}"
            )


def _stop(pool: ProcessPoolExecutor) -> None:
    """Shut the pool down without waiting for tasks still running (Ctrl-C, errors)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())  # no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
            with contextlib.suppress(OSError):  # a stopped process (SIGSTOP) takes SIGTERM once continued
                os.kill(process.pid, signal.SIGCONT)
    deadline = time.monotonic() + 5
    for process in processes:
        process.join(timeout=max(0.0, deadline - time.monotonic()))
        if process.is_alive():  # it ignores SIGTERM: kill it
            process.kill()
            process.join(timeout=5)
