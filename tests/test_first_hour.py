"""What a new user hits in the first hour: file modes, exact min-max, NumPy input, presets and
splits, download errors, resume messages, show and repr."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from common import make_mnist, run
from prep.errors import ChannelMismatchError


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_stats_files_and_checkpoints_get_the_umask_mode(tmp_path, umask_022):
    out, ck = tmp_path / "s.json", tmp_path / "ck.json"
    assert run("stats", "sample", "-o", out, "-q", "--workers", 0).exit_code == 0
    assert _mode(out) == 0o644
    from prep.checkpoint import Progress, save_checkpoint

    save_checkpoint(str(ck), {}, Progress(prep.ChannelMoments(1)))
    assert _mode(ck) == 0o644
    os.umask(0o027)
    (tmp_path / "t.json").unlink(missing_ok=True)
    assert run("stats", "sample", "-o", tmp_path / "t.json", "-q", "--workers", 0).exit_code == 0
    assert _mode(tmp_path / "t.json") == 0o640


def test_replacing_a_stats_file_keeps_its_mode(tmp_path, umask_022):
    out = tmp_path / "s.json"
    out.write_text("old")
    out.chmod(0o664)
    assert run("stats", "sample", "-o", out, "-q", "--workers", 0).exit_code == 0
    assert _mode(out) == 0o664 and prep.load_stats(out).images == 24


def _grey_stats(values: np.ndarray):
    return prep.compute_stats([Image.fromarray(values)])


@pytest.mark.parametrize("feature_range", [(0.0, 1.0), (-1.0, 1.0), (0.0, 255.0), (-2.0, 3.0)])
def test_minmax_maps_the_measured_extremes_exactly(feature_range):
    values = np.array([[100, 180], [248, 101]], np.uint8)  # extremes other than 0 and 255
    stats = _grey_stats(values)
    out = stats.minmax(feature_range)(Image.fromarray(values)).as_subclass(torch.Tensor)
    assert out.min().item() == feature_range[0] and out.max().item() == feature_range[1]
    assert out[0, 1, 0].item() == feature_range[1] and out[0, 0, 0].item() == feature_range[0]


def test_minmax_is_exact_per_channel_for_rgb_and_16_bit_data():
    rgb = np.random.default_rng(3).integers(13, 241, (6, 7, 3), dtype=np.uint8)
    stats = prep.compute_stats([Image.fromarray(rgb)])
    out = stats.minmax()(Image.fromarray(rgb)).as_subclass(torch.Tensor)
    assert out.amin((1, 2)).tolist() == [0.0] * 3 and out.amax((1, 2)).tolist() == [1.0] * 3
    sixteen = Image.fromarray(np.array([[1799, 40000], [1800, 2]], np.uint16))
    stats16 = prep.compute_stats([sixteen])
    out16 = stats16.minmax()(sixteen).as_subclass(torch.Tensor)
    assert out16.min().item() == 0.0 and out16.max().item() == 1.0


def test_numpy_images_are_converted_like_pil_images(tmp_path):
    rgb = np.random.default_rng(5).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    stats = prep.compute_stats([Image.fromarray(rgb)])
    t = stats.normalize()
    from_pil = t(Image.fromarray(rgb)).as_subclass(torch.Tensor)
    torch.testing.assert_close(t(rgb).as_subclass(torch.Tensor), from_pil, rtol=0, atol=0)
    rgba = np.concatenate([rgb, np.full((5, 6, 1), 9, np.uint8)], axis=-1)  # alpha dropped, as PIL's convert
    torch.testing.assert_close(t(rgba).as_subclass(torch.Tensor), from_pil, rtol=0, atol=0)
    unit = rgb.astype(np.float32) / 255  # float arrays are unit scale already
    torch.testing.assert_close(t(unit).as_subclass(torch.Tensor), from_pil, rtol=1e-6, atol=1e-6)
    make_mnist(tmp_path)
    grey_stats = prep.compute_stats("mnist", root=tmp_path)
    luma = np.asarray(Image.fromarray(rgb).convert("L"))
    torch.testing.assert_close(
        grey_stats.normalize()(rgb).as_subclass(torch.Tensor),
        grey_stats.normalize()(Image.fromarray(luma)).as_subclass(torch.Tensor),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ChannelMismatchError, match=r"shape \(5, 6, 2\)"):
        t(np.zeros((5, 6, 2), np.uint8))
    with pytest.raises(TypeError, match="dtype complex64"):
        t(np.zeros((5, 6, 3), np.complex64))


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


def _split_folder(root):
    rng = np.random.default_rng(9)
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        (root / split / "cls").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(root / split / "cls" / f"{i}.png")
    return root


def test_split_selects_the_folder_of_that_split(tmp_path):
    root = _split_folder(tmp_path / "data")
    assert prep.compute_stats(root, workers=0).images == 6  # no --split: the whole folder
    test = prep.compute_stats(root, split="test", workers=0)
    assert test.images == 1 and test.source["split"] == "test"
    assert test.mean == prep.compute_stats(root / "test", workers=0).mean
    assert prep.compute_stats(root, split="val", workers=0).images == 2  # val finds valid/
    result = run("stats", root / "train", "--split", "test")
    assert result.exit_code == 2 and "no 'test' split" in result.stderr


def test_resume_without_a_checkpoint_says_it_starts_from_the_beginning(tmp_path):
    result = run("stats", "sample", "--checkpoint", tmp_path / "ck.json", "--resume", "--workers", 0)
    assert result.exit_code == 0
    assert f"no checkpoint at {tmp_path / 'ck.json'}; starting from the beginning" in result.stderr


def test_a_misspelled_name_gets_a_suggestion():
    result = run("stats", "minst")
    assert result.exit_code == 2 and "did you mean 'mnist'?" in result.stderr


def test_show_prints_provenance_and_skipped_files_and_repr_names_the_numbers(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((3, 3, 3), 50, np.uint8)).save(folder / "a.png")
    for i in range(12):
        (folder / f"bad{i:02d}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "s.json"
    with pytest.warns(prep.PrepWarning):
        stats = prep.compute_stats(folder, workers=0)
    stats.save(out)
    shown = run("show", out).stdout
    assert f"by prep {prep.__version__}" in shown and stats.created in shown
    assert "bad00.jpg: cannot decode" in shown and "bad09.jpg" in shown and "bad10.jpg" not in shown
    assert "... and 2 more" in shown
    assert repr(stats) == (
        f"Stats(source={str(folder)!r}, mode='RGB', images=1, mean=(0.1961, 0.1961, 0.1961), "
        "std=(0.0000, 0.0000, 0.0000))"
    )
