"""What -o, --checkpoint and prep show are given is never damaged, never hangs, and never loses a finished pass."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import torch

import prep
from helpers import good_images, run
from helpers.processes import children, process_state, running_with_workers
from prep.errors import StatsFileError


def test_a_symlinked_output_updates_its_target_and_keeps_the_link(tmp_path, good_folder):
    target = tmp_path / "real.json"
    target.write_text('{"schema_version": 1, "old": true}')  # an older, damaged stats file
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert run("stats", good_folder, "-o", link, "-q", "--workers", 0).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert prep.load_stats(target).images == 4
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
@pytest.mark.parametrize("option", ["-o", "--checkpoint"])
def test_an_output_that_is_not_a_regular_file_is_refused_before_any_work(tmp_path, good_folder, kind, option):
    path = tmp_path / "thing"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = "/dev/null"
    args = ["stats", good_folder, option, path, "--workers", 0] + (
        ["-o", tmp_path / "o.json"] if option != "-o" else []
    )
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert "is not a regular file; refusing to replace it" in result.stderr
    assert os.path.exists(path) and not os.path.isfile(path) and not (tmp_path / "o.json").exists()


def test_an_unwritable_output_fails_before_the_pass_and_keeps_the_checkpoint(tmp_path, good_folder, monkeypatch):
    ck = tmp_path / "ck.json"
    calls = []
    import prep.engine.measure as compute

    monkeypatch.setattr(compute, "_run_tasks", lambda *a: calls.append(a))
    result = run("stats", good_folder, "-o", tmp_path / "missing" / "out.json", "--checkpoint", ck)
    assert result.exit_code == 2 and "directory" in result.stderr and "does not exist" in result.stderr
    assert calls == []  # refused before any image was read


def test_the_checkpoint_is_removed_only_after_the_output_is_written(tmp_path, good_folder, monkeypatch):
    ck, out = tmp_path / "ck.json", tmp_path / "out.json"

    def failing_save(self, path):
        raise prep.PrepError(f"{path}: cannot write stats file (disk full)")

    monkeypatch.setattr(prep.Stats, "save", failing_save)
    result = run("stats", good_folder, "-o", out, "--checkpoint", ck, "--checkpoint-every", 1, "--workers", 0)
    assert result.exit_code == 2 and "disk full" in result.stderr
    assert json.loads(ck.read_text())["position"] == 4  # the finished pass can be resumed, not redone


def test_the_same_path_for_checkpoint_and_output_is_refused(tmp_path, good_folder):
    result = run("stats", good_folder, "-o", tmp_path / "x.json", "--checkpoint", tmp_path / "x.json")
    assert result.exit_code == 2 and "must be different files" in result.stderr


def test_show_refuses_devices_fifos_and_huge_files_without_blocking(tmp_path, monkeypatch):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    results = {}
    worker = threading.Thread(target=lambda: results.update(fifo=run("show", fifo)), daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "prep show blocked on a FIFO"
    assert results["fifo"].exit_code == 2 and "not a regular file" in results["fifo"].stderr
    assert "not a regular file" in run("show", "/dev/zero").stderr
    import prep.files

    monkeypatch.setattr(prep.files, "MAX_READ_BYTES", 10)
    big = tmp_path / "big.json"
    big.write_text("{" + " " * 100 + "}")
    result = run("show", big)
    assert result.exit_code == 2 and "larger than" in result.stderr


def test_strict_fails_on_a_reused_file_that_lists_undecodable_images(tmp_path, good_folder):
    (good_folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "out.json"
    assert run("stats", good_folder, "-o", out, "--workers", 0).exit_code == 0
    again = run("stats", good_folder, "-o", out, "--strict", "--workers", 0)
    assert again.exit_code == 1 and f"{good_folder}/broken.jpg: cannot decode" in again.stderr


@pytest.mark.parametrize("position", [0, True, 99, -1, "3"])
def test_an_edited_checkpoint_position_is_refused(tmp_path, good_folder, position, monkeypatch):
    import prep.engine.measure as compute

    monkeypatch.setattr(compute, "FOLDER_CHUNK", 1)
    ck = tmp_path / "ck.json"

    class Stop(Exception):
        pass

    real = compute.reduce_chunk
    calls = {"n": 0}

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:
            raise Stop
        return real(*args)

    monkeypatch.setattr(compute, "reduce_chunk", flaky)
    with pytest.raises(Stop):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, checkpoint_every=1)
    monkeypatch.setattr(compute, "reduce_chunk", real)
    data = json.loads(ck.read_text())
    assert data["position"] == 2 and data["state"]["images"] == 2
    data["position"] = position
    ck.write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match="checkpoint field 'position'"):
        prep.compute_stats(good_folder, workers=0, checkpoint=ck, resume=True)


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


@pytest.mark.parametrize("dtype", [torch.int16, torch.int32, torch.int64, torch.uint16])
def test_integer_tensors_are_measured_and_transformed_by_one_rule(dtype):
    values = torch.from_numpy(np.random.default_rng(2).integers(0, 30000, (2, 1, 6, 5))).to(dtype)
    stats = prep.compute_stats(list(values))
    assert stats.pixel_max == 65535
    out = torch.stack([stats.normalize()(v) for v in values]).double()
    assert abs(out.mean().item()) < 1e-5 and abs(out.std(correction=0).item() - 1) < 1e-5
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        stats.normalize()(torch.full((1, 2, 2), -5, dtype=torch.int32))
    with pytest.raises(prep.SourceError, match=r"list: cannot read pixels of dtype torch\.bool"):
        prep.compute_stats([torch.ones(1, 2, 2, dtype=torch.bool)])


def test_ctrl_c_never_leaves_a_traceback_when_workers_are_signalled(tmp_path):
    proc = running_with_workers(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130) and "Traceback" not in err


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


def test_an_existing_output_that_is_not_a_stats_file_is_never_replaced(tmp_path, good_folder):
    image = good_folder / os.listdir(good_folder)[0]
    before = image.read_bytes()
    result = run("stats", good_folder, "-o", image, "--workers", 0)
    assert result.exit_code == 2 and "exists and is not a prep stats file" in result.stderr
    assert image.read_bytes() == before


@pytest.mark.parametrize("clash", ["out", "checkpoint"])
def test_the_per_image_report_cannot_share_a_path_with_another_output(tmp_path, good_folder, clash):
    out, ck = tmp_path / "s.json", tmp_path / "ck.json"
    report = out if clash == "out" else ck
    result = run("stats", good_folder, "-o", out, "--checkpoint", ck, "--per-image", report, "--workers", 0)
    assert result.exit_code == 2 and "must be different files" in result.stderr
    assert not out.exists()


def test_a_per_image_report_is_written_even_when_out_is_up_to_date(tmp_path, good_folder):
    out = tmp_path / "s.json"
    run("stats", good_folder, "-o", out, "--workers", 0)
    result = run("stats", good_folder, "-o", out, "--per-image", tmp_path / "r.csv", "--workers", 0)
    assert result.exit_code == 0 and (tmp_path / "r.csv").exists()
