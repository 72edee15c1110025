"""The stats file: round trip, atomic writes, validation that names the field, staleness."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import prep
from helpers import make_mnist, run
from prep.errors import StaleStatsError, StatsFileError
from prep.stats.file import SCHEMA_VERSION


@pytest.fixture
def saved(tmp_path):
    make_mnist(tmp_path)
    stats = prep.compute_stats("mnist", root=tmp_path)
    path = tmp_path / "mnist.json"
    stats.save(path)
    return tmp_path, stats, path


def test_round_trip_keeps_every_number(saved):
    _, stats, path = saved
    loaded = prep.load_stats(path)
    assert loaded.to_dict() == stats.to_dict()
    assert (loaded.mean, loaded.std, loaded.min, loaded.max) == (stats.mean, stats.std, stats.min, stats.max)
    assert isinstance(loaded.mean, tuple) and isinstance(loaded.mean[0], float)
    assert prep.Stats.from_dict(stats.to_dict()).to_dict() == stats.to_dict()


def test_documented_fields_are_present(saved):
    _, _stats, path = saved
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    assert data["prep_version"] == prep.__version__
    assert set(data["source"]) == {"kind", "path", "split", "mode", "images"}
    assert data["source"]["images"] == 300 and data["source"]["split"] == "train"
    assert set(data["fingerprint"]) == {"files", "bytes", "sha256"}
    assert data["options"] == {"mode": "L", "transform": None, "decoder": None}  # idx: no files decoded
    assert data["channels"] == 1 and data["pixel_max"] == 255
    for key in ("count", "mean", "std", "min", "max", "per_image_std_mean", "nonfinite"):
        assert len(data[key]) == 1, key
    assert data["skipped"] == {"count": 0, "reasons": {}, "files": []}
    assert all(isinstance(v, int) for v in data["state"]["exact_sum"] + data["state"]["exact_sumsq"])


def test_save_is_atomic_and_leaves_no_temp_files(saved, monkeypatch):
    tmp_path, stats, path = saved
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(prep.PrepError, match="No space left on device"):
        stats.save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def _edit(path, change):
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda d: d.pop("std"), "missing field 'std'"),
        (lambda d: d.update(mean=[0.1, 0.2]), "field 'mean': expected 1 values"),
        (lambda d: d.update(std=[-0.3]), "field 'std': must be non-negative"),
        (lambda d: d.update(schema_version=99), "unknown schema version 99"),
        (lambda d: d.update(std=[0.5]), "field 'std': .* does not match the stored state"),
        (lambda d: d["source"].update(mode="XYZ"), "field 'source.mode'"),
        (lambda d: d["state"].update(m2=[-1.0]), "state.m2"),
        (lambda d: d.update(channels=3), "field 'channels'"),
        (lambda d: d.update(mean="0.1"), "field 'mean': expected a list"),
    ],
)
def test_hand_edited_files_raise_one_error_class_naming_the_field(saved, change, message):
    _, _, path = saved
    _edit(path, change)
    with pytest.raises(StatsFileError, match=message) as info:
        prep.load_stats(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b"\xff\xfe", b"null", b'{"schema_version": true}'])
def test_garbage_files_are_stats_file_errors(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_bytes(content)
    with pytest.raises(StatsFileError):
        prep.load_stats(path)


def test_truncated_file_is_a_stats_file_error(saved):
    _, _, path = saved
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(StatsFileError, match="not valid JSON"):
        prep.load_stats(path)


def test_verify_against_detects_changed_data(saved):
    root, _, path = saved
    assert prep.load_stats(path, verify_against="mnist", root=root).images == 300
    make_mnist(root, n_train=301)  # rewritten data
    with pytest.raises(StaleStatsError, match="stale: data changed"):
        prep.load_stats(path, verify_against="mnist", root=root)


def test_stale_reason_names_what_changed(saved):
    root, stats, _ = saved
    src = prep.resolve_source("mnist", root=root, split="test")
    assert "split changed (train -> test)" in stats.stale_reason(src.describe(), src.fingerprint(), "L")
    same = prep.resolve_source("mnist", root=root)
    assert stats.stale_reason(same.describe(), same.fingerprint(), "L") is None
    assert "mode changed (L -> RGB)" in stats.stale_reason(same.describe(), same.fingerprint(), "RGB")


def test_pca_is_the_sorted_signed_eigen_decomposition(tmp_path):
    stats = prep.compute_stats("sample", covariance=True, workers=0)
    pca = stats.pca
    cov = np.array(stats.covariance)
    vectors = np.array(pca["eigvec"])
    assert pca["eigval"] == sorted(pca["eigval"], reverse=True)
    np.testing.assert_allclose(cov @ vectors, vectors * np.array(pca["eigval"]), atol=1e-12)
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(3), atol=1e-12)
    for k in range(3):  # the largest-magnitude component of each eigenvector is positive
        assert vectors[np.argmax(np.abs(vectors[:, k])), k] > 0


def test_stats_file_covariance_round_trip_reuse_and_edits(tmp_path):
    out = tmp_path / "s.json"
    run("stats", "sample", "-o", out, "--workers", 0, "--no-covariance")
    assert prep.load_stats(out).covariance is None
    assert "up to date" in run("stats", "sample", "-o", out, "--workers", 0).output  # the default does not ask
    asked = run("stats", "sample", "-o", out, "--covariance", "--workers", 0)
    assert "made without it" in asked.stderr and prep.load_stats(out).covariance is not None
    assert "is up to date" in run("stats", "sample", "-o", out, "--workers", 0).stdout
    shown = run("show", out)
    assert "covariance R" in shown.stdout and "pca eigval" in shown.stdout
    for edit, message in (
        (lambda d: d["covariance"][0].__setitem__(1, 0.5), "field 'covariance'"),
        (lambda d: d["pca"]["eigval"].__setitem__(0, 1.0), "field 'pca'"),
        (lambda d: d["state"]["cross"][0].__setitem__(1, 7), "state.cross"),
    ):
        data = json.loads(out.read_text())
        edit(data)
        (tmp_path / "e.json").write_text(json.dumps(data))
        with pytest.raises(StatsFileError, match=message):
            prep.load_stats(tmp_path / "e.json")
