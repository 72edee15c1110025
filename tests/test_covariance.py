"""--covariance: the exact colour covariance, its PCA, and AlexNet lighting from them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import make_cifar10, make_folder, pil_pixels, run
from prep.errors import StatsFileError
from prep.stats.moments import ChannelMoments


def _exact_cov(pixels: np.ndarray) -> np.ndarray:
    """Exact covariance (ddof=0, unit scale) of raw (P, C) uint8 pixels, each entry rounded once."""
    from fractions import Fraction

    x = pixels.astype(object)
    n, c = len(pixels), pixels.shape[1]
    s = x.sum(0)
    return np.array(
        [
            [float(Fraction(n * (x[:, i] * x[:, j]).sum() - s[i] * s[j], n * n * 255**2)) for j in range(c)]
            for i in range(c)
        ]
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_folder_covariance_is_exact(tmp_path, workers):
    root = make_folder(tmp_path / "data")
    stats = prep.compute_stats(root, covariance=True, workers=workers)
    pixels = np.concatenate([pil_pixels(p) for p in sorted(root.rglob("*")) if p.is_file()]).astype(np.uint8)
    assert stats.covariance == _exact_cov(pixels).tolist()
    np.testing.assert_allclose(stats.covariance, np.cov(pixels.T / 255, bias=True), rtol=1e-12, atol=1e-15)
    assert [stats.covariance[i][i] for i in range(3)] == pytest.approx([s * s for s in stats.std], rel=1e-12)


def test_batch_covariance_is_exact_and_merges(tmp_path):
    images = make_cifar10(tmp_path)["train"]
    stats = prep.compute_stats("cifar10", root=tmp_path, covariance=True, batch_size=7)
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, 3)
    assert stats.covariance == _exact_cov(pixels).tolist()
    parts = [prep.compute_stats("cifar10", root=tmp_path, covariance=True, shard=f"{i}/3") for i in range(3)]
    assert prep.merge_stats(parts).covariance == stats.covariance


def test_sixteen_bit_and_grey_as_rgb_covariance(tmp_path):
    grey = np.random.default_rng(3).integers(0, 65536, (20, 30)).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "a.png")
    stats = prep.compute_stats(tmp_path, covariance=True, workers=0)  # one grey channel read as RGB
    var = (grey.astype(np.float64) / 65535).var()
    np.testing.assert_allclose(stats.covariance, np.full((3, 3), var), rtol=1e-9)
    assert stats.pca["eigval"][0] == pytest.approx(3 * var, rel=1e-9)
    float_state = ChannelMoments(3, covariance=True).update(torch.rand(2, 3, 4, 4))
    assert float_state.cross is None  # float data: no exact cross sums, no covariance


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


def test_lighting_adds_eigvec_times_alpha_eigval():
    stats = prep.compute_stats("sample", covariance=True, workers=0)
    x = torch.rand(3, 8, 8)
    assert torch.equal(stats.lighting(alphastd=0.0)(x), x)
    torch.manual_seed(0)
    shifts = torch.stack([(stats.lighting(0.1)(x) - x)[:, 0, 0] for _ in range(4000)]).double()
    d = stats.lighting(0.1)(x) - x
    assert torch.allclose(d, d[:, :1, :1].expand_as(d)) and d.abs().max() > 0  # one shift for every pixel
    vec, val = torch.tensor(stats.pca["eigvec"]).double(), torch.tensor(stats.pca["eigval"]).double()
    expected = vec @ torch.diag((0.1 * val) ** 2) @ vec.T  # covariance of eigvec @ (alpha * eigval)
    np.testing.assert_allclose(torch.cov(shifts.T, correction=0), expected, rtol=0.1, atol=1e-9)
    with pytest.raises(TypeError, match="after ToDtype"):
        stats.lighting()(torch.zeros(3, 2, 2, dtype=torch.uint8))
    with pytest.raises(StatsFileError, match="measure with covariance=True"):
        prep.compute_stats("sample", workers=0, covariance=False).lighting()


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


def test_check_against_imagenet_prints_the_eigenvalues():
    result = run("check", "imagenet", "sample", "--workers", 0)
    assert "PCA eigenvalues of this data" in result.stdout and "0.2175, 0.0188, 0.0045" in result.stdout
