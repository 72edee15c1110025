"""A per-image report that cannot be written (a full disk) is one line and exit 2, as -o and
--checkpoint are; the partial report is removed and an older one at the path is kept."""

from __future__ import annotations

import csv
import errno
import os
import shutil
import subprocess
import sys

import pytest

from helpers import good_images, make_mnist, run
from prep.insight import per_image_report
from prep.insight.per_image_report import PerImageReport

OLD = "index,name\n0,an older report\n"


class FullDisk:
    """A text file that takes ``room`` characters, then fails as a full disk does (also when closed)."""

    def __init__(self, file, room: int, fail_close: bool = False) -> None:
        self.file, self.room, self.fail_close = file, room, fail_close

    def write(self, text: str) -> int:
        if len(text) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(text)
        return self.file.write(text)

    def close(self) -> None:
        self.file.close()
        if self.fail_close:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def fill_disk_after(monkeypatch, room: int, fail_close: bool = False) -> None:
    opened = PerImageReport.__init__

    def init(self, *args, **kwargs):
        opened(self, *args, **kwargs)
        self._file = FullDisk(self._file, room, fail_close)
        self._csv = csv.writer(self._file)

    monkeypatch.setattr(PerImageReport, "__init__", init)


@pytest.fixture
def folder(tmp_path):
    good_images(tmp_path / "imgs", 6)
    return tmp_path / "imgs"


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".prep-"))


def assert_one_line_and_old_report_kept(result, report) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"prep: error: {report}: cannot write the per-image report (No space left on device)"
    assert "Traceback" not in result.output
    assert report.read_text() == OLD
    assert leftovers(report.parent) == []


@pytest.mark.parametrize("room", [0, 300])
def test_a_full_disk_while_rows_are_written(tmp_path, folder, monkeypatch, room):
    report = tmp_path / "report.csv"
    report.write_text(OLD)
    fill_disk_after(monkeypatch, room)
    result = run("stats", folder, "--per-image", report, "--workers", 0)
    assert_one_line_and_old_report_kept(result, report)


def test_a_full_disk_when_the_last_rows_are_flushed(tmp_path, folder, monkeypatch):
    report = tmp_path / "report.csv"
    report.write_text(OLD)
    fill_disk_after(monkeypatch, 1 << 20, fail_close=True)
    out = tmp_path / "s.json"
    result = run("stats", folder, "--per-image", report, "-o", out, "--workers", 2)
    assert_one_line_and_old_report_kept(result, report)
    assert not out.exists()


def test_a_full_disk_when_the_report_is_created(tmp_path, folder, monkeypatch):
    report = tmp_path / "report.csv"
    report.write_text(OLD)

    def no_room(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(per_image_report.tempfile, "mkstemp", no_room)
    result = run("stats", folder, "--per-image", report, "--workers", 0)
    assert_one_line_and_old_report_kept(result, report)


def _tmpfs(path, size: str) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    return done.returncode == 0


def test_a_real_full_tmpfs(tmp_path):
    """A 64 KiB tmpfs and 3,000 rows of about 90 bytes: the disk fills during the pass."""
    disk = tmp_path / "disk"
    if not _tmpfs(disk, "64k"):
        pytest.skip("needs root and mount -t tmpfs")
    try:
        make_mnist(tmp_path, n_train=3000, n_test=10)
        report = disk / "report.csv"
        report.write_text(OLD)
        done = subprocess.run(
            [sys.executable, "-m", "prep", "stats", "mnist", "--root", tmp_path, "--per-image", report, "-q"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip().splitlines() == [
            f"prep: error: {report}: cannot write the per-image report (No space left on device)"
        ]
        assert report.read_text() == OLD
        assert leftovers(disk) == []
    finally:
        subprocess.run(["umount", str(disk)], check=False)
