"""prep.engine.workers: bad files in a chunk are skipped and listed, or stop the run under
--strict, and fuzzed files never crash a worker; a worker that dies ends the run in one line, the
workers of a parent that is gone exit, and their number is capped."""

import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import prep
from helpers import assert_close, good_images, jpeg_bytes, mutate, pil_pixels, reference_stats, run
from helpers.processes import children, process_state, running_with_workers
from prep.decode.decoders import PILDecoder
from prep.engine.workers import reduce_chunk
from prep.errors import BadImageError
from prep.sources import FileChunk, FolderReader


@pytest.fixture
def dirty_folder(tmp_path):
    folder = tmp_path / "dirty"
    good = good_images(folder)
    (folder / "truncated.jpg").write_bytes(jpeg_bytes()[:300])
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
    with pytest.raises(BadImageError, match=r"empty\.png"):
        prep.compute_stats(folder, strict=True, workers=2)


def test_unreadable_file_is_skipped_with_its_reason(tmp_path, monkeypatch):
    folder = tmp_path / "perm"
    good = good_images(folder, 2)
    locked = folder / "locked.png"
    locked.write_bytes(good[0].read_bytes())
    real_open = FolderReader.open

    def guarded_open(self, name):  # what open() raises for a file without read permission
        if name.endswith("locked.png"):
            raise PermissionError(13, "Permission denied", name)
        return real_open(self, name)

    monkeypatch.setattr(FolderReader, "open", guarded_open)
    with pytest.warns(prep.PrepWarning, match="locked.png"):
        stats = prep.compute_stats(folder, workers=0)
    assert list(stats.skipped) == [{"path": "locked.png", "reason": "cannot read: Permission denied"}]
    assert stats.images == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files without read permission")
def test_unreadable_file_really_chmod_000(tmp_path):
    folder = tmp_path / "perm"
    good_images(folder, 2)
    locked = folder / "locked.png"
    locked.write_bytes((folder / "good0.png").read_bytes())
    locked.chmod(0)
    stats = prep.compute_stats(folder, workers=0)
    assert [s["path"] for s in stats.skipped] == ["locked.png"]


@pytest.mark.parametrize(
    "setup,message",
    [
        (lambda d: None, "no image files found"),
        (lambda d: (d / "a.txt").write_text("x"), "no image files found"),
        (lambda d: (d / "a.png").write_bytes(b"junk"), "no decodable images"),
    ],
)
def test_folders_without_usable_images_exit_2(tmp_path, setup, message):
    folder = tmp_path / "f"
    folder.mkdir()
    setup(folder)
    out = tmp_path / "out.json"
    result = run("stats", folder, "-o", out)
    assert result.exit_code == 2 and message in result.stderr and not out.exists()
    assert "Traceback" not in result.output


# ------------------------------------------------------------------ the worker processes


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


def test_a_killed_worker_ends_the_run_with_an_error_naming_its_files(tmp_path):
    folder = tmp_path / "many"
    good_images(folder, 40)
    script = (
        "import os, signal, prep, prep.decode.decoders as d\n"
        "real = d.PILDecoder.__call__\n"
        "def dying(self, fp, mode):\n"
        "    if fp.name.endswith('good7.png'): os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(self, fp, mode)\n"
        "d.PILDecoder.__call__ = dying\n"
        "from prep.cli import main\n"
        f"main(['stats', {str(folder)!r}, '--workers', '2', '-q', '--decoder', 'pil'])\n"
    )
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert time.monotonic() - start < 60
    assert proc.returncode == 2, proc.stderr
    assert "a decoding worker died" in proc.stderr and "good" in proc.stderr and "Traceback" not in proc.stderr


def test_too_many_workers_are_capped_with_a_warning(tmp_path, good_folder):
    result = run("stats", good_folder, "--workers", 10_000)
    assert result.exit_code == 0 and "workers capped at" in result.stderr


def test_sigterm_of_the_parent_leaves_no_worker_tracebacks(tmp_path):
    proc = running_with_workers(tmp_path)
    workers = children(proc.pid)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, -signal.SIGTERM) and "Traceback" not in err
    deadline = time.monotonic() + 10
    while any(os.path.exists(f"/proc/{pid}") for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)  # orphaned workers notice the parent is gone and exit
    assert not [pid for pid in workers if os.path.exists(f"/proc/{pid}") and process_state(pid) != "Z"]


# ------------------------------------------------------------------ fuzzing
_VALID_PNG = io.BytesIO()
Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(_VALID_PNG, "PNG")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            mutate,
            st.sampled_from([_VALID_PNG.getvalue(), jpeg_bytes()]),
            st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
            st.one_of(st.none(), st.integers(0, 2000)),
        ),
    ),
    st.sampled_from(["x.png", "x.jpg", "x.bmp", "x.tiff", "x.webp"]),
)
def test_fuzzed_image_files_are_decoded_or_skipped_never_crash(tmp_path_factory, data, name):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / name).write_bytes(data)
    result = reduce_chunk(FileChunk(FolderReader(str(folder)), (name,)), "RGB", PILDecoder())
    assert (result.state.images, len(result.skipped)) in ((1, 0), (0, 1))
    if result.skipped:
        assert result.skipped[0][1].startswith(("cannot decode", "cannot read"))
        with pytest.raises(BadImageError, match=name):
            prep.compute_stats(folder, workers=0, strict=True)
