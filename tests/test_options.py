"""prep.options: every option declared once, and what is derived from the declarations; command-line
flag, then config file, then default; the shipped presets, and a preset's output never reused for
another split."""

from __future__ import annotations

from pathlib import Path

import click
import pytest

import prep
from helpers import make_mnist, run
from prep.cli import main
from prep.options import BY_NAME, DEFAULTS, OPTIONS, PASS_OPTIONS, SOURCE_OPTIONS, api_options, load_config

REPO = Path(__file__).resolve().parents[1]


def _params(command: str) -> dict[str, click.Parameter]:
    return {p.name: p for p in main.commands[command].params}


@pytest.mark.parametrize("command", ["stats", "whiten", "check", "compare", "report"])
def test_each_command_has_a_flag_for_every_option_that_names_it(command):
    params = _params(command)
    for option in OPTIONS:
        if command not in option.commands:
            continue
        param = params[option.name]
        assert option.help.split(".")[0] in param.help, option.name
        if option.choices:
            assert tuple(param.type.choices) == option.choices
        if option.group == "command":  # a command's own: its default shown
            assert param.default == option.default and param.show_default
        else:  # resolved: flag, then preset, then DEFAULTS
            assert param.default is None


def test_no_flag_without_a_declaration():
    declared = {o.name for o in OPTIONS}
    own = {"source", "out", "config_path", "pca_whiten", "output_format", "reference", "a", "b"}
    own |= {"files", "labels", "thumbnails", "per_image"}  # prep report's
    for command in ("stats", "whiten", "check", "compare", "report"):
        assert set(_params(command)) - declared <= own, command


def test_defaults_and_groups_come_from_the_table():
    assert DEFAULTS["workers"] is None and DEFAULTS["checkpoint_every"] == BY_NAME["checkpoint_every"].default
    assert set(SOURCE_OPTIONS) <= set(PASS_OPTIONS)
    assert "tol" not in DEFAULTS and "eps" not in DEFAULTS  # one command's own, not a pass option
    from prep.insight.checks import DEFAULT_MAX_SHIFT, DEFAULT_TOL
    from prep.transforms.whitening import DEFAULT_EPS

    assert (DEFAULT_TOL, DEFAULT_MAX_SHIFT, DEFAULT_EPS) == (0.05, 0.1, 1e-5)
    assert "[default: 0.05" in main.commands["check"].get_help(click.Context(main.commands["check"]))


def test_presets_take_the_declared_keys_with_their_types_and_choices(tmp_path):
    ok = tmp_path / "ok.toml"
    ok.write_text('workers = 2\ndecoder = "pil"\nbatch-size = 64\nfollow_symlinks = false\n')
    assert load_config(ok) == {"workers": 2, "decoder": "pil", "batch_size": 64, "follow_symlinks": False}
    for text, message in (
        ("workers = true\n", "must be a int"),
        ('decoder = "nvjpeg"\n', "must be one of auto, pil, torchvision"),
        ("tol = 0.1\n", "unknown key 'tol'"),
    ):
        bad = tmp_path / "bad.toml"
        bad.write_text(text)
        with pytest.raises(prep.OptionError, match=message):
            load_config(bad)


def test_the_api_takes_the_declared_options_and_refuses_others():
    assert api_options({"workers": 0})["workers"] == 0
    assert api_options({})["checkpoint_every"] == DEFAULTS["checkpoint_every"]
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*wokers"):
        prep.compute_stats("sample", wokers=0)
    with pytest.raises(TypeError, match=r"unexpected keyword argument.*tol"):
        api_options({"tol": 0.1})


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
