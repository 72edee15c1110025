"""Several splits in one run: ``--split train,test`` or ``--split all``, one stats file each.

:func:`iter_split_stats` is what ``prep stats`` runs for every ``--split``: each split's source
and output are checked before the first is measured (a bad one writes nothing), then each is
measured (or its up-to-date file reused) and yielded as it completes. :func:`torchrun_session`
joins the process group torchrun describes for the length of a run, so the Python API can do
all that the command line does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prep.errors import SourceError
from prep.options import output_for, source_options
from prep.stats.file import Stats


@dataclass(frozen=True)
class SplitStats:
    """One split's result: its name (None: the source's default), statistics, output and whether
    the output was reused."""

    split: str | None
    stats: Stats
    out: str | None
    reused: bool


def iter_split_stats(
    source: Any,
    split: str | None = None,
    out: str | None = None,
    *,
    force: bool = False,
    **options: Any,
) -> Iterator[SplitStats]:
    """Measure each split ``split`` names (one, ``"train,test"`` or ``"all"``) of ``source``.

    ``out`` and ``options["checkpoint"]`` may hold ``{split}``, replaced by each split's name
    (required with several splits). With ``out`` a split's file is reused while up to date
    (:func:`~prep.engine.measure.load_or_compute`), else written; without it nothing is written.
    ``options`` are :func:`prep.compute_stats`'.
    """
    from prep.engine.measure import compute_stats, load_or_compute
    from prep.sources import resolve_source
    from prep.sources.splits import parse_splits

    splits = parse_splits(split, source)
    several = len(splits) > 1
    checkpoint = options.get("checkpoint")
    runs = [  # every output name is checked before any work
        (name, output_for(out, name, len(splits)), output_for(checkpoint, name, len(splits))) for name in splits
    ]
    if several:  # every split exists and holds images before the first is measured
        for name in splits:
            src = resolve_source(source, **source_options({**options, "split": name}))
            if src.num_images() == 0:
                raise SourceError(f"{src.where()}: split {name}: {src.empty_message()}")
    for name, split_out, split_checkpoint in runs:
        run_options = {**options, "split": name, "checkpoint": split_checkpoint}
        if split_out:
            stats, reused = load_or_compute(split_out, source, force=force, **run_options)
        else:
            stats, reused = compute_stats(source, **run_options), False
        yield SplitStats(name, stats, split_out, reused)


@contextlib.contextmanager
def torchrun_session(device: str = "auto") -> Iterator[tuple[bool, bool]]:
    """``(distributed, speaks)`` for a run: inside processes started by torchrun, the process group
    is joined for the block (and left after it, when prep joined it) and only rank 0 speaks for
    the job (prints, writes); elsewhere ``(False, True)``."""
    from prep.engine.distributed import finish, init_from_env, launched_by_torchrun

    if not launched_by_torchrun():
        yield False, True
        return
    started = init_from_env(device)
    try:
        import torch.distributed as dist

        yield True, dist.get_rank() == 0
    finally:
        if started:
            finish()
