"""Choosing the device that reduces batches, and moving batches onto it."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from prep.errors import OptionError
from prep.options import DEVICE_CHOICES

# Default batch sizes, in pixel values: on the CPU, 4 Mi (4 MiB of uint8), where the per-batch
# Python work (about 0.1 ms) is a few percent of the native one-pass reduction (about 2 ms): 1 Mi
# made a 1 GiB uint8 .npy 1.4x slower. The torch reductions copy to float32 SLICE_ELEMENTS
# (prep.stats.reductions) values at a time whatever the batch size, so their scratch stays in
# cache. On CUDA, large batches amortize the kernel launches.
PIXELS_PER_BATCH = {"cpu": 1 << 22, "cuda": 1 << 25}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when available, else the CPU; ``"cuda"`` without a GPU is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError(f"device must be one of {', '.join(DEVICE_CHOICES)}; got {device!r}") from None
    if resolved.type not in ("cpu", "cuda"):
        raise OptionError(f"device must be one of {', '.join(DEVICE_CHOICES)}; got {device!r}")
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise OptionError("device 'cuda' requested but CUDA is not available on this machine")
    return resolved


def pixels_per_batch(device: torch.device) -> int:
    """The default batch size of ``device``, in pixels."""
    return PIXELS_PER_BATCH.get(device.type, PIXELS_PER_BATCH["cpu"])


def tensor_view(array: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing ``array``'s memory (read-only memory maps included: prep never writes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def to_device(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``batch`` on ``device``: the same tensor on the CPU; on CUDA, copied over through pinned
    memory with a non-blocking transfer."""
    if device.type == "cuda" and batch.device.type == "cpu":
        return batch.pin_memory().to(device, non_blocking=True)
    return batch.to(device)
