"""Sources stored as uint8 image arrays ``(N, C, H, W)`` in files: idx files and CIFAR pickles.

Files are read one at a time when iteration reaches them and released after, so memory holds
one file; batches are zero-copy views of it. The fingerprint is a hash of the decoded images
(shape and bytes), not of the files, so the same pixels stored plain or gzip-compressed (MNIST's
``.gz`` and the extracted file torchvision needs) are the same data. A pass from the start hashes
each file in a thread while its batches are reduced (hashlib releases the GIL on large buffers),
so the fingerprint costs no second read and, given a second core, no time of its own.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from prep.errors import SourceError
from prep.sources.base import BatchSource

if TYPE_CHECKING:
    import torch


class ArraySource(BatchSource):
    """The uint8 images of ``files`` under ``root``, in order, read by ``reader``.

    ``reader(path)`` returns ``(N, H, W)`` or ``(N, C, H, W)`` uint8; ``counter(path)``, when
    given, tells the image count from a file's header without reading its data; ``estimator(path)``
    guesses it (from the file size) for the progress bar of formats without such a header.
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
        estimator: Callable[[str], int] | None = None,
    ) -> None:
        super().__init__(path, split)
        self.kind = kind
        self.root = os.fspath(root)
        self.files = list(files)
        self._native_mode = native_mode
        self._reader = reader
        self._counter = counter
        self._estimator = estimator
        self._read_counts: dict[str, int] = {}  # images of the files read so far
        self._scan: tuple[int, dict] | None = None

    def read(self, name: str) -> np.ndarray:
        array = self._reader(os.path.join(self.root, name))
        return array[:, None] if array.ndim == 3 else array

    def num_images(self) -> int | None:
        """From the file headers (idx), or once the data has been read (CIFAR), else None."""
        if self._counter is not None:
            return sum(self._counter(os.path.join(self.root, f)) for f in self.files)
        return None if self._scan is None else self._scan[0]

    def estimated_images(self) -> int | None:
        """The exact count when known, else the files read so far plus an estimate for the rest."""
        exact = self.num_images()
        if exact is not None or self._estimator is None:
            return exact
        return sum(
            self._read_counts[f] if f in self._read_counts else self._estimator(os.path.join(self.root, f))
            for f in self.files
        )

    def fingerprint(self) -> dict:
        """``{"files", "bytes", "sha256"}`` of the decoded images: file count, image bytes, and a
        SHA-256 of each file's array shape and bytes in order."""
        return self._content()[1]

    def _content(self) -> tuple[int, dict]:
        """The image count and the content fingerprint, from a pass from the start or one read (cached)."""
        if self._scan is None:
            hasher = _ContentHash()
            for name in self.files:
                hasher.add(self.read(name))
            self._scan = hasher.result(len(self.files))
        return self._scan

    def iter_batches(
        self, start: int, mode: str, pixels_per_batch: int, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, int]]:
        from prep.engine.devices import tensor_view

        offset = 0
        hasher = _ContentHash() if start == 0 and self._scan is None else None  # the pass reads it all anyway
        with ThreadPoolExecutor(1, thread_name_prefix="prep-hash") as hashing:
            hashed: Future | None = None  # the file being hashed while its batches are reduced
            for name in self.files:
                array = self.read(name)
                self._read_counts[name] = len(array)
                if hasher is not None:  # hashlib and the native kernels release the GIL: both run at once
                    if hashed is not None:
                        hashed.result()  # files are hashed in order
                    hashed = hashing.submit(hasher.add, array)
                size = batch_size or max(1, pixels_per_batch // max(1, int(np.prod(array.shape[1:]))))
                for i in range(max(start - offset, 0), len(array), size):
                    batch = tensor_view(array[i : i + size])
                    yield batch, len(batch)
                offset += len(array)
                del array
            if hashed is not None:
                hashed.result()
        if offset == 0:
            raise SourceError(f"{self.path}: {self.empty_message()}")
        if hasher is not None:
            self._scan = hasher.result(len(self.files))


class _ContentHash:
    """SHA-256 of arrays' shapes and bytes, in order, with the image and byte counts."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.images = self.size = 0

    def add(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        self.digest.update(repr(array.shape).encode())
        self.digest.update(array.data.cast("B"))
        self.images += len(array)
        self.size += array.nbytes

    def result(self, files: int) -> tuple[int, dict]:
        return self.images, {"files": files, "bytes": self.size, "sha256": self.digest.hexdigest()}
