"""What prep prints and where: -o -, --format json, quiet verdicts, one-line reprs, grey exports."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import prep
from helpers import run


def test_stats_to_standard_output_pipes_into_json_tools(tmp_path):
    cmd = [sys.executable, "-m", "prep", "stats", "sample", "-o", "-", "--workers", "0"]
    produced = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert produced.returncode == 0, produced.stderr
    tool = subprocess.run([sys.executable, "-m", "json.tool"], input=produced.stdout, capture_output=True, text=True)
    assert tool.returncode == 0 and json.loads(tool.stdout)["channels"] == 3
    assert "transforms.Normalize" in produced.stderr  # the summary went to standard error
    assert not (tmp_path / "-").exists()
    saved = tmp_path / "s.json"
    assert run("stats", "sample", "-o", saved, "-q", "--workers", 0).exit_code == 0
    piped = json.loads(produced.stdout)
    written = json.loads(saved.read_text())
    assert {k: v for k, v in piped.items() if k != "created"} == {k: v for k, v in written.items() if k != "created"}


def test_format_json_on_stats_and_show(tmp_path):
    out = tmp_path / "s.json"
    result = run("stats", "sample", "-o", out, "--format", "json", "-q", "--workers", 0)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json.loads(out.read_text())
    shown = run("show", out, "--format", "json")
    assert shown.exit_code == 0 and json.loads(shown.stdout) == prep.load_stats(out).to_dict()
    against = json.loads(run("show", out, "--format", "json", "--against", "imagenet").stdout)
    assert against["against"]["reference"].startswith("imagenet") and "ok" in against["against"]


def test_an_output_that_is_a_pipe_is_refused_before_the_pass(tmp_path):
    cmd = [sys.executable, "-m", "prep", "stats", "sample", "-o", "/dev/stdout", "--workers", "0"]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2 and "not a regular file" in result.stderr and "'-o -'" in result.stderr
    assert "%" not in result.stderr  # refused before the pass: no progress bar


def test_check_quiet_prints_the_verdict_alone(tmp_path):
    out = tmp_path / "s.json"
    assert run("stats", "sample", "-o", out, "-q", "--workers", 0).exit_code == 0
    quiet = run("check", out, "sample", "-q", "--workers", 0)
    assert quiet.exit_code == 0 and quiet.stdout.strip().splitlines() == [quiet.stdout.strip()]
    assert quiet.stdout.startswith("verdict: ok")
    assert len(run("check", out, "sample", "--workers", 0).stdout.splitlines()) > 5


def test_whitening_and_denormalize_print_in_a_few_lines():
    images = [torch.full((1, 2, 3), v, dtype=torch.uint8) for v in (0, 60, 200, 255)]
    with pytest.warns(prep.PrepWarning):
        zca = prep.compute_whitening(images, eps=1e-2)
    assert repr(zca) == "Whitening(ZCA, source='list', mode='L', shape=1x2x3, D=6, images=4, eps=0.01)"
    stats = prep.compute_stats(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
    assert repr(stats.denormalize()) == "Compose(\n    Normalize(mean=[-1.0], std=[2.0], inplace=False)\n)"


def test_grey_exports_name_no_channel_order_and_one_channel_has_no_pca_row(tmp_path):
    grey = prep.compute_stats(torch.from_numpy(np.random.default_rng(2).integers(0, 256, (3, 1, 4, 4), np.uint8)))
    path = tmp_path / "g.json"
    grey.save(path)
    result = run("export", path, "--to", "albumentations")
    assert result.exit_code == 0 and "BGR" not in result.stdout and "channels L" in result.stdout
    colour = tmp_path / "c.json"
    prep.compute_stats("sample", workers=0).save(colour)
    assert "cv2.imread gives BGR" in run("export", colour, "--to", "albumentations").stdout
    assert "pca eigval" not in run("show", path).stdout and "pca eigval" in run("show", colour).stdout
    refused = run("export", path, "--to", "torchvision", "--units", "unit")
    assert refused.exit_code == 2 and "--units is for monai and keras only" in refused.stderr


def test_an_up_to_date_output_is_decided_without_importing_torch(tmp_path):
    out = tmp_path / "s.json"
    assert run("stats", "sample", "-o", out, "-q", "--workers", 0).exit_code == 0
    code = (
        "import sys\n"
        "from prep.cli import main\n"
        f"main(['stats', 'sample', '-o', {str(out)!r}, '--workers', '0'], standalone_mode=False)\n"
        "print('torch imported' if 'torch' in sys.modules else 'torch not imported')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is up to date" in result.stdout and result.stdout.strip().endswith("torch not imported")
    stale = tmp_path / "other.json"
    code = code.replace(str(out), str(stale))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.strip().endswith("torch imported")  # a pass needs it


def test_the_whitening_reducer_knows_the_dimension_limit_without_torch():
    from prep.engine.reducers import MAX_DIM
    from prep.stats import cross_moments

    assert MAX_DIM == cross_moments.MAX_DIM
