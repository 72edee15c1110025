"""Choosing the device that reduces batches, and moving uint8 batches onto it."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import PrepError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None) picks CUDA when available, else the CPU; ``"cuda"`` without a GPU is an error."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise PrepError(f"device must be one of {', '.join(DEVICE_CHOICES)}; got {device!r}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise PrepError("device 'cuda' requested but CUDA is not available on this machine")
    if resolved.type not in ("cpu", "cuda"):
        raise PrepError(f"device must be one of {', '.join(DEVICE_CHOICES)}; got {device!r}")
    return resolved


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """Wrap a (possibly read-only, memory-mapped) array without copying; on CUDA, copy it over
    through pinned memory with a non-blocking transfer."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only memmaps: prep never writes to them
        tensor = torch.from_numpy(array)
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor
