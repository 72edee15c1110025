"""prep.options: command-line flag, then config file, then default; the shipped presets, and a
preset's output never reused for another split."""

from __future__ import annotations

from pathlib import Path

import prep
from helpers import make_mnist, run

REPO = Path(__file__).resolve().parents[1]


def test_a_preset_out_is_never_reused_for_another_split(tmp_path):
    make_mnist(tmp_path)
    preset = tmp_path / "p.toml"
    preset.write_text(f'source = "mnist"\nroot = "{tmp_path}"\nsplit = "train"\nout = "{tmp_path}/m-train.json"\n')
    assert run("stats", "--config", preset, "-q").exit_code == 0
    before = (tmp_path / "m-train.json").read_bytes()
    result = run("stats", "--config", preset, "--split", "test", "-q")
    assert result.exit_code == 2 and "give -o, or write '{split}'" in result.stderr
    assert (tmp_path / "m-train.json").read_bytes() == before
    preset.write_text(f'source = "mnist"\nroot = "{tmp_path}"\nout = "{tmp_path}/m-{{split}}.json"\n')
    assert run("stats", "--config", preset, "--split", "test", "-q").exit_code == 0
    assert prep.load_stats(tmp_path / "m-test.json").source["split"] == "test"
    assert (tmp_path / "m-train.json").read_bytes() == before


def test_config_preset_and_precedence(tmp_path):
    make_mnist(tmp_path)
    config = tmp_path / "mnist.toml"
    config.write_text(f'source = "mnist"\nroot = "{tmp_path}"\nsplit = "test"\nbatch-size = 50\n')
    out = tmp_path / "s.json"
    assert run("stats", "--config", config, "-o", out).exit_code == 0
    assert prep.load_stats(out).source["split"] == "test"
    assert run("stats", "--config", config, "--split", "train", "-o", out).exit_code == 0  # flag beats file
    assert prep.load_stats(out).source["split"] == "train"
    config.write_text('source = "mnist"\ncolour = "blue"\n')
    bad = run("stats", "--config", config)
    assert bad.exit_code == 2 and "unknown key 'colour'" in bad.stderr


def test_shipped_configs_parse():
    from prep.options import load_config

    presets = sorted((REPO / "configs").glob("*.toml"))
    assert {p.stem for p in presets} >= {"mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100"}
    for preset in presets:
        assert load_config(preset)["source"] == preset.stem
