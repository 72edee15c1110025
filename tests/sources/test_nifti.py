"""prep.sources.nifti: the three layouts listed into cases, splits, label pairing and resolve."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nibabel")  # NIfTI volumes need the medical extra

from helpers.nifti_files import ct_dataset, mri_case, write_nifti
from prep.errors import OptionError, SourceError
from prep.sources import resolve_source
from prep.sources.nifti import VolumeSource, is_datalist, is_volume_dir, volume_source_of
from prep.sources.shard import shard_source
from prep.sources.splits import available_splits


def test_a_folder_of_volumes_is_one_case_per_file(tmp_path):
    for name in ("b", "a"):
        write_nifti(tmp_path / f"{name}.nii.gz", mri_case((6, 5, 4), 0))
    (tmp_path / "notes.txt").write_text("x")
    src = resolve_source(str(tmp_path))
    assert isinstance(src, VolumeSource) and src.layout == "folder" and src.kind == "nifti"
    assert [c.name for c in src.cases] == ["a", "b"]
    assert [c.images for c in src.cases] == [("a.nii.gz",), ("b.nii.gz",)]
    assert src.listed_skipped() == [("notes.txt", "not a NIfTI file (.nii, .nii.gz)")]
    assert src.num_images() == 2 and src.fingerprint()["files"] == 2


def test_nnunet_layout_groups_channels_and_pairs_labels(tmp_path):
    ct_dataset(tmp_path, cases=2)
    write_nifti(tmp_path / "imagesTr" / "ct_000_0001.nii.gz", np.zeros((24, 20, 18), np.int16))
    src = resolve_source(str(tmp_path))
    assert src.layout == "nnunet" and available_splits(str(tmp_path)) == ("train",)
    first, second = src.cases
    assert first.images == ("imagesTr/ct_000_0000.nii.gz", "imagesTr/ct_000_0001.nii.gz")
    assert first.label == "labelsTr/ct_000.nii.gz" and second.label == "labelsTr/ct_001.nii.gz"
    assert src.first_bands() == (2, None, str(tmp_path / "imagesTr" / "ct_000_0000.nii.gz"))
    src.check_labels()
    assert resolve_source(str(tmp_path / "imagesTr")).cases == src.cases  # the images folder itself


def test_nnunet_channel_names_come_from_dataset_json(tmp_path):
    ct_dataset(tmp_path, cases=1)
    assert resolve_source(str(tmp_path)).first_bands()[1] == ("CT",)


def test_nnunet_test_split_and_a_missing_split(tmp_path):
    ct_dataset(tmp_path, cases=1)
    write_nifti(tmp_path / "imagesTs" / "x_0000.nii.gz", np.zeros((4, 4, 4), np.int16))
    assert available_splits(str(tmp_path)) == ("train", "test")
    assert [c.name for c in resolve_source(str(tmp_path), split="test").cases] == ["x"]
    with pytest.raises(SourceError, match="no split 'val'"):
        resolve_source(str(tmp_path), split="val")


def test_a_missing_label_map_names_the_case(tmp_path):
    ct_dataset(tmp_path, cases=2)
    (tmp_path / "labelsTr" / "ct_001.nii.gz").unlink()
    with pytest.raises(SourceError, match=r"no label map for case ct_001 \(ct_001\.nii\.gz\)$"):
        resolve_source(str(tmp_path)).check_labels()


def test_labels_folder_pairs_by_case_name(tmp_path):
    write_nifti(tmp_path / "img" / "c1.nii.gz", np.zeros((4, 4, 4), np.int16))
    write_nifti(tmp_path / "seg" / "c1.nii", np.zeros((4, 4, 4), np.uint8))
    src = resolve_source(str(tmp_path / "img"), labels=str(tmp_path / "seg"))
    assert src.cases[0].label.endswith("seg/c1.nii")
    with pytest.raises(OptionError, match="--labels DIR"):
        resolve_source(str(tmp_path / "img")).check_labels()


def test_monai_datalist_splits_and_relative_paths(tmp_path):
    ct_dataset(tmp_path, cases=3)
    datalist = {
        "training": [
            {"image": "imagesTr/ct_000_0000.nii.gz", "label": "labelsTr/ct_000.nii.gz"},
            {"image": ["imagesTr/ct_001_0000.nii.gz"], "label": "labelsTr/ct_001.nii.gz"},
        ],
        "validation": [{"image": "imagesTr/ct_002_0000.nii.gz", "label": "labelsTr/ct_002.nii.gz"}],
    }
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps(datalist))
    assert is_datalist(path) and not is_datalist(tmp_path / "dataset.json")
    assert available_splits(str(path)) == ("training", "validation")
    src = resolve_source(str(path))
    assert src.layout == "datalist" and [c.label for c in src.cases] == [
        "labelsTr/ct_000.nii.gz",
        "labelsTr/ct_001.nii.gz",
    ]
    assert resolve_source(str(path), split="validation").cases[0].images == ("imagesTr/ct_002_0000.nii.gz",)
    with pytest.raises(SourceError, match="no list 'test'"):
        resolve_source(str(path), split="test").num_images()


def test_missing_datalist_file_is_one_line(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"training": [{"image": "nope.nii.gz"}]}))
    with pytest.raises(SourceError, match=r"nope\.nii\.gz: "):
        resolve_source(str(tmp_path / "d.json")).num_images()


def test_is_volume_dir_and_views(tmp_path):
    write_nifti(tmp_path / "a.nii", np.zeros((3, 3, 3), np.float32))
    assert is_volume_dir(tmp_path) and not is_volume_dir(tmp_path / "a.nii")
    src = resolve_source(str(tmp_path))
    assert volume_source_of(shard_source(src, (0, 2))) is src


def test_labels_option_is_refused_for_other_sources(tmp_path):
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(OptionError, match=r"labels .* is for NIfTI volumes"):
        resolve_source(str(tmp_path), labels=str(tmp_path))
