"""Sources stored as uint8 image arrays ``(N, C, H, W)`` in files: idx files and CIFAR pickles.

Files are read one at a time when iteration reaches them and released after, so memory holds
one file; batches are zero-copy views of it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SourceError
from .base import BatchSource
from .fingerprint import fingerprint_files

if TYPE_CHECKING:
    import torch


class ArraySource(BatchSource):
    """The uint8 images of ``files`` under ``root``, in order, read by ``reader``.

    ``reader(path)`` returns ``(N, H, W)`` or ``(N, C, H, W)`` uint8; ``counter(path)``, when
    given, tells the image count from a file's header without reading its data.
    """

    def __init__(
        self,
        kind: str,
        path: str,
        split: str | None,
        root: str | os.PathLike,
        files: Sequence[str],
        reader: Callable[[str], np.ndarray],
        native_mode: str,
        counter: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__(path, split)
        self.kind = kind
        self.root = os.fspath(root)
        self.files = list(files)
        self.native_mode = native_mode
        self._reader = reader
        self._counter = counter

    def read(self, name: str) -> np.ndarray:
        array = self._reader(os.path.join(self.root, name))
        return array[:, None] if array.ndim == 3 else array

    def num_images(self) -> int | None:
        if self._counter is None:
            return None
        return sum(self._counter(os.path.join(self.root, f)) for f in self.files)

    def fingerprint(self) -> dict:
        return fingerprint_files(self.root, self.files)

    def iter_batches(
        self, start: int, mode: str, pixels_per_batch: int, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, int]]:
        from ..devices import tensor_view

        offset = 0
        for name in self.files:
            array = self.read(name)
            size = batch_size or max(1, pixels_per_batch // max(1, int(np.prod(array.shape[1:]))))
            for i in range(max(start - offset, 0), len(array), size):
                batch = tensor_view(array[i : i + size])
                yield batch, len(batch)
            offset += len(array)
            del array
        if offset == 0:
            raise SourceError(f"{self.path}: {self.empty_message()}")
