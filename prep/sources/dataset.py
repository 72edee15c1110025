"""Python datasets: a ``torch.utils.data.Dataset`` or any iterable of images.

Items are PIL images, image tensors ``(C, H, W)`` (or ``(N, C, H, W)`` batches), or tuples and
lists whose first element is one (``(image, target)`` pairs, as torchvision datasets return).
They are read in order in the main process; runs of equal-shaped items are stacked into one
batch of about ``pixels_per_batch`` pixels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..errors import SourceError
from ..pixels import mode_of_channels, native_mode, to_array
from .base import BatchSource

if TYPE_CHECKING:
    import torch


def image_of(item: Any) -> Any:
    """The image of a dataset item: the item itself, or the first element of a tuple/list."""
    return item[0] if isinstance(item, tuple | list) and item else item


class DatasetSource(BatchSource):
    """A ``torch.utils.data.Dataset`` or any iterable of PIL images / image tensors."""

    kind = "dataset"

    def __init__(self, dataset: Any) -> None:
        super().__init__(path=None)
        self.dataset = dataset
        self.name = type(dataset).__name__
        self._native_mode: str | None = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "path": self.name}

    def where(self) -> str:
        return self.name

    def empty_message(self) -> str:
        return "dataset is empty"

    def num_images(self) -> int | None:
        try:
            return len(self.dataset)
        except TypeError:
            return None

    @property
    def native_mode(self) -> str:
        """From the first item: grey PIL modes and 1-channel tensors give ``L``, the rest ``RGB``."""
        if self._native_mode is None:
            first = image_of(self._first_item())
            from PIL import Image

            if isinstance(first, Image.Image):
                self._native_mode = native_mode(first)
            elif _is_tensor(first) and first.ndim >= 3:
                self._native_mode = mode_of_channels(first.shape[-3])
            else:
                raise SourceError(
                    f"{self.name}: item 0 is a {type(first).__name__}, not a PIL image or (C, H, W) tensor"
                )
        return self._native_mode

    def _first_item(self) -> Any:
        if self._indexable():
            if not len(self.dataset):
                raise SourceError(f"{self.name}: {self.empty_message()}")
            return self.dataset[0]
        iterator = iter(self.dataset)
        try:
            head = next(iterator)
        except StopIteration:
            raise SourceError(f"{self.name}: {self.empty_message()}") from None
        self.dataset = itertools.chain([head], iterator)  # a one-shot iterable keeps its first item
        return head

    def _indexable(self) -> bool:
        return hasattr(self.dataset, "__getitem__") and self.num_images() is not None

    def _items(self, start: int) -> Iterator[tuple[int, Any]]:
        if self._indexable():
            for i in range(start, len(self.dataset)):
                yield i, self.dataset[i]
        else:
            yield from itertools.islice(enumerate(self.dataset), start, None)

    def iter_batches(
        self, start: int, mode: str, pixels_per_batch: int, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, int]]:
        import torch
        from PIL import Image

        from ..devices import tensor_view

        run: list[torch.Tensor] = []
        run_pixels = 0
        count = 0

        def flush() -> Iterator[tuple[torch.Tensor, int]]:
            nonlocal run_pixels
            if run:
                batch = torch.stack(run) if len(run) > 1 else run[0].unsqueeze(0)
                run.clear()
                run_pixels = 0
                yield batch, len(batch)

        for index, item in self._items(start):
            count += 1
            image = image_of(item)
            if isinstance(image, Image.Image):
                image = tensor_view(to_array(image, mode)[0])
            elif not _is_tensor(image):
                raise SourceError(
                    f"{self.name}: item {index} is a {type(image).__name__}, not a PIL image or image tensor"
                )
            if image.ndim not in (3, 4):
                raise SourceError(
                    f"{self.name}: item {index} has shape {tuple(image.shape)}; expected (C, H, W) or (N, C, H, W)"
                )
            if image.ndim == 4:  # an item that is a batch already
                yield from flush()
                yield image, 1
                continue
            if run and (image.shape, image.dtype, image.device) != (run[0].shape, run[0].dtype, run[0].device):
                yield from flush()
            run.append(image)
            run_pixels += image.numel()
            if len(run) == batch_size or (batch_size is None and run_pixels >= pixels_per_batch):
                yield from flush()
        yield from flush()
        if count == 0 and start == 0:
            raise SourceError(f"{self.name}: {self.empty_message()}")


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)
