"""Checkpoints of a pass: save its progress, and resume from it after an interruption.

A checkpoint holds what identifies the run (source, fingerprint, options), the position (images
of the source consumed), the files skipped so far and the reducer's state. It is written
atomically, so a kill at any moment leaves the previous checkpoint or the new one. The
per-channel moments of ``prep stats`` are JSON; the cross moments of ``prep whiten`` (a D x D
float64 matrix) a ``torch.save`` file read back with ``weights_only=True``. Skipped files
are kept bounded as in the stats file (:class:`~prep.stats.file.SkippedFiles`: the first
:data:`~prep.stats.file.SKIPPED_LISTED` named, all counted, in total and per reason).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from prep.errors import PrepError, StatsFileError, os_reason
from prep.files import read_bytes_bounded, write_json_atomic
from prep.stats.file import INT64_MAX, SkippedFiles, check_shape, check_state, parse_json, short_repr
from prep.stats.moments import ChannelMoments

CHECKPOINT_KIND = "prep.engine.checkpoint"
CHECKPOINT_VERSION = 2  # 2: skipped as {count, reasons, files}; version 1's list of [name, reason] pairs is read too
log = logging.getLogger("prep")


#: ``load_state(raw, where) -> (state, images in it)``: a reducer's validating reader of a saved state
StateLoader = Callable[[Any, str], tuple[Any, int]]


@dataclass
class Progress:
    """Where a pass stands: the reducer's state (an object with ``state_dict()``), images
    consumed, and files skipped so far (bounded: ``skipped.extend`` takes ``(name, reason)``
    pairs, iterating gives the listed ones)."""

    state: Any = None
    position: int = 0
    skipped: SkippedFiles = field(default_factory=SkippedFiles)

    def __post_init__(self) -> None:
        if not isinstance(self.skipped, SkippedFiles):  # (name, reason) pairs
            pairs, self.skipped = self.skipped, SkippedFiles()
            self.skipped.extend(pairs)


def save_checkpoint(path: str, identity: dict[str, Any], progress: Progress, fmt: str = "json") -> None:
    """Write ``progress`` and the run's ``identity`` to ``path`` atomically, as JSON or (``fmt``
    ``"torch"``) a ``torch.save`` file."""
    data = {
        "kind": CHECKPOINT_KIND,
        "schema_version": CHECKPOINT_VERSION,
        **identity,
        "position": progress.position,
        "skipped": progress.skipped.to_json(),
        "state": progress.state.state_dict(),
    }
    if fmt == "torch":
        from prep.files import write_torch_atomic

        write_torch_atomic(path, data, "checkpoint")
        return
    try:
        write_json_atomic(path, data)
    except OSError as exc:
        raise PrepError(f"{path}: cannot write checkpoint ({os_reason(exc)})") from None


def moments_loader(channels: int, covariance: bool = False) -> StateLoader:
    """The :data:`StateLoader` of ``prep stats``: a :class:`ChannelMoments` of ``channels``, as
    strictly checked as a stats file's state, and holding every statistic the run keeps: the
    cross sums when it measures the covariance of integer data, the histogram of 8-bit data."""

    def load(raw: Any, where: str) -> tuple[ChannelMoments, int]:
        state = ChannelMoments.from_state_dict(raw, where=where)
        if state.channels != channels:
            raise StatsFileError(f"field '{where}.channels' does not match this run's mode")
        check_state(state)
        integer = state.pixel_max in (0.0, 255.0, 65535.0) and not any(state.nonfinite)
        if covariance and integer and state.cross is None:
            raise StatsFileError(f"field '{where}.cross': null, but this run measures the covariance")
        if state.exact_sum is not None and state.histogram is None and raw.get("version") != 1:
            raise StatsFileError(f"field '{where}.histogram': null, but the state keeps exact 8-bit sums")
        return state, state.images

    return load


def load_checkpoint(
    path: str, identity: dict[str, Any], load_state: StateLoader, total: int | None, fmt: str = "json"
) -> Progress | None:
    """The progress saved in ``path`` for the run ``identity``, or None when there is no file.

    Refused with :class:`StatsFileError` in one line naming the field: a file that is not a
    checkpoint, one made for other data or options, a malformed state or skipped list, or a
    position that the state and the source cannot have.
    """
    if not os.path.lexists(path):
        return None
    if fmt == "torch":
        from prep.files import read_torch_bounded

        data = read_torch_bounded(path, "checkpoint")
    else:
        raw = read_bytes_bounded(path, "checkpoint")
        try:
            data = parse_json(raw)
        except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, nesting deeper than Python recurses
            raise StatsFileError(f"{path}: cannot read checkpoint ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != CHECKPOINT_KIND:
        raise StatsFileError(f"{path}: not a prep checkpoint")
    try:
        progress = _parse_checkpoint(data, identity, load_state, total, fmt)
    except StatsFileError as exc:
        raise StatsFileError(f"{path}: checkpoint {exc}") from None
    log.info("resuming from %s at image %d", path, progress.position)
    return progress


def _parse_checkpoint(
    data: dict[str, Any], identity: dict[str, Any], load_state: StateLoader, total: int | None, fmt: str
) -> Progress:
    """Validate a checkpoint's fields; errors read ``field 'x': ...``."""
    if fmt == "json":
        check_shape(data)
    for key, value in json.loads(json.dumps(identity)).items():
        if data.get(key) != value:
            raise StatsFileError(
                f"field '{key}' does not match this run (different data or options); delete it or drop --resume"
            )
    version = data.get("schema_version")
    if isinstance(version, bool) or version not in (1, CHECKPOINT_VERSION):
        raise StatsFileError(
            f"field 'schema_version': this prep reads versions 1 and {CHECKPOINT_VERSION}; delete it or drop --resume"
        )
    state, images = load_state(data.get("state"), "state")
    skipped = _skipped(data.get("skipped"), version)
    position = data.get("position")
    last = INT64_MAX if total is None else total
    if isinstance(position, bool) or not isinstance(position, int) or not images <= position <= last:
        upto = "the last" if total is None else f"the source's {total}"
        raise StatsFileError(
            f"field 'position' must be an integer from the state's {images} images to {upto}; "
            f"got {short_repr(position)}"
        )
    return Progress(state, position, skipped)


def _skipped(value: Any, version: int) -> SkippedFiles:
    """``skipped``: ``{count, reasons, files}`` (version 2) or a list of ``[name, reason]`` pairs (version 1)."""
    if version != 1:
        return SkippedFiles.from_json(value, "skipped")
    if not isinstance(value, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s) for s in value
    ):
        raise StatsFileError("field 'skipped' must be a list of [name, reason] pairs")
    skipped = SkippedFiles()
    skipped.extend((name, reason) for name, reason in value)
    return skipped


def remove_checkpoint(path: str) -> None:
    """Delete a checkpoint whose pass is complete (and whose result is safely written)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
