"""prep.sources.resolve: what a user typed to a source, and one-line errors for names that do not
exist and options that do not apply."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import run, split_folder
from prep.errors import SourceError
from prep.sources import resolve_source
from prep.sources.folder import FolderSource


def test_a_misspelled_name_gets_a_suggestion():
    result = run("stats", "minst")
    assert result.exit_code == 2 and "did you mean 'mnist'?" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--key", "jpg"), "key (--key) is for WebDataset shards and .npz files"),
        (("--layout", "NHWC"), "layout (--layout) is for NumPy arrays"),
        (("--archives",), "no archives (.zip, .tar"),
        (("--image-key", "img"), "image_key (--image-key) is for datasets of dict items"),
    ],
)
def test_options_for_other_kinds_of_source_are_refused(tmp_path, args, message):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_npz_key_and_split_together_are_refused(tmp_path):
    arrays = {f"{s}_images": np.zeros((2, 4, 4), np.uint8) for s in ("train", "val")}
    np.savez(tmp_path / "m.npz", **arrays)
    result = run("stats", tmp_path / "m.npz", "--split", "val", "--key", "train_images")
    assert result.exit_code == 2 and "give key (--key) or split (--split), not both" in result.stderr


def test_unknown_name_and_missing_split(tmp_path):
    with pytest.raises(SourceError, match="not a dataset name"):
        resolve_source("imagenet-22k", root=tmp_path)
    with pytest.raises(SourceError, match=r"MNIST/raw/train-images-idx3-ubyte: mnist train split not found"):
        resolve_source("mnist", root=tmp_path)
    with pytest.raises(SourceError, match="split must be one of"):
        resolve_source("mnist", root=tmp_path, split="val")


def test_sample_is_shipped_with_the_package():
    src = resolve_source("sample")
    assert isinstance(src, FolderSource) and src.num_images() == 24
