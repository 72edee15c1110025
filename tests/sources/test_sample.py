"""--sample / --seed: a uniformly random subset, exact on it, with honest 95% intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import prep
from helpers import make_folder, run
from prep.errors import OptionError, StatsFileError
from prep.sources import resolve_source
from prep.sources.sample import sample_source


def _images(m=400, seed=0):
    """Images whose brightness varies from image to image, as in real datasets."""
    rng = np.random.default_rng(seed)
    base = rng.integers(20, 200, m)
    return [torch.from_numpy(np.clip(rng.normal(b, 25, (1, 8, 8)), 0, 255).astype(np.uint8)) for b in base]


def test_the_same_seed_gives_the_same_images_and_their_exact_statistics():
    images = _images(60)
    first = prep.compute_stats(images, sample=12, seed=5)
    again = prep.compute_stats(images, sample=12, seed=5)
    assert first.to_dict()["mean"] == again.to_dict()["mean"]
    chosen = np.sort(np.random.default_rng(5).choice(60, 12, replace=False))
    subset = prep.compute_stats([images[i] for i in chosen])
    assert (first.mean, first.std, first.images) == (subset.mean, subset.std, 12)
    assert first.sample["images"] == 12 and first.sample["of"] == 60 and first.sample["seed"] == 5
    assert prep.compute_stats(images, sample=12, seed=6).mean != first.mean
    assert prep.compute_stats(images, sample=0.25).images == 15


def test_95_percent_intervals_cover_the_full_data_about_95_percent_of_the_time():
    images = _images(400)
    full = prep.compute_stats(images)
    covered = {"mean": 0, "std": 0}
    seeds = range(200)
    for seed in seeds:
        s = prep.compute_stats(images, sample=40, seed=seed)
        ci = s.sample["ci95"]
        covered["mean"] += abs(s.mean[0] - full.mean[0]) <= ci["mean"][0]
        covered["std"] += abs(s.std[0] - full.std[0]) <= ci["std"][0]
    for name, hits in covered.items():
        assert 0.88 <= hits / len(seeds) <= 0.99, (name, hits)


def test_a_sampled_folder_reads_only_the_chosen_files(tmp_path):
    root = make_folder(tmp_path / "data")
    whole = resolve_source(root)
    names = [n for chunk in whole.iter_tasks(0, 100) for n in chunk.names]
    sampled = sample_source(resolve_source(root), 3, seed=1)
    chosen = [n for chunk in sampled.iter_tasks(0, 100) for n in chunk.names]
    expected = [names[i] for i in np.sort(np.random.default_rng(1).choice(len(names), 3, replace=False))]
    assert chosen == expected
    for name in set(names) - set(chosen):
        (root / name).write_bytes(b"broken")  # files not in the sample are never opened
    stats = prep.compute_stats(root, sample=3, seed=1, workers=2)
    assert stats.images == 3 and stats.skipped_count == 0


def test_sampled_stats_files_round_trip_reuse_and_refuse_edits(tmp_path):
    out = tmp_path / "s.json"
    assert run("stats", "sample", "--sample", "10", "--seed", "2", "-o", out, "--workers", 0).exit_code == 0
    loaded = prep.load_stats(out)
    assert loaded.sample["images"] == 10 and loaded.source["sample"] == "10/24 seed 2"
    shown = run("show", out)
    assert "±" in shown.stdout and "10 images measured, a sample of 24 image files, seed 2" in shown.stdout
    again = run("stats", "sample", "--sample", "10", "--seed", "2", "-o", out, "--workers", 0)
    assert "is up to date" in again.stdout
    other = run("stats", "sample", "--sample", "10", "--seed", "3", "-o", out, "--workers", 0)
    assert "source sample changed" in other.stderr
    data = json.loads(out.read_text())
    data["sample"]["ci95"]["mean"][0] /= 2
    out.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match=r"field 'sample\.ci95'"):
        prep.load_stats(out)


@pytest.mark.parametrize("value", ["0", "-1", "1.5", "x", "2.5"])
def test_bad_samples_are_one_line_errors(value):
    result = run("stats", "sample", "--sample", value, "--workers", 0)
    assert result.exit_code == 2 and "sample" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_sample_and_shard_do_not_combine():
    with pytest.raises(OptionError, match="sample and shard cannot be combined"):
        prep.compute_stats("sample", sample=5, shard="0/2")


def test_a_sample_larger_than_the_data_measures_everything_and_says_so(caplog):
    stats = prep.compute_stats("sample", sample=1000, workers=0)
    assert stats.images == 24 and "holds 24 image files; measuring all of them" in caplog.text


def test_a_sample_that_draws_undecodable_files_says_what_it_measured(tmp_path, caplog):
    from PIL import Image

    for i in range(8):
        Image.fromarray(np.full((4, 4, 3), 30 * i, np.uint8)).save(tmp_path / f"{i}.png")
    for i in range(4):
        (tmp_path / f"bad{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.warns(prep.PrepWarning):
        stats = prep.compute_stats(tmp_path, sample=12, seed=0, workers=0)  # every file drawn
    assert stats.images == 8 and stats.sample["images"] == 8 and stats.sample["of"] == 12
    assert "the sample drew 12 of 12 files; 4 could not be decoded, so 8 images were measured" in caplog.text
    caplog.clear()
    with pytest.warns(prep.PrepWarning):
        prep.compute_stats(tmp_path, sample=20, seed=0, workers=0)
    assert "holds 12 image files; measuring all of them" in caplog.text
    out = tmp_path.parent / f"{tmp_path.name}.json"
    stats.save(out)
    assert "8 images measured, a sample of 12 image files" in run("show", out).stdout
