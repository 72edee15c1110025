"""Volumes in the pass (prep.engine.volumes): every statistic of the chosen voxels against NumPy.

CT-like int16 volumes (air, tissue, two organs, bone; label maps with an ignore label) and
MRI-like float32 volumes in real .nii.gz files: means exact, stds to 1e-12, min/max exact and
int16 percentiles equal to numpy.percentile bit for bit; per label; shards merged equal the
whole; header scaling applied exactly; bad files skipped or refused in one line.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

import prep
from helpers import run

pytest.importorskip("nibabel")  # NIfTI volumes need the medical extra

from helpers.nifti_files import (
    AIR,
    IGNORE,
    ct_dataset,
    header_with_dims,
    mri_case,
    raw_file,
    truncated_gz,
    write_nifti,
)
from prep.decode import nifti as nifti_decode
from prep.engine.volumes import reduce_volumes
from prep.errors import OptionError, SourceError
from prep.stats.histogram import DEFAULT_PERCENTILES

QS = (*DEFAULT_PERCENTILES, 0.0, 25.0, 100.0)


def check_against(stats, values, channel=0):
    """Every statistic of ``stats`` (channel ``channel``) against NumPy over ``values``."""
    values = np.asarray(values)
    assert stats.count[channel] == values.size
    assert stats.mean[channel] == pytest.approx(float(values.astype(np.float64).mean()), rel=1e-15, abs=0)
    assert stats.std[channel] == pytest.approx(float(values.astype(np.float64).std()), rel=1e-12)
    assert stats.min[channel] == float(values.min()) and stats.max[channel] == float(values.max())
    if values.dtype.kind in "iu":
        for q in QS:
            assert stats.percentile(q)[channel] == np.percentile(values, q), q
    else:
        for q in (0.5, 50.0, 99.5):
            low, high = stats.percentile_bounds(q)[channel]
            assert low <= np.percentile(values.astype(np.float64), q) <= high


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    return root, ct_dataset(root, cases=4)


def test_every_voxel_by_default_in_raw_units(ct):
    root, data = ct
    stats = prep.compute_stats(str(root), workers=0)
    assert stats.mode == "bands" and stats.units == "raw" and stats.images == 4
    assert stats.channel_names == ["CT"]
    check_against(stats, np.concatenate([hu.ravel() for hu, _ in data.values()]))
    assert stats.volume["voxels"] == "every voxel" and stats.volume["scaling"] == [
        {"slope": 1.0, "inter": 0.0, "files": 4}
    ]


def test_foreground_less_the_ignore_label_per_label_and_in_workers(ct):
    root, data = ct
    stats = prep.compute_stats(str(root), workers=2, foreground=True, ignore_label=IGNORE, per_label=True)
    check_against(stats, np.concatenate([hu[(lab > 0) & (lab != IGNORE)] for hu, lab in data.values()]))
    assert stats.classes == ("1", "2") and stats.per_label
    for value in (1, 2):
        part = stats.class_stats(str(value))
        check_against(part, np.concatenate([hu[lab == value] for hu, lab in data.values()]))
        assert part.images == sum(bool((lab == value).any()) for _, lab in data.values())
    assert stats.volume["voxels"] == f"label > 0, label != {IGNORE}"


def test_label_values_choose_the_voxels(ct):
    root, data = ct
    stats = prep.compute_stats(str(root), workers=0, label_values="2")
    check_against(stats, np.concatenate([hu[lab == 2] for hu, lab in data.values()]))
    assert stats.volume["label_values"] == [2]


def test_shards_merged_equal_the_whole_and_the_file_round_trips(ct, tmp_path):
    root, _ = ct
    options = {"workers": 0, "foreground": True, "ignore_label": IGNORE, "per_label": True}
    whole = prep.compute_stats(str(root), **options)
    parts = []
    for i in range(3):
        path = tmp_path / f"part{i}.json"
        prep.compute_stats(str(root), shard=f"{i}/3", **options).save(path)
        parts.append(str(path))
    merged = prep.merge_stats(parts)
    assert merged.classes == whole.classes and merged.volume == whole.volume

    def same(a, b):  # 16-bit data: every statistic exact from the histogram, whatever the order
        assert a.summary == b.summary and a.state.wide.tolist() == b.state.wide.tolist()
        assert [a.percentile(q) for q in QS] == [b.percentile(q) for q in QS]

    same(merged, whole)
    for value in whole.classes:
        same(merged.class_stats(value), whole.class_stats(value))
    whole.save(tmp_path / "whole.json")
    again = prep.load_stats(tmp_path / "whole.json")
    assert again.state == whole.state and again.class_states == whole.class_states


def test_scaled_uint16_ct_is_exact_hounsfield_units(tmp_path):
    data = ct_dataset(tmp_path, cases=2, scaled=True)
    stats = prep.compute_stats(str(tmp_path), workers=0, foreground=True)
    check_against(stats, np.concatenate([hu[lab > 0] for hu, lab in data.values()]))
    assert stats.state.wide_kind == 2  # signed 16-bit: exact
    assert stats.volume["scaling"] == [{"slope": 1.0, "inter": float(AIR), "files": 2}]


def test_float_slope_is_applied_as_nibabel_applies_it(tmp_path):
    raw = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    write_nifti(tmp_path / "a.nii.gz", raw, slope=0.5, inter=-3.25)
    stats = prep.compute_stats(str(tmp_path), workers=0)
    want = (raw.astype(np.float64) * 0.5 - 3.25).astype(np.float32)
    import nibabel

    assert np.array_equal(want, nibabel.load(tmp_path / "a.nii.gz").get_fdata().astype(np.float32))
    check_against(stats, want)


def test_mri_float_volumes_with_nonzero_channel_wise(tmp_path):
    volumes = [mri_case((10, 9, 8 + k), seed=k) for k in range(3)]
    for k, volume in enumerate(volumes):
        write_nifti(tmp_path / f"m{k}.nii.gz", volume)
    stats = prep.compute_stats(str(tmp_path), workers=0, nonzero=True)
    assert stats.channels == 2
    for c in range(2):
        values = np.concatenate([v[..., c][v[..., c] != 0] for v in volumes])
        check_against(stats, values, c)
    everything = prep.compute_stats(str(tmp_path), workers=0)
    check_against(everything, np.concatenate([v[..., 1].ravel() for v in volumes]), 1)


def test_slabs_bound_memory_and_give_the_same_state(ct):
    root, _ = ct
    src = prep.resolve_source(str(root))
    chunk = next(src.iter_tasks(0, 4))
    from prep.engine.bands import BandLayout

    layout = BandLayout(1)
    one_plane = reduce_volumes(chunk, layout, None, slab_voxels=1)
    whole = reduce_volumes(chunk, layout, None)
    assert one_plane.state.count.tolist() == whole.state.count.tolist()
    assert one_plane.state.wide.tolist() == whole.state.wide.tolist()
    assert one_plane.state.images == whole.state.images == 4
    assert one_plane.state.compute() == whole.state.compute()


def test_empty_foreground_is_listed_not_a_crash(tmp_path):
    ct_dataset(tmp_path, cases=2)
    write_nifti(tmp_path / "labelsTr" / "ct_001.nii.gz", np.zeros((25, 20, 20), np.uint8))
    with pytest.warns(prep.PrepWarning, match="empty foreground"):
        stats = prep.compute_stats(str(tmp_path), workers=0, foreground=True)
    assert stats.images == 1
    assert stats.skipped == ({"path": "ct_001", "reason": "empty foreground: no voxel with label > 0"},)


def test_label_map_of_another_shape_is_refused_naming_both(tmp_path):
    ct_dataset(tmp_path, cases=1)
    write_nifti(tmp_path / "labelsTr" / "ct_000.nii.gz", np.zeros((5, 5, 5), np.uint8))
    with pytest.raises(SourceError, match=r"ct_000\.nii\.gz: a label map of 5x5x5, but its image .*ct_000_0000"):
        prep.compute_stats(str(tmp_path), workers=0, foreground=True)


def test_differing_affine_is_a_warning(tmp_path):
    hu = np.zeros((4, 4, 4), np.int16)
    write_nifti(tmp_path / "img" / "a.nii.gz", hu)
    write_nifti(tmp_path / "seg" / "a.nii.gz", np.ones((4, 4, 4), np.uint8), affine=np.diag([2.0, 1, 1, 1]))
    with pytest.warns(prep.PrepWarning, match="affine differs"):
        prep.compute_stats(str(tmp_path / "img"), labels=str(tmp_path / "seg"), foreground=True, workers=0)


def test_channels_must_agree_across_cases(tmp_path):
    write_nifti(tmp_path / "a.nii.gz", mri_case((4, 4, 4), 0, channels=2))
    write_nifti(tmp_path / "b.nii.gz", mri_case((4, 4, 4), 0, channels=3))
    with pytest.raises(SourceError, match=r"b\.nii\.gz: 3 channel\(s\), but .*a\.nii\.gz has 2"):
        prep.compute_stats(str(tmp_path), workers=0)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: raw_file(d / "flat.nii.gz", (8, 8)), "2-D image"),
        (lambda d: raw_file(d / "five.nii.gz", (4, 4, 4, 2, 2)), "5-D image"),
        (lambda d: header_with_dims(d / "huge.nii.gz", (30000, 30000, 30000)), "beyond prep's limits"),
        (lambda d: raw_file(d / "bomb.nii.gz", (512, 512, 1000), data=b""), "more than a"),
        (lambda d: raw_file(d / "short.nii", (8, 8, 8), data=b"\0" * 100), "truncated"),
        (
            lambda d: truncated_gz(d / "cut.nii.gz", write_nifti(d / "src" / "x.nii.gz", mri_case((30, 30, 30), 0, 1))),
            "",
        ),
        (lambda d: (d / "junk.nii.gz").write_bytes(b"not gzip at all"), "not a readable NIfTI"),
    ],
)
def test_bad_files_are_skipped_with_one_line_reasons(tmp_path, make, reason):
    write_nifti(tmp_path / "a_good.nii.gz", mri_case((6, 6, 6), 0, channels=2)[..., :1])
    make(tmp_path)
    with pytest.warns(prep.PrepWarning, match="skipped 1 file"):
        stats = prep.compute_stats(str(tmp_path), workers=0, covariance=False)
    assert stats.images == 1
    (entry,) = stats.skipped
    assert reason in entry["reason"] and "\n" not in entry["reason"]


def test_a_gzip_bomb_is_read_no_further_than_its_header_declares(tmp_path, monkeypatch):
    raw_file(tmp_path / "bomb.nii.gz", (64, 64, 4), extra=50_000_000)  # 50 MB of zeros after the voxels
    reads = []
    original = nifti_decode.SlabReader.read

    def counting(self, planes):
        out = original(self, planes)
        reads.append(out.nbytes)
        return out

    monkeypatch.setattr(nifti_decode.SlabReader, "read", counting)
    stats = prep.compute_stats(str(tmp_path), workers=0)
    assert stats.count == (64 * 64 * 4,) and sum(reads) == 64 * 64 * 4 * 2


def test_volume_options_are_refused_elsewhere_and_checked(tmp_path, ct):
    root, _ = ct
    (tmp_path / "x.png").write_bytes(b"")
    with pytest.raises(OptionError, match="--foreground is for NIfTI volumes"):
        prep.compute_stats(str(tmp_path), foreground=True)
    with pytest.raises(OptionError, match="choose the voxels twice"):
        prep.compute_stats(str(root), foreground=True, label_values="1")
    with pytest.raises(OptionError, match="not RGB"):
        prep.compute_stats(str(root), mode="RGB")
    with pytest.raises(OptionError, match="--label-values must be integers"):
        prep.compute_stats(str(root), label_values="a")


def test_cli_stats_of_a_folder_of_volumes_and_its_errors(ct, tmp_path):
    root, _ = ct
    out = tmp_path / "s.json"
    result = run("stats", root, "-o", out, "--foreground", "--ignore-label", IGNORE, "--per-label", "--workers", 0)
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["classes"] == ["1", "2"] and saved["volume"]["per_label"] is True
    (tmp_path / "img").mkdir()
    write_nifti(tmp_path / "img" / "a.nii.gz", np.zeros((3, 3, 3), np.int16))
    bad = tmp_path / "bad.json"
    result = run("stats", tmp_path / "img", "-o", bad, "--foreground")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--labels DIR" in result.output and len(result.output.strip().splitlines()) == 1
    assert not bad.exists()


def test_without_nibabel_one_line_names_the_extra(ct, monkeypatch):
    import builtins

    root, _ = ct
    real = builtins.__import__

    def no_nibabel(name, *args, **kwargs):
        if name == "nibabel":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nibabel)
    with warnings.catch_warnings(), pytest.raises(SourceError, match=r"pip install 'prep\[medical\]'"):
        prep.compute_stats(str(root), workers=0)


def test_a_stats_file_of_other_voxels_is_not_reused(ct, tmp_path):
    root, _ = ct
    out = tmp_path / "s.json"
    _, reused = prep.load_or_compute(out, str(root), workers=0)
    assert not reused and prep.load_or_compute(out, str(root), workers=0)[1]
    stats, reused = prep.load_or_compute(out, str(root), workers=0, foreground=True)
    assert not reused and stats.volume["foreground"]
    assert prep.load_or_compute(out, str(root), workers=0, foreground=True)[1]
