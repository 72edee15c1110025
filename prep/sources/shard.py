"""Shards: a deterministic, disjoint part of a source, for ``--shard I/N``, ``prep merge`` and torchrun.

Image ``i`` of a source, counted in the source's own order (the sorted listing of a folder or an
archive, the order of idx and CIFAR files and of a dataset), belongs to shard ``i mod N``. So
every image is in exactly one of the N shards, the assignment is the same on every machine and
in every run for the same data, and each shard is a uniform spread of the dataset (no shard
gets all of one class folder). Entries passed over while listing (non-images, loops) are
counted by shard 0 alone, so merged shards report them once.

A shard keeps the source's description and fingerprint (those of the whole dataset) and adds
``shard: "I/N"``, so ``prep merge`` can check that its parts come from the same data.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prep.errors import OptionError
from prep.sources.base import BatchSource, Classes, FileChunk, FileReader, Source, TaskSource

if TYPE_CHECKING:
    import torch


def parse_shard(value: Any) -> tuple[int, int] | None:
    """``"I/N"`` (or ``(I, N)``) as ``(I, N)`` with ``0 <= I < N``; None stays None."""
    if value is None:
        return None
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d{1,9})\s*/\s*(\d{1,9})\s*", value)
        if not match:
            raise OptionError(f"shard must be I/N (e.g. 0/4, zero-based); got {value!r}")
        index, count = int(match[1]), int(match[2])
    elif isinstance(value, tuple | list) and len(value) == 2 and all(type(v) is int for v in value):
        index, count = value
    else:
        raise OptionError(f"shard must be I/N (e.g. 0/4, zero-based); got {value!r}")
    if not 0 <= index < count:
        raise OptionError(f"shard {index}/{count}: I must be from 0 to N-1 (zero-based)")
    return index, count


def shard_label(shard: tuple[int, int]) -> str:
    return f"{shard[0]}/{shard[1]}"


def shard_source(source: Source, shard: tuple[int, int] | None) -> Source:
    """``source`` itself without a shard, else the view of its shard ``(I, N)``."""
    if shard is None:
        return source
    if isinstance(source, TaskSource):
        return ShardedTaskSource(source, shard)
    if isinstance(source, BatchSource):
        return ShardedBatchSource(source, shard)
    raise OptionError(f"{source.where()}: a {type(source).__name__} cannot be sharded")


class _Sharded:
    """What both kinds of shard share: everything but the images comes from the whole source."""

    def __init__(self, inner: Source, shard: tuple[int, int]) -> None:
        self.inner = inner
        self.index, self.count = shard
        self.kind, self.path, self.split = inner.kind, inner.path, inner.split

    @property
    def native_mode(self) -> str:
        return self.inner.native_mode

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "shard": shard_label((self.index, self.count))}

    def fingerprint(self) -> dict | None:
        return self.inner.fingerprint()

    def resume_key(self) -> dict | None:
        return self.inner.resume_key()

    def index_of(self, position: int) -> int:
        return self.inner.index_of(self.index + position * self.count)

    def classes(self) -> Classes | None:
        return self.inner.classes()

    def _share(self, total: int | None) -> int | None:
        return None if total is None else max(0, (total - self.index + self.count - 1) // self.count)

    def num_images(self) -> int | None:
        return self._share(self.inner.num_images())

    def estimated_images(self) -> int | None:
        return self._share(self.inner.estimated_images())

    def listed_skipped(self) -> list[tuple[str, str]]:
        return self.inner.listed_skipped() if self.index == 0 else []

    def empty_message(self) -> str:
        return f"shard {shard_label((self.index, self.count))} holds no images"

    def label(self) -> str:
        return f"{self.inner.label()} shard {shard_label((self.index, self.count))}"

    def where(self) -> str:
        return self.inner.where()

    def display(self, name: str) -> str:
        return self.inner.display(name)


class ShardedTaskSource(_Sharded, TaskSource):
    """The files of shard ``(I, N)`` of a :class:`TaskSource`, in chunks of the same readers."""

    def _mine(self, position: int) -> bool:
        """Whether image ``position`` of the whole source is in this part."""
        return position % self.count == self.index

    def _spread(self) -> int:
        """About how many images of the whole source make one of this part (for chunk sizes)."""
        return self.count

    def iter_tasks(self, start: int, size: int, max_bytes: int | None = None) -> Iterator[FileChunk]:
        position = selected = 0
        names: list[str] = []
        reader: FileReader | None = None
        assert isinstance(self.inner, TaskSource)
        for chunk in self.inner.iter_tasks(0, size * self._spread()):
            for name in chunk.names:
                mine = self._mine(position)
                position += 1
                if not mine:
                    continue
                selected += 1
                if selected <= start:
                    continue
                if reader is not None and names and (chunk.reader is not reader or len(names) >= size):
                    yield FileChunk(reader, tuple(names))
                    names = []
                reader = chunk.reader
                names.append(name)
        if reader is not None and names:
            yield FileChunk(reader, tuple(names))


class ShardedBatchSource(_Sharded, BatchSource):
    """The images of shard ``(I, N)`` of a :class:`BatchSource`, as row selections of its batches."""

    def _mine(self, position: int) -> bool:
        return position % self.count == self.index

    def _spread(self) -> int:
        return self.count

    def _rows(self, batch: torch.Tensor, position: int) -> torch.Tensor:
        """The rows of ``batch`` (images ``position``, ``position + 1``, ...) in this part."""
        return batch[(self.index - position) % self.count :: self.count]

    def iter_batches(
        self, start: int, mode: str, pixels_per_batch: int, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, int]]:
        position = selected = 0
        spread = self._spread()
        wider = None if batch_size is None else batch_size * spread
        assert isinstance(self.inner, BatchSource)
        for batch, images in self.inner.iter_batches(0, mode, pixels_per_batch * spread, wider):
            if images != len(batch):  # an item that is itself a batch: one image of the source
                mine = self._mine(position)
                position += 1
                if mine:
                    selected += 1
                    if selected > start:
                        yield batch, images
                continue
            rows = self._rows(batch, position)
            position += len(batch)
            skip = min(len(rows), max(0, start - selected))
            selected += len(rows)
            if len(rows) > skip:
                yield rows[skip:], len(rows) - skip
