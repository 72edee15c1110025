"""The prep CLI: argument mapping, output, reuse, and one-line errors with the right exit codes;
archives, shards and NumPy arrays with their options on the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile

import numpy as np
import pytest

import prep
from helpers import make_cifar10, make_folder, make_mnist, run


def test_stats_writes_file_and_prints_the_normalize_line(tmp_path):
    make_mnist(tmp_path)
    out = tmp_path / "s.json"
    result = run("stats", "mnist", "--root", tmp_path, "-o", out, "--workers", 1)
    assert result.exit_code == 0, result.output
    stats = prep.load_stats(out)
    last = result.stdout.strip().splitlines()[-1]
    assert last == f"transforms.Normalize(mean=({stats.mean[0]:.4f},), std=({stats.std[0]:.4f},))"
    assert "per-image std mean" in result.stdout


def test_cli_and_python_api_give_the_same_numbers(tmp_path):
    make_cifar10(tmp_path)
    out = tmp_path / "c.json"
    assert run("stats", "cifar10", "--root", tmp_path, "--split", "test", "-o", out, "--batch-size", 7).exit_code == 0
    api = prep.compute_stats("cifar10", root=tmp_path, split="test")
    assert prep.load_stats(out).std == api.std


def test_up_to_date_file_is_reused_and_changes_are_explained(tmp_path):
    make_mnist(tmp_path)
    out = tmp_path / "s.json"
    assert run("stats", "mnist", "--root", tmp_path, "-o", out).exit_code == 0
    created = json.loads(out.read_text())["created"]
    again = run("stats", "mnist", "--root", tmp_path, "-o", out)
    assert again.exit_code == 0 and again.stdout.startswith(f"{out} is up to date")
    forced = run("stats", "mnist", "--root", tmp_path, "-o", out, "--force")
    assert "up to date" not in forced.stdout
    make_mnist(tmp_path, n_train=310)
    changed = run("stats", "mnist", "--root", tmp_path, "-o", out)
    assert "is stale: data changed (1 -> 1 files)" not in changed.stderr
    assert "is stale: data changed" in changed.stderr
    assert prep.load_stats(out).images == 310
    other_mode = run("stats", "mnist", "--root", tmp_path, "-o", out, "--mode", "RGB")
    assert "is stale: mode changed (L -> RGB)" in other_mode.stderr
    assert prep.load_stats(out).channels == 3
    assert created  # the first file had a creation time


@pytest.mark.parametrize(
    "args,message",
    [
        (["stats", "{tmp}/nope"], "nope: no such file or directory, and not a dataset name"),
        (["stats", "imagenet"], "not a dataset name (mnist, fashion-mnist, kmnist, cifar10, cifar100, sample)"),
        (["stats", "mnist", "--root", "{tmp}"], "MNIST/raw/train-images-idx3-ubyte: mnist train split not found"),
        (["stats", "{tmp}/empty"], "empty: no image files found"),
        (["stats", "{tmp}/bad-idx3-ubyte"], "bad-idx3-ubyte: not an idx file"),
        (["stats", "--config", "{tmp}/missing.toml"], "missing.toml: cannot read config"),
        (["show", "{tmp}/bad-idx3-ubyte"], "bad-idx3-ubyte: not a stats file"),
    ],
)
def test_bad_input_is_one_line_exit_2_no_output(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad-idx3-ubyte").write_bytes(b"\x89PNG....")
    out = tmp_path / "out.json"
    result = (
        run(*[a.format(tmp=tmp_path) for a in args], "-o", out)
        if args[0] == "stats"
        else run(*[a.format(tmp=tmp_path) for a in args])
    )
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prep: error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert not out.exists()


def test_bad_option_values_are_usage_errors(tmp_path):
    result = run("stats", "mnist", "--split", "val")
    assert result.exit_code == 2 and result.stderr == "prep: error: split must be one of train, test; got 'val'\n"
    result = run("stats", "sample", "--workers", "-1")
    assert result.exit_code == 2 and "Invalid value for '--workers'" in result.stderr
    assert run("stats").exit_code == 2


def test_show_pretty_prints(tmp_path):
    make_mnist(tmp_path)
    out = tmp_path / "s.json"
    run("stats", "mnist", "--root", tmp_path, "-o", out)
    shown = run("show", out)
    assert shown.exit_code == 0
    assert "mnist" in shown.stdout and "fingerprint           1 files" in shown.stdout
    assert shown.stdout.strip().endswith(prep.load_stats(out).normalize_line())


def test_quiet_prints_only_the_normalize_line(tmp_path):
    make_mnist(tmp_path)
    result = run("stats", "mnist", "--root", tmp_path, "-q")
    assert result.stdout.strip().splitlines() == [prep.compute_stats("mnist", root=tmp_path).normalize_line()]


def test_console_script_runs_the_shipped_sample(tmp_path, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE")
    proc = subprocess.run(
        [sys.executable, "-m", "prep", "stats", "sample", "-o", tmp_path / "s.json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1].startswith("transforms.Normalize(mean=(")
    assert "img/s" in proc.stderr  # the tqdm progress bar went to stderr
    assert prep.load_stats(tmp_path / "s.json").images == 24


def test_help_explains_every_option():
    text = run("stats", "--help").output
    for flag in (
        "--root",
        "--split",
        "--out",
        "--device",
        "--workers",
        "--batch-size",
        "--mode",
        "--force",
        "--download",
        "--quiet",
        "--config",
        "--strict",
        "--checkpoint",
        "--resume",
    ):
        assert flag in text


def test_download_offline_is_one_line_exit_2(tmp_path, monkeypatch):
    import urllib.error
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", offline)
    out = tmp_path / "c.json"
    result = run("stats", "cifar10", "--root", tmp_path, "--download", "-o", out)
    assert result.exit_code == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("prep: error")]
    assert errors == [errors[0]] and f"cannot download cifar10 into {tmp_path}" in errors[0]
    assert "Traceback" not in result.output and not out.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [("stats", "sample", "-q", "--workers", "0"), ("show", "STATS")])
def test_a_full_stdout_is_a_one_line_error(tmp_path, args):
    stats_file = tmp_path / "s.json"
    prep.compute_stats("sample", workers=0).save(stats_file)
    args = [str(stats_file) if a == "STATS" else a for a in args]
    with open("/dev/full", "w") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "prep", *args], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120
        )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "prep: error: cannot write to standard output (No space left on device)"
    )
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


# ------------------------------------------------------------------ sources and their options on the command line


def _stats(path):
    return prep.load_stats(path)


def _same(a, b):
    assert (a.mean, a.std, a.min, a.max, a.count, a.images) == (b.mean, b.std, b.min, b.max, b.count, b.images)


def test_zip_and_tar_shards_on_the_command_line_equal_the_folder(tmp_path):
    folder = make_folder(tmp_path / "data")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    with zipfile.ZipFile(tmp_path / "data.zip", "w") as z:
        for p in files:
            z.write(p, p.relative_to(folder).as_posix())
    shards = []
    for i in range(3):
        shards.append(tmp_path / "shards" / f"train-{i:06d}.tar")
        shards[-1].parent.mkdir(exist_ok=True)
        with tarfile.open(shards[-1], "w") as t:
            for j, p in enumerate(files[i::3]):
                t.add(p, f"{i:02d}{j:04d}{p.suffix.lower()}")
    folder_stats = prep.compute_stats(folder, workers=0)
    assert run("stats", tmp_path / "data.zip", "-o", tmp_path / "z.json", "--workers", 0).exit_code == 0
    _same(_stats(tmp_path / "z.json"), folder_stats)
    listed = run("stats", *shards, "-o", tmp_path / "s.json", "--workers", 0)
    assert listed.exit_code == 0, listed.stderr
    _same(_stats(tmp_path / "s.json"), folder_stats)
    braces = run("stats", str(tmp_path / "shards" / "train-{000000..000002}.tar"), "-q", "--workers", 0)
    assert braces.exit_code == 0 and braces.stdout.strip() == folder_stats.normalize_line()
    directory = run("stats", tmp_path / "shards", "--archives", "-q", "--workers", 0)
    assert directory.exit_code == 0 and directory.stdout.strip() == folder_stats.normalize_line()


def test_npz_key_layout_and_split_all_on_the_command_line(tmp_path):
    rng = np.random.default_rng(3)
    arrays = {f"{s}_images": rng.integers(0, 256, (n, 3, 6, 3), dtype=np.uint8) for s, n in (("train", 5), ("test", 2))}
    np.savez(tmp_path / "med.npz", **arrays)
    ambiguous = run("stats", tmp_path / "med.npz", "--key", "train_images")
    assert ambiguous.exit_code == 2 and "layout" in ambiguous.stderr
    out = tmp_path / "med-{split}.json"
    result = run("stats", tmp_path / "med.npz", "--layout", "NCHW", "--split", "all", "-o", out)
    assert result.exit_code == 0, result.stderr
    for split, images in arrays.items():
        saved = _stats(tmp_path / f"med-{split.removesuffix('_images')}.json")
        pixels = images.transpose(0, 2, 3, 1).reshape(-1, 3).astype(np.float64) / 255
        assert saved.images == len(images)
        np.testing.assert_allclose(saved.mean, pixels.mean(0), rtol=1e-12)
    keyed = run("stats", tmp_path / "med.npz", "--key", "test_images", "--layout", "NCHW", "-q")
    assert keyed.exit_code == 0
    assert keyed.stdout.strip() == _stats(tmp_path / "med-test.json").normalize_line()


def test_per_class_on_the_command_line_and_compare_of_two_classes(tmp_path):
    from helpers import make_class_folder

    make_class_folder(tmp_path / "pets")
    out = tmp_path / "pets.json"
    result = run("stats", tmp_path / "pets", "--per-class", "--workers", 2, "-o", out)
    assert result.exit_code == 0, result.output
    assert "class 'night' is much darker than the rest: mean 0.08 vs 0.51" in result.stdout
    assert json.loads(out.read_text())["classes"] == ["birds", "cats", "dogs", "night", "zebras"]
    assert "class 'night' is much darker" in run("show", out).stdout
    assert run("compare", f"{out}:birds", f"{out}:birds").exit_code == 0
    drift = run("compare", f"{out}:cats", f"{out}:night", "--format", "json")
    assert drift.exit_code == 1 and json.loads(drift.stdout)["b"] == f"{out}:night"
    missing = run("compare", f"{out}:cats", f"{out}:cow")
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert missing.stderr == f"prep: error: {out}: no class 'cow'; the classes are birds, cats, dogs, night, zebras\n"
    assert "FILE:CLASS" in run("compare", "--help").stdout and "--per-class" in run("stats", "--help").stdout


@pytest.mark.parametrize("kind", ["mnist", "npy"])
def test_per_class_of_a_source_without_classes_is_one_line_exit_2_and_writes_nothing(tmp_path, kind):
    if kind == "mnist":
        make_mnist(tmp_path)
        args = ["mnist", "--root", tmp_path]
    else:
        np.save(tmp_path / "x.npy", np.zeros((2, 6, 5, 3), np.uint8))
        args = [tmp_path / "x.npy"]
    out = tmp_path / "out.json"
    result = run("stats", *args, "--per-class", "-o", out, "--checkpoint", tmp_path / "ck.json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and f"a {kind} source has no classes" in lines[0], result.stderr
    assert not out.exists() and not (tmp_path / "ck.json").exists()
