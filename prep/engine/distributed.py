"""torch.distributed for prep: each rank measures its shard, and the states meet in one collective.

Under ``torchrun`` (or any initialised process group) rank ``r`` of ``W`` measures shard ``r/W``
(:mod:`prep.sources.shard`) with its own decoding workers; then every rank contributes either
its statistics or its one-line error to a single ``all_gather_object``, so a rank that fails
makes every rank fail with that rank's message instead of leaving the others waiting, and
every rank merges the same states in rank order (:func:`prep.stats.merge.merge_stats`): the result
equals a single-process run, bit for bit for 8-bit data.
"""

from __future__ import annotations

import datetime
import os
from typing import Any

from prep.errors import OptionError, PrepError

COLLECTIVE_TIMEOUT = datetime.timedelta(hours=2)  # the longest a rank waits for the slowest one's pass


def launched_by_torchrun() -> bool:
    """Whether this process is one rank of several started by torchrun (its environment)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ and "MASTER_ADDR" in os.environ
    except ValueError:
        return False


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes (gloo on CPU, nccl for CUDA ranks); True when
    prep started it (and so must end it with :func:`finish`)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    import torch

    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and "LOCAL_RANK" in os.environ:
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    except Exception as exc:  # rendezvous failures come as many types
        raise PrepError(f"cannot join the torchrun process group: {type(exc).__name__}: {exc}") from None
    return True


def finish() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised default group; ``OptionError`` without one."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise OptionError("distributed=True needs an initialised torch.distributed process group (e.g. torchrun)")
    return dist.get_rank(), dist.get_world_size()


def gather(item: Any) -> list[Any]:
    """Every rank's ``item``, in rank order, on every rank (one collective)."""
    import torch.distributed as dist

    items: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(items, item)
    return items


def broadcast(item: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``item`` on every rank."""
    import torch.distributed as dist

    box = [item]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def raise_first_error(items: list[Any]) -> None:
    """Raise, on every rank, the first rank's error among gathered ``("error", message, code)`` items."""
    for rank, item in enumerate(items):
        if item[0] == "error":
            error = PrepError(f"rank {rank}: {item[1]}")
            error.exit_code = item[2]
            raise error
