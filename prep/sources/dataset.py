"""Python datasets: a ``torch.utils.data.Dataset`` or any iterable of images.

Items are PIL images, image tensors ``(C, H, W)`` (or ``(N, C, H, W)`` batches), tuples and
lists whose first element is one (``(image, target)`` pairs, as torchvision datasets return), or
dicts holding one (``{"image": PIL.Image, "label": 3}``, as Hugging Face ``datasets`` return):
under ``image_key``, by default ``"image"`` or else ``"img"``; a dict with neither is a one-line
error listing its keys.
They are read in order in the main process; runs of equal-shaped items are stacked into one
batch of about ``pixels_per_batch`` pixels.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.errors import SourceError
from prep.pixels import BANDS, mode_of_channels, native_mode, to_array
from prep.sources.base import BatchSource

if TYPE_CHECKING:
    import torch


IMAGE_KEYS = ("image", "img")  # where a dict item's image is looked for when no image_key is given


def image_of(item: Any, image_key: str | None = None) -> Any:
    """The image of a dataset item: the item itself, the first element of a tuple/list, or a dict's
    ``image_key`` entry (default ``image``, else ``img``); raises ``KeyError`` naming the keys."""
    if isinstance(item, Mapping):
        keys = (image_key,) if image_key is not None else IMAGE_KEYS
        for key in keys:
            if key in item:
                return item[key]
        wanted = f"'{image_key}'" if image_key is not None else "'image' or 'img'"
        raise KeyError(f"is a dict without {wanted} (keys: {', '.join(map(str, item))}); pass image_key=")
    return item[0] if isinstance(item, tuple | list) and item else item


HEAD_ITEMS = 4  # items whose pixels identify a dataset for --resume when it has no dataset_id


class DatasetSource(BatchSource):
    """A ``torch.utils.data.Dataset`` or any iterable of PIL images / image tensors.

    A Python object has no files to fingerprint, so stats of a dataset are recomputed each time
    unless ``dataset_id`` names its contents (a string the caller promises changes whenever the
    data does, e.g. ``"pets-v3-train"``); then the id and the length are its fingerprint. A
    checkpoint is resumed only for the same ``dataset_id``, or, without one, for a dataset of the
    same length whose first items have the same pixels.

    ``image_key``: where the image is in dict items (default ``"image"``, else ``"img"``).
    """

    kind = "dataset"

    def __init__(self, dataset: Any, dataset_id: str | None = None, image_key: str | None = None) -> None:
        super().__init__(path=None)
        if dataset_id is not None and (not isinstance(dataset_id, str) or not dataset_id):
            raise SourceError(f"dataset_id must be a non-empty string; got {dataset_id!r}")
        if image_key is not None and (not isinstance(image_key, str) or not image_key):
            raise SourceError(f"image_key must be a non-empty string; got {image_key!r}")
        self.dataset = dataset
        self.dataset_id = dataset_id
        self.image_key = image_key
        self.name = type(dataset).__name__
        self._native_mode: str | None = None
        self._head: list[Any] | None = None

    def fingerprint(self) -> dict | None:
        if self.dataset_id is None:
            return None
        return {"dataset_id": self.dataset_id, "images": self.num_images()}

    def resume_key(self) -> dict[str, Any]:
        """What a checkpoint of this dataset must match: its id, or its length and first items."""
        if self.dataset_id is not None:
            return {"dataset_id": self.dataset_id}
        import hashlib

        digest = hashlib.sha256()
        for index, item in enumerate(self._first_items(HEAD_ITEMS)):
            digest.update(_item_bytes(self._image(item, index)))
        return {"images": self.num_images(), "head_sha256": digest.hexdigest()}

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
        """From the first item: grey PIL modes and 1-channel tensors give ``L``, other PIL images and
        3-channel tensors ``RGB``, tensors of any other channel count ``bands`` (their own values)."""
        if self._native_mode is None:
            first = self._image(self._first_item(), 0)
            from PIL import Image

            if isinstance(first, Image.Image):
                self._native_mode = native_mode(first)
            elif _is_tensor(first) and first.ndim >= 3:
                channels = first.shape[-3]
                self._native_mode = mode_of_channels(channels) if channels in (1, 3) else BANDS
            else:
                raise SourceError(
                    f"{self.name}: item 0 is a {type(first).__name__}, not a PIL image or (C, H, W) tensor"
                )
        return self._native_mode

    def _image(self, item: Any, index: int) -> Any:
        """The image of item ``index`` (:func:`image_of`), or a one-line error naming the item."""
        try:
            return image_of(item, self.image_key)
        except KeyError as exc:
            raise SourceError(f"{self.name}: item {index} {exc.args[0]}") from None

    def _first_item(self) -> Any:
        head = self._first_items(1)
        if not head:
            raise SourceError(f"{self.name}: {self.empty_message()}")
        return head[0]

    def _first_items(self, count: int) -> list[Any]:
        """Up to ``count`` first items; a one-shot iterable keeps them (it is re-chained)."""
        if self._indexable():
            return [self.dataset[i] for i in range(min(count, len(self.dataset)))]
        if self._head is None or len(self._head) < count:
            iterator = iter(self.dataset)
            self._head = list(itertools.islice(iterator, count))
            self.dataset = itertools.chain(list(self._head), iterator)
        return self._head[:count]

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

        from prep.engine.devices import tensor_view

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
            image = self._image(item, index)
            if isinstance(image, Image.Image):
                image = tensor_view(_bands_of(image) if mode == BANDS else to_array(image, mode)[0])
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


def _bands_of(image: Any) -> np.ndarray:
    """A PIL image's bands as stored, ``(C, H, W)`` (the bands mode: no conversion)."""
    array = np.asarray(image)
    return np.ascontiguousarray(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))


def _item_bytes(image: Any) -> bytes:
    """The bytes that identify one image: its type, shape and dtype or mode, and its pixels."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return f"PIL {image.mode} {image.size}".encode() + image.tobytes()
    if _is_tensor(image):
        import torch

        values = image.detach().cpu().contiguous().reshape(-1)
        return f"tensor {values.dtype} {tuple(image.shape)}".encode() + values.view(torch.uint8).numpy().tobytes()
    return type(image).__name__.encode()


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)
