"""Datasets whose items are dicts (Hugging Face ``datasets`` and the like): the image found under
``image_key`` (default ``image``, else ``img``), equal to the same images as a list."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import prep
from helpers import exact_stats
from prep.errors import SourceError
from prep.sources import DatasetSource, resolve_source

RNG = np.random.default_rng(5)
ARRAYS = [RNG.integers(0, 256, (int(RNG.integers(4, 12)), 7, 3), dtype=np.uint8) for _ in range(9)]
IMAGES = [Image.fromarray(a) for a in ARRAYS]


def check(stats) -> None:
    pixels = np.concatenate([a.reshape(-1, 3) for a in ARRAYS])
    ref = exact_stats(pixels)
    np.testing.assert_allclose(stats.mean, ref["mean"], rtol=1e-12)
    np.testing.assert_allclose(np.square(stats.std), ref["var"], rtol=1e-9)
    assert stats.images == len(ARRAYS)


@pytest.mark.parametrize("key", ["image", "img"])
def test_default_image_keys(key):
    items = [{key: image, "label": i} for i, image in enumerate(IMAGES)]
    check(prep.compute_stats(items))
    check(prep.compute_stats(iter(items)))  # a one-shot iterable too


def test_image_key_picks_the_image():
    items = [{"image": "a caption", "pixels": image} for image in IMAGES]
    check(prep.compute_stats(resolve_source(items, image_key="pixels")))
    check(prep.compute_stats(DatasetSource(items, image_key="pixels", dataset_id="d1")))


def test_missing_key_is_a_one_line_error_listing_the_keys():
    items = [{"pixels": image, "label": 0} for image in IMAGES]
    with pytest.raises(SourceError) as info:
        prep.compute_stats(items)
    assert str(info.value) == "list: item 0 is a dict without 'image' or 'img' (keys: pixels, label); pass image_key="
    with pytest.raises(SourceError, match="item 0 is a dict without 'photo'"):
        prep.compute_stats(resolve_source(items, image_key="photo"))
    with pytest.raises(SourceError, match="image_key must be a non-empty string"):
        DatasetSource(items, image_key="")


def test_resume_key_and_checkpoint_read_dict_items(tmp_path):
    items = [{"image": image} for image in IMAGES]
    key = DatasetSource(items).resume_key()
    assert key == DatasetSource([{"img": image} for image in IMAGES]).resume_key()
    stats = prep.compute_stats(items, checkpoint=tmp_path / "ck.json", checkpoint_every=2, batch_size=1)
    check(stats)


def test_hugging_face_dataset_in_memory():
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"image": IMAGES, "label": list(range(len(IMAGES)))})
    dataset = dataset.cast_column("image", datasets.Image())
    check(prep.compute_stats(dataset))
