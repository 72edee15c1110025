"""Dirty data, interruptions and damaged files: nothing is lost and nothing lies."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import prep
from conftest import assert_close, make_mnist, pil_pixels, reference_stats
from prep.cli import main
from prep.errors import BadImageError, SourceError, StatsFileError
from prep.sources.folder import reduce_files


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _good_images(folder: Path, n: int = 4) -> list[Path]:
    rng = np.random.default_rng(11)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"good{i}.png"
        Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.fixture
def dirty_folder(tmp_path):
    folder = tmp_path / "dirty"
    good = _good_images(folder)
    (folder / "truncated.jpg").write_bytes(_jpeg_bytes()[:300])
    (folder / "empty.png").write_bytes(b"")
    (folder / "fake.jpg").write_text("this is not a jpeg")
    (folder / "README.txt").write_text("notes")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "loop").symlink_to(folder, target_is_directory=True)
    return folder, good


def test_bad_files_are_skipped_listed_and_left_out(dirty_folder):
    folder, good = dirty_folder
    with pytest.warns(prep.PrepWarning, match="skipped 6 file"):
        stats = prep.compute_stats(folder, workers=2)
    reasons = {s["path"]: s["reason"] for s in stats.skipped}
    assert set(reasons) == {"truncated.jpg", "empty.png", "fake.jpg", "README.txt", ".DS_Store", "loop"}
    assert reasons["README.txt"] == "not an image file extension"
    assert reasons["loop"].startswith("symlink loop")
    assert reasons["truncated.jpg"].startswith("cannot decode")
    assert reasons["empty.png"].startswith("cannot decode: UnidentifiedImageError")
    ref = reference_stats(np.concatenate([pil_pixels(p) for p in good]))
    assert_close(stats.mean, ref["mean"])
    assert_close(stats.std, ref["std"])
    assert stats.images == len(good)
    assert stats.to_dict()["skipped"]["count"] == 6


def test_strict_stops_at_the_first_bad_file_exit_1_no_output(dirty_folder, tmp_path):
    folder, _ = dirty_folder
    out = tmp_path / "out.json"
    result = run("stats", folder, "--strict", "-o", out)
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("prep: error")]
    assert len(errors) == 1 and errors[0].startswith(f"prep: error: {folder}/empty.png: cannot decode")
    assert result.stderr.rstrip().endswith(errors[0]) and "Traceback" not in result.stderr
    assert not out.exists()
    with pytest.raises(BadImageError, match="empty.png"):
        prep.compute_stats(folder, strict=True, workers=2)


def test_unreadable_file_is_skipped_with_its_reason(tmp_path, monkeypatch):
    folder = tmp_path / "perm"
    good = _good_images(folder, 2)
    locked = folder / "locked.png"
    locked.write_bytes(good[0].read_bytes())
    real_open = Image.open

    def guarded_open(path, *args, **kwargs):
        if str(path).endswith("locked.png"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", guarded_open)
    with pytest.warns(prep.PrepWarning, match="locked.png"):
        stats = prep.compute_stats(folder, workers=0)
    assert list(stats.skipped) == [{"path": "locked.png", "reason": "cannot read: Permission denied"}]
    assert stats.images == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_file_really_chmod_000(tmp_path):
    folder = tmp_path / "perm"
    _good_images(folder, 2)
    locked = folder / "locked.png"
    locked.write_bytes((folder / "good0.png").read_bytes())
    locked.chmod(0)
    stats = prep.compute_stats(folder, workers=0)
    assert [s["path"] for s in stats.skipped] == ["locked.png"]


@pytest.mark.parametrize("setup,message", [
    (lambda d: None, "no image files found"),
    (lambda d: (d / "a.txt").write_text("x"), "no image files found"),
    (lambda d: (d / "a.png").write_bytes(b"junk"), "no decodable images"),
])
def test_folders_without_usable_images_exit_2(tmp_path, setup, message):
    folder = tmp_path / "f"
    folder.mkdir()
    setup(folder)
    out = tmp_path / "out.json"
    result = run("stats", folder, "-o", out)
    assert result.exit_code == 2 and message in result.stderr and not out.exists()
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ PIL modes
def _mode_images() -> dict[str, Image.Image]:
    rng = np.random.default_rng(5)
    rgb = Image.fromarray(rng.integers(0, 256, (6, 5, 3), dtype=np.uint8))
    images = {m: rgb.convert(m) for m in ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr")}
    images["I;16"] = Image.fromarray(rng.integers(0, 65536, (6, 5), dtype=np.uint16))
    images["I"] = Image.fromarray(rng.integers(0, 65536, (6, 5)).astype(np.int32))
    images["F"] = Image.fromarray(rng.random((6, 5)).astype(np.float32))
    return images


def _rule(img: Image.Image, mode: str) -> np.ndarray:
    """The documented pixel rule, written independently: unit-scale (P, C) float64."""
    channels = 3 if mode == "RGB" else 1
    if img.mode in ("I;16", "I"):
        grey = np.asarray(img, dtype=np.float64) / 65535
    elif img.mode == "F":
        grey = np.asarray(img, dtype=np.float64)
    else:
        return np.asarray(img.convert(mode), dtype=np.float64).reshape(-1, channels) / 255
    return np.repeat(grey.reshape(-1, 1), channels, axis=1)


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("pil_mode", ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "CMYK", "YCbCr", "I;16", "I", "F"])
def test_every_pil_mode_follows_the_documented_rule(pil_mode, mode):
    img = _mode_images()[pil_mode]
    stats = prep.compute_stats([img], mode=mode)
    x = _rule(img, mode)
    assert_close(stats.mean, x.mean(0), rel=1e-12, abs_=1e-15)
    assert_close(stats.std, x.std(0), rel=1e-9, abs_=1e-15)
    assert_close(stats.max, x.max(0), rel=0)
    out = stats.normalize(eps=1e-6)(img)  # the transform applies the same rule
    assert out.shape == (3 if mode == "RGB" else 1, 6, 5)


@pytest.mark.parametrize("pil_mode,ext", [("1", "png"), ("LA", "png"), ("P", "png"), ("RGBA", "png"),
                                          ("CMYK", "jpg"), ("CMYK", "tiff"), ("I;16", "png"), ("I;16", "tiff"),
                                          ("F", "tiff"), ("L", "pgm"), ("RGB", "ppm"), ("RGB", "webp")])
def test_modes_from_real_files(tmp_path, pil_mode, ext):
    img = _mode_images()[pil_mode]
    path = tmp_path / f"img.{ext}"
    img.save(path, **({"lossless": True} if ext == "webp" else {}))
    with Image.open(path) as reread:
        x = _rule(reread, "RGB")
    stats = prep.compute_stats(tmp_path, workers=0)
    assert not stats.skipped
    assert_close(stats.mean, x.mean(0), rel=1e-12, abs_=1e-15)


def test_exif_orientation_does_not_change_statistics(tmp_path):
    rgb = _mode_images()["RGB"]
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    rgb.save(tmp_path / "plain.png")
    rotated = tmp_path / "rotated"
    rotated.mkdir()
    rgb.save(rotated / "exif.jpg", exif=exif, quality=100)
    (tmp_path / "plainjpg").mkdir()
    rgb.save(tmp_path / "plainjpg" / "x.jpg", quality=100)
    a = prep.compute_stats(rotated, workers=0)
    b = prep.compute_stats(tmp_path / "plainjpg", workers=0)
    assert (a.mean, a.std) == (b.mean, b.std)
    from PIL import ImageOps

    with Image.open(rotated / "exif.jpg") as img:
        upright = ImageOps.exif_transpose(img)  # what a viewer shows: rotated pixels
    assert upright.size == img.size[::-1]
    c = prep.compute_stats([upright])
    assert (c.mean, c.std, c.min, c.max) == (a.mean, a.std, a.min, a.max)


def test_nan_and_inf_in_float_images_are_counted_not_averaged(tmp_path):
    arr = np.array([[0.2, np.nan], [0.6, np.inf]], dtype=np.float32)
    Image.fromarray(arr).save(tmp_path / "f.tiff")
    with pytest.warns(prep.PrepWarning, match="2 NaN/inf value"):
        stats = prep.compute_stats(tmp_path, mode="L", workers=0)
    assert stats.summary.nonfinite == (2,)
    assert_close(stats.mean, [0.4], rel=1e-7)
    assert stats.to_dict()["nonfinite"] == [2]
    out = tmp_path / "s.json"
    stats.save(out)  # valid JSON: no NaN written
    assert json.loads(out.read_text())["mean"] == list(stats.mean)


def test_zero_variance_is_written_with_std_0_and_a_warning(tmp_path):
    folder = tmp_path / "flat"
    folder.mkdir()
    Image.new("L", (4, 4), 77).save(folder / "a.png")
    out = tmp_path / "flat.json"
    result = run("stats", folder, "--mode", "L", "-o", out)
    assert result.exit_code == 0
    assert "zero variance" in result.stderr
    assert prep.load_stats(out).std == (0.0,)


# ------------------------------------------------------------------ interruptions
def _prep(*args, **kwargs):
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    return subprocess.Popen([sys.executable, "-m", "prep", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def _wait_for(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.fixture
def slow_mnist(tmp_path):
    """A run that lasts long enough to interrupt: 60,000 images in batches of 5."""
    make_mnist(tmp_path, n_train=60_000, n_test=10)
    return tmp_path


def test_ctrl_c_exits_130_and_keeps_the_previous_output(slow_mnist, tmp_path):
    out = tmp_path / "out.json"
    out.write_text("previous contents")
    ck = tmp_path / "ck.json"
    proc = _prep("stats", "mnist", "--root", slow_mnist, "-o", out, "--batch-size", 5, "--checkpoint", ck,
                 "--checkpoint-every", 1000)
    _wait_for(ck.exists)  # mid-run
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert out.read_text() == "previous contents"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.json")] == []


def test_sigkill_then_resume_gives_the_uninterrupted_result(slow_mnist, tmp_path):
    out, ck = tmp_path / "out.json", tmp_path / "ck.json"
    reference = prep.compute_stats("mnist", root=slow_mnist)
    previous = prep.compute_stats("mnist", root=slow_mnist, split="test")
    previous.save(out)
    before = out.read_bytes()
    args = ["stats", "mnist", "--root", slow_mnist, "-o", out, "--force", "--batch-size", 5,
            "--checkpoint", ck, "--checkpoint-every", 2000]
    proc = _prep(*args)
    _wait_for(lambda: ck.exists() and json.loads(ck.read_text())["position"] >= 4000)
    proc.kill()
    proc.wait(timeout=30)
    assert out.read_bytes() == before  # the previous JSON survived the kill
    position = json.loads(ck.read_text())["position"]
    assert 0 < position < 60_000

    done = subprocess.run([sys.executable, "-m", "prep", *map(str, args), "--resume", "--batch-size", "5000"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"resuming from {ck} at image {position}" in done.stderr
    resumed = prep.load_stats(out)
    assert (resumed.mean, resumed.std, resumed.min, resumed.max, resumed.count) == (
        reference.mean, reference.std, reference.min, reference.max, reference.count)
    assert resumed.images == 60_000
    assert not ck.exists()  # a completed run removes its checkpoint


def test_resume_from_a_checkpoint_of_other_data_is_refused(tmp_path):
    make_mnist(tmp_path)
    ck = tmp_path / "ck.json"
    ck.write_text(json.dumps({"kind": "prep.checkpoint", "source": {"kind": "cifar10"}}))
    with pytest.raises(StatsFileError, match="checkpoint field 'source' does not match"):
        prep.compute_stats("mnist", root=tmp_path, checkpoint=ck, resume=True)


def test_resume_continues_a_folder_run_in_process(tmp_path, image_folder, monkeypatch):
    import prep.compute as compute

    monkeypatch.setattr(compute, "FOLDER_CHUNK", 2)
    ck = tmp_path / "ck.json"
    whole = prep.compute_stats(image_folder, workers=0)

    class Stop(Exception):
        pass

    calls = {"n": 0}
    real = compute._reduce_chunk

    def flaky(task):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return real(task)

    monkeypatch.setattr(compute, "_reduce_chunk", flaky)
    with pytest.raises(Stop):
        prep.compute_stats(image_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(compute, "_reduce_chunk", real)
    assert json.loads(ck.read_text())["position"] == 4  # two chunks of two done before the failure
    resumed = prep.compute_stats(image_folder, workers=0, checkpoint=ck, resume=True)
    assert (resumed.mean, resumed.std, resumed.count, resumed.images) == (
        whole.mean, whole.std, whole.count, whole.images)


# ------------------------------------------------------------------ fuzzing
_VALID_PNG = io.BytesIO()
Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(_VALID_PNG, "PNG")


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, val in flips:
        if buf:
            buf[pos % len(buf)] = val
    return bytes(buf[:cut] if cut is not None else buf)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=300),
    st.builds(_mutate, st.sampled_from([_VALID_PNG.getvalue(), _jpeg_bytes()]),
              st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
              st.one_of(st.none(), st.integers(0, 2000))),
), st.sampled_from(["x.png", "x.jpg", "x.bmp", "x.tiff", "x.webp"]))
def test_fuzzed_image_files_are_decoded_or_skipped_never_crash(tmp_path_factory, data, name):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / name).write_bytes(data)
    state, skipped = reduce_files(str(folder), [name], "RGB", strict=False)
    assert (state.images, len(skipped)) in ((1, 0), (0, 1))
    if skipped:
        assert skipped[0][1].startswith(("cannot decode", "cannot read"))
        with pytest.raises(BadImageError, match=name):
            reduce_files(str(folder), [name], "RGB", strict=True)


_VALID_STATS: dict = {}


def _valid_stats_text() -> str:
    if not _VALID_STATS:
        stats = prep.compute_stats([torch.arange(12, dtype=torch.uint8).view(3, 2, 2)])
        _VALID_STATS["text"] = json.dumps(stats.to_dict())
    return _VALID_STATS["text"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(
    st.binary(max_size=200),
    st.builds(lambda flips, cut: _mutate(_valid_stats_text().encode(), flips, cut),
              st.lists(st.tuples(st.integers(0, 10**5), st.sampled_from(b'{}[]",:0123456789.-eE nul')),
                       min_size=1, max_size=4),
              st.one_of(st.none(), st.integers(0, 3000))),
))
def test_fuzzed_stats_files_raise_stats_file_error_only(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "s.json"
    path.write_bytes(data)
    try:
        prep.load_stats(path)
    except StatsFileError:
        pass  # the one error class; anything else propagates and fails the test


def test_a_cli_run_on_a_damaged_stats_file_recomputes(tmp_path):
    make_mnist(tmp_path)
    out = tmp_path / "s.json"
    out.write_text('{"schema_version": 1, "mean": [')
    result = run("stats", "mnist", "--root", tmp_path, "-o", out)
    assert result.exit_code == 0 and "not valid JSON" in result.stderr and "recomputing" in result.stderr
    assert prep.load_stats(out).images == 300
    bad_show = run("show", tmp_path / "nope.json")
    assert bad_show.exit_code == 2 and bad_show.stderr.count("\n") == 1


def test_source_errors_are_prep_errors():
    assert issubclass(SourceError, prep.PrepError) and issubclass(StatsFileError, prep.PrepError)
