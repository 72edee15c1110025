"""Sources stored as uint8 image arrays ``(N, C, H, W)`` in files: idx files and CIFAR pickles.

Files are read one at a time when iteration reaches them and released after, so memory holds
one file; batches are zero-copy views of it. The fingerprint is a hash of the decoded images
(shape and bytes), not of the files, so the same pixels stored plain or gzip-compressed (MNIST's
``.gz`` and the extracted file torchvision needs) are the same data.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import SourceError
from .base import BatchSource

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
        self._scan: tuple[int, dict] | None = None

    def read(self, name: str) -> np.ndarray:
        array = self._reader(os.path.join(self.root, name))
        return array[:, None] if array.ndim == 3 else array

    def num_images(self) -> int:
        if self._counter is not None:
            return sum(self._counter(os.path.join(self.root, f)) for f in self.files)
        return self._content()[0]

    def fingerprint(self) -> dict:
        """``{"files", "bytes", "sha256"}`` of the decoded images: file count, image bytes, and a
        SHA-256 of each file's array shape and bytes in order."""
        return self._content()[1]

    def _content(self) -> tuple[int, dict]:
        """One read of every file (cached): the image count and the content fingerprint."""
        if self._scan is None:
            digest = hashlib.sha256()
            images = size = 0
            for name in self.files:
                array = np.ascontiguousarray(self.read(name))
                digest.update(repr(array.shape).encode())
                digest.update(memoryview(array).cast("B"))
                images += len(array)
                size += array.nbytes
                del array
            self._scan = images, {"files": len(self.files), "bytes": size, "sha256": digest.hexdigest()}
        return self._scan

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
