"""Checkpoints of a statistics pass: save its progress, and resume from it after an interruption.

A checkpoint holds what identifies the run (source, fingerprint, options), the position (images
of the source consumed), the files skipped so far and the accumulator state. It is written
atomically, so a kill at any moment leaves the previous checkpoint or the new one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from .accumulator import ChannelMoments
from .errors import PrepError, StatsFileError, os_reason
from .files import read_bytes_bounded, write_json_atomic

CHECKPOINT_KIND = "prep.checkpoint"
CHECKPOINT_VERSION = 1
log = logging.getLogger("prep")


@dataclass
class Progress:
    """Where a pass stands: the state so far, images consumed, and files skipped so far."""

    state: ChannelMoments
    position: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def save_checkpoint(path: str, identity: dict[str, Any], progress: Progress) -> None:
    """Write ``progress`` and the run's ``identity`` to ``path`` atomically."""
    try:
        write_json_atomic(
            path,
            {
                "kind": CHECKPOINT_KIND,
                "schema_version": CHECKPOINT_VERSION,
                **identity,
                "position": progress.position,
                "skipped": [list(s) for s in progress.skipped],
                "state": progress.state.state_dict(),
            },
        )
    except OSError as exc:
        raise PrepError(f"{path}: cannot write checkpoint ({os_reason(exc)})") from None


def load_checkpoint(path: str, identity: dict[str, Any], channels: int, total: int | None) -> Progress | None:
    """The progress saved in ``path`` for the run ``identity``, or None when there is no file.

    Refused with :class:`StatsFileError` (naming the field): a file that is not a checkpoint, one
    made for other data or options, or a position that the state and the source cannot have.
    """
    if not os.path.lexists(path):
        return None
    try:
        data = json.loads(read_bytes_bounded(path, "checkpoint"))
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, integers of thousands of digits
        raise StatsFileError(f"{path}: cannot read checkpoint ({exc})") from None
    if not isinstance(data, dict) or data.get("kind") != CHECKPOINT_KIND:
        raise StatsFileError(f"{path}: not a prep checkpoint")
    mine = json.loads(json.dumps(identity))
    for key, value in mine.items():
        if data.get(key) != value:
            raise StatsFileError(
                f"{path}: checkpoint field '{key}' does not match this run "
                "(different data or options); delete it or drop --resume"
            )
    try:
        state = ChannelMoments.from_state_dict(data.get("state"), where="state")
    except StatsFileError as exc:
        raise StatsFileError(f"{path}: {exc}") from None
    if state.channels != channels:
        raise StatsFileError(f"{path}: checkpoint field 'state.channels' does not match this run's mode")
    skipped = data.get("skipped")
    if not isinstance(skipped, list) or not all(
        isinstance(s, list) and len(s) == 2 and all(isinstance(x, str) for x in s) for s in skipped
    ):
        raise StatsFileError(f"{path}: checkpoint field 'skipped' must be a list of [name, reason] pairs")
    position = data.get("position")
    if (
        isinstance(position, bool)
        or not isinstance(position, int)
        or position < state.images
        or (total is not None and position > total)
    ):
        raise StatsFileError(
            f"{path}: checkpoint field 'position' must be an integer from the state's "
            f"{state.images} images to the source's {total if total is not None else 'last'}; "
            f"got {position!r}"
        )
    log.info("resuming from %s at image %d", path, position)
    return Progress(state, position, [(a, b) for a, b in skipped])


def remove_checkpoint(path: str) -> None:
    """Delete a checkpoint whose pass is complete (and whose result is safely written)."""
    with contextlib.suppress(OSError):
        os.unlink(path)
