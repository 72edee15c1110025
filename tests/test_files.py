"""prep.files: what -o, --checkpoint and prep show are given is never damaged and never hangs:
outputs written atomically with the mode the umask allows, symlinks updated in place, special files
refused before any work, reads bounded."""

from __future__ import annotations

import os
import stat
import threading

import pytest

import prep
from helpers import run


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
    from prep.engine import loop

    monkeypatch.setattr(loop, "_run_tasks", lambda *a: calls.append(a))
    result = run("stats", good_folder, "-o", tmp_path / "missing" / "out.json", "--checkpoint", ck)
    assert result.exit_code == 2 and "directory" in result.stderr and "does not exist" in result.stderr
    assert calls == []  # refused before any image was read


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
