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
from helpers import make_mnist, run
from helpers.formats import split_folder
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
    from prep.engine.checkpoint import Progress, save_checkpoint

    save_checkpoint(str(ck), {}, Progress(prep.ChannelMoments(1)))
    assert _mode(ck) == 0o644
    os.umask(0o027)
    (tmp_path / "t.json").unlink(missing_ok=True)
    assert run("stats", "sample", "-o", tmp_path / "t.json", "-q", "--workers", 0).exit_code == 0
    assert _mode(tmp_path / "t.json") == 0o640


def test_replacing_a_stats_file_keeps_its_mode(tmp_path, umask_022):
    out = tmp_path / "s.json"
    out.write_text('{"schema_version": 1, "old": true}')  # an older, damaged stats file
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


def test_split_selects_the_folder_of_that_split(tmp_path):
    root = split_folder(tmp_path / "data")
    assert prep.compute_stats(root, workers=0).images == 6  # no --split: the whole folder
    test = prep.compute_stats(root, split="test", workers=0)
    assert test.images == 1 and test.source["split"] == "test"
    assert test.mean == prep.compute_stats(root / "test", workers=0).mean
    assert prep.compute_stats(root, split="val", workers=0).images == 2  # val finds valid/
    result = run("stats", root / "train", "--split", "test")
    assert result.exit_code == 2 and "no 'test' split" in result.stderr


def test_split_all_writes_one_file_per_split_folder(tmp_path):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, "--split", "all", "-o", tmp_path / "s-{split}.json", "--workers", 0)
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.glob("s-*.json")) == ["s-test.json", "s-train.json", "s-val.json"]
    for split, images in (("train", 3), ("val", 2), ("test", 1)):
        saved = prep.load_stats(tmp_path / f"s-{split}.json")
        alone = prep.compute_stats(root, split=split, workers=0)
        assert (saved.source["split"], saved.images, saved.mean, saved.std) == (split, images, alone.mean, alone.std)
        assert f"== split {split} ==" in result.stdout
    again = run("stats", root, "--split", "val,test", "-o", tmp_path / "s-{split}.json", "-q", "--workers", 0)
    assert again.exit_code == 0
    assert [line.split(":")[0] for line in again.stdout.splitlines()] == ["val", "test"]


def test_split_list_of_a_named_dataset(tmp_path):
    make_mnist(tmp_path)
    out = tmp_path / "m-{split}.json"
    assert run("stats", "mnist", "--root", tmp_path, "--split", "train,test", "-o", out, "-q").exit_code == 0
    for split in ("train", "test"):
        assert prep.load_stats(tmp_path / f"m-{split}.json").mean == (
            prep.compute_stats("mnist", root=tmp_path, split=split).mean
        )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--split", "train,test", "-o", "one.json"), "several splits need '{split}'"),
        (("--split", "train,test", "--checkpoint", "ck.json"), "several splits need '{split}'"),
        (("--split", "train,,test"), "empty split name"),
        (("--split", "all,test"), "'all' cannot be combined"),
    ],
)
def test_bad_split_lists_are_refused_before_any_work(tmp_path, args, message):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, *[str(tmp_path / a) if a.endswith(".json") else a for a in args])
    assert result.exit_code == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.glob("*.json"))


def test_split_all_needs_splits(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(folder / "a.png")
    result = run("stats", folder, "--split", "all")
    assert result.exit_code == 2 and "--split all: no splits found" in result.stderr
    assert prep.sources.available_splits(folder) == ()
    assert prep.sources.available_splits("mnist") == ("train", "test")


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


def test_cifar_progress_has_a_total_from_the_start_and_ends_exact(tmp_path):
    from helpers import make_cifar10

    make_cifar10(tmp_path)
    seen = []

    class Bar:
        def __init__(self, total, **kwargs):
            self.total, self.n = total, 0
            seen.append(("start", total))

        def update(self, n):
            self.n += n
            seen.append(("update", self.total))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            seen.append(("end", self.total, self.n))

    prep.compute_stats("cifar10", root=tmp_path, progress=Bar)
    assert seen[0][0] == "start" and seen[0][1] is not None and seen[0][1] > 0  # an estimate from file sizes
    assert seen[-1] == ("end", 200, 200)  # refined to the exact count as files are read


def test_a_transform_in_forked_workers_on_large_images_does_not_hang(tmp_path):
    """Forked workers running torch ops after the parent used its OpenMP pool used to deadlock."""
    import subprocess
    import sys

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    proc = subprocess.run(
        [sys.executable, "-m", "prep", "stats", str(tmp_path), "--resize", "256", "--center-crop", "224", "-q"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    inline = prep.compute_stats(
        tmp_path, workers=0, transform=prep.transforms.measurement.measurement_transform(resize=256, center_crop=224)
    )
    assert proc.stdout.strip() == inline.normalize_line()


def test_several_splits_are_all_checked_before_any_file_is_written(tmp_path):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, "--split", "train,bogus", "-o", tmp_path / "x-{split}.json")
    assert result.exit_code == 2 and "no 'bogus' split" in result.stderr
    (root / "test" / "cls" / "0.png").unlink()
    (root / "test" / "cls" / "notes.txt").write_text("not an image")
    empty = run("stats", root, "--split", "all", "-o", tmp_path / "x-{split}.json")
    assert empty.exit_code == 2 and "split test: no image files found" in empty.stderr
    assert not list(tmp_path.glob("x-*.json"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--key", "jpg"), "key (--key) is for WebDataset shards and .npz files"),
        (("--layout", "NHWC"), "layout (--layout) is for NumPy arrays"),
        (("--archives",), "no archives (.zip, .tar"),
        (("--image-key", "img"), "image_key (--image-key) is for datasets of dict items"),
    ],
)
def test_options_for_other_kinds_of_source_are_refused(tmp_path, args, message):
    root = split_folder(tmp_path / "data")
    result = run("stats", root, *args)
    assert result.exit_code == 2 and message in result.stderr


def test_npz_key_and_split_together_are_refused(tmp_path):
    arrays = {f"{s}_images": np.zeros((2, 4, 4), np.uint8) for s in ("train", "val")}
    np.savez(tmp_path / "m.npz", **arrays)
    result = run("stats", tmp_path / "m.npz", "--split", "val", "--key", "train_images")
    assert result.exit_code == 2 and "give key (--key) or split (--split), not both" in result.stderr


def test_integer_arrays_outside_16_bits_are_one_line_errors(tmp_path):
    np.save(tmp_path / "big.npy", np.full((2, 4, 4), 70000, np.int64))
    result = run("stats", tmp_path / "big.npy")
    assert result.exit_code == 2 and "outside 0..65535" in result.stderr and "Traceback" not in result.stderr


def test_a_center_crop_larger_than_the_image_is_refused_not_padded(tmp_path):
    make_mnist(tmp_path)
    result = run("stats", "mnist", "--root", tmp_path, "--center-crop", 40)
    assert result.exit_code == 2 and "smaller than the center crop 40x40" in result.stderr
    assert run("stats", "mnist", "--root", tmp_path, "--resize", 48, "--center-crop", 40, "-q").exit_code == 0


def test_checksum_is_stronger_not_different(tmp_path):
    root = split_folder(tmp_path / "data")
    out = tmp_path / "s.json"
    run("stats", root, "-o", out, "--checksum")
    assert "is up to date" in run("stats", root, "-o", out).stdout  # hashed contents satisfy the default check
    run("stats", root, "-o", out, "--force")
    weaker = run("stats", root, "-o", out, "--checksum")
    assert "written without --checksum" in weaker.stderr
