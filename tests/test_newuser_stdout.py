"""``-o -``: standard output where a command can print what it writes (prep stats, with one
split or several, prep merge, prep export), a one-line refusal everywhere else, never a file
named ``-``."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import prep
from helpers import good_images, run


def _without_created(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "created"}


@pytest.fixture
def split_folder(tmp_path):
    good_images(tmp_path / "photos" / "train" / "cls", 5)
    good_images(tmp_path / "photos" / "val" / "cls", 3)
    return tmp_path / "photos"


def test_several_splits_on_standard_output_are_one_json_object(tmp_path, split_folder):
    cmd = [sys.executable, "-m", "prep", "stats", str(split_folder), "--split", "all", "-o", "-", "--workers", "0"]
    produced = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert produced.returncode == 0, produced.stderr
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=produced.stdout, capture_output=True, text=True)
    assert tool.returncode == 0, tool.stderr  # one JSON document, not two glued together
    piped = json.loads(tool.stdout)
    assert list(piped) == ["train", "val"]
    assert "== split train ==" in produced.stderr and "== split val ==" in produced.stderr  # summaries
    assert not (tmp_path / "-").exists()
    written = run("stats", split_folder, "--split", "all", "-o", tmp_path / "s-{split}.json", "-q", "--workers", 0)
    assert written.exit_code == 0, written.output
    for split in ("train", "val"):
        saved = prep.load_stats(tmp_path / f"s-{split}.json")
        assert _without_created(piped[split]) == _without_created(saved.to_dict())
        assert prep.Stats.from_dict(piped[split]).images == (5 if split == "train" else 3)
    as_json = run("stats", split_folder, "--split", "all", "-o", tmp_path / "s-{split}.json", "--format", "json")
    assert as_json.exit_code == 0 and "is up to date" in as_json.stderr
    assert {k: _without_created(v) for k, v in json.loads(as_json.stdout).items()} == {
        k: _without_created(v) for k, v in piped.items()
    }


def test_merge_and_export_print_to_standard_output_with_dash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i in range(2):
        assert run("stats", "sample", "--shard", f"{i}/2", "-o", f"p{i}.json", "-q", "--workers", 0).exit_code == 0
    merged = run("merge", "p0.json", "p1.json", "-o", "-")
    assert merged.exit_code == 0, merged.output
    assert run("merge", "p0.json", "p1.json", "-o", "whole.json", "-q").exit_code == 0
    assert _without_created(json.loads(merged.stdout)) == _without_created(prep.load_stats("whole.json").to_dict())
    assert "transforms.Normalize" in merged.stderr  # the summary, beside the JSON
    exported = run("export", "whole.json", "--to", "dali", "-o", "-", "--format", "json")
    assert exported.exit_code == 0 and json.loads(exported.stdout)["target"] == "dali"
    assert exported.stdout == run("export", "whole.json", "--to", "dali", "--format", "json").stdout
    assert not (tmp_path / "-").exists()


def test_dash_is_refused_where_nothing_can_be_printed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    whiten = run("whiten", "sample", "--resize", "8x8", "-o", "-", "--workers", 0)
    assert whiten.exit_code == 2
    assert "-: the whitening file cannot be written to standard output here" in whiten.stderr
    report = run("stats", "sample", "--per-image", "-", "--workers", 0)
    assert report.exit_code == 2 and "-: the per-image report cannot be written" in report.stderr
    with pytest.raises(prep.OutputError, match=r"'-o -' of prep stats and prep merge prints it"):
        prep.load_or_compute("-", "sample", workers=0)
    assert not (tmp_path / "-").exists()
    cmd = [sys.executable, "-m", "prep", "whiten", "sample", "--resize", "8x8", "-o", "/dev/stdout"]
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert piped.returncode == 2 and "not a regular file" in piped.stderr
    assert "'-o -'" not in piped.stderr  # prep whiten writes files only: no hint it cannot keep
