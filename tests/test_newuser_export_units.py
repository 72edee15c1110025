"""prep export refuses options that mean nothing for what it writes, --into included."""

from __future__ import annotations

import json

import pytest

import prep
from helpers import run


@pytest.fixture
def stats_and_config(tmp_path):
    stats = tmp_path / "s.json"
    prep.compute_stats("sample", workers=0).save(stats)
    config = tmp_path / "preprocessor_config.json"
    config.write_text(json.dumps({"image_mean": [0.5, 0.5, 0.5], "size": 224}))
    return stats, config


@pytest.mark.parametrize("units", ["unit", "raw"])
def test_units_is_refused_when_updating_an_hf_config(stats_and_config, units):
    stats, config = stats_and_config
    before = config.read_bytes()
    result = run("export", stats, "--to", "hf", "--into", config, "--units", units)
    assert result.exit_code == 2
    assert "--units is for monai and keras only; hf takes unit scale" in result.stderr
    assert config.read_bytes() == before and "updated" not in result.stderr


def test_format_is_refused_when_updating_an_hf_config(stats_and_config):
    stats, config = stats_and_config
    before = config.read_bytes()
    result = run("export", stats, "--to", "hf", "--into", config, "--format", "json")
    assert result.exit_code == 2 and "--into updates the file and prints nothing" in result.stderr
    assert config.read_bytes() == before
    updated = run("export", stats, "--to", "hf", "--into", config)
    assert updated.exit_code == 0 and json.loads(config.read_text())["size"] == 224


def test_units_still_choose_the_units_of_monai_and_keras(stats_and_config):
    stats, _ = stats_and_config
    unit = json.loads(run("export", stats, "--to", "keras", "--units", "unit", "--format", "json").stdout)
    raw = json.loads(run("export", stats, "--to", "keras", "--units", "raw", "--format", "json").stdout)
    assert unit["units"] == "unit scale" and raw["units"] == "0..255"
    assert raw["mean"] == pytest.approx([m * 255 for m in unit["mean"]])
