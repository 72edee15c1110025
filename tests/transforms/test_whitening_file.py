"""What load_whitening's check of W against its eigenvalues and eps catches, and what it cannot
(documented in prep.transforms.whitening_file._check_matrix and docs/whitening.md)."""

from __future__ import annotations

import pytest
import torch

from prep.engine.whiten import compute_whitening
from prep.errors import StatsFileError
from prep.transforms.whitening_file import load_whitening


def whitening_file(folder, kind: str):
    """A whitening file of 60 correlated 2x2 RGB images (D = 12, distinct eigenvalues)."""
    generator = torch.Generator().manual_seed(7)
    base = torch.randint(0, 200, (60, 1, 2, 2), generator=generator)
    noise = torch.randint(0, 56, (60, 3, 2, 2), generator=generator)
    images = list((base + noise).to(torch.uint8))
    path = folder / f"{kind}.pt"
    compute_whitening(images, eps=1e-3, pca=kind == "pca").save(path)
    return path


@pytest.fixture(params=["zca", "pca"])
def saved(request, tmp_path):
    return whitening_file(tmp_path, request.param)


def edited(path, change) -> dict:
    data = torch.load(path, weights_only=True)
    data = change(data)
    torch.save(data, path)
    return data


def permutation(d: int) -> torch.Tensor:
    return torch.eye(d, dtype=torch.float64)[torch.randperm(d, generator=torch.Generator().manual_seed(1))]


REFUSED = {
    "W scaled by 1 + 1e-7": lambda d: d | {"W": d["W"] * (1 + 1e-7)},
    "W scaled by 1 - 1e-8": lambda d: d | {"W": d["W"] * (1 - 1e-8)},
    "eigenvalues scaled by 1 + 1e-7": lambda d: d | {"eigenvalues": d["eigenvalues"] * (1 + 1e-7)},
    "rows permuted (P W)": lambda d: d | {"W": permutation(len(d["W"])) @ d["W"]},
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_edits_that_are_refused(saved, name):
    edited(saved, REFUSED[name])
    with pytest.raises(StatsFileError, match="field 'W'"):
        load_whitening(saved)


def _mixed_rows(d: dict) -> dict:
    """PCA rows 0 and 1 mixed (each keeps its norm, they are no longer orthogonal)."""
    w = d["W"].clone()
    row = w[0] + 0.01 * w[1] * w[0].norm() / w[1].norm()
    w[0] = row * w[0].norm() / row.norm()
    return d | {"W": w}


def test_pca_rows_that_are_no_longer_orthogonal_are_refused(tmp_path):
    saved = whitening_file(tmp_path, "pca")
    edited(saved, _mixed_rows)
    with pytest.raises(StatsFileError, match=r"field 'W' is not the PCA whitening matrix .* \(rows not orthogonal\)"):
        load_whitening(saved)


def _similar(d: dict) -> dict:
    """ZCA: P W P^T; PCA: W P^T. The whitening of permuted data, with the same eigenvalues."""
    p = permutation(len(d["W"]))
    return d | {"W": p @ d["W"] @ p.T if d["kind"] == "zca" else d["W"] @ p.T}


def _mirrored_swap(d: dict) -> dict:
    """ZCA: W[0,1] (and W[1,0]) swapped with W[2,3] (and W[3,2]): trace, norm and symmetry kept."""
    w = d["W"].clone()
    a, b = w[0, 1].item(), w[2, 3].item()
    w[0, 1] = w[1, 0] = b
    w[2, 3] = w[3, 2] = a
    return d | {"W": w}


UNDETECTABLE = {
    "an orthogonal similarity (P W P^T, W P^T)": _similar,
    "the mean shifted": lambda d: d | {"mean": d["mean"] + 0.05},
}


@pytest.mark.parametrize("name", sorted(UNDETECTABLE))
def test_edits_that_cannot_be_detected_load(saved, name):
    """U is not in the file and the mean is tied to nothing: documented as beyond the check."""
    before = load_whitening(saved)
    data = edited(saved, UNDETECTABLE[name])
    after = load_whitening(saved)
    assert not (torch.equal(after.matrix, before.matrix) and torch.equal(after.mean, before.mean))
    assert torch.equal(after.matrix, data["W"])


def test_zca_edits_that_keep_trace_norm_and_symmetry_load(tmp_path):
    saved = whitening_file(tmp_path, "zca")
    edited(saved, _mirrored_swap)
    load_whitening(saved)  # only an O(D^3) eigen decomposition would see it
