"""prep.sources.base: files are read only when they are regular files, never waiting on a FIFO."""

from __future__ import annotations

import os

import pytest

from helpers import good_images
from prep.decode.decoders import PILDecoder
from prep.engine.workers import reduce_chunk
from prep.sources import FileChunk, FolderReader
from prep.sources.base import open_regular


def test_open_regular_reads_a_regular_file_blocking_and_closes_on_refusal(tmp_path):
    (path,) = good_images(tmp_path, 1)
    with open_regular(str(path)) as f:
        assert os.get_blocking(f.fileno()) and f.read() == path.read_bytes()
        assert f.name == str(path)  # as open() names it: decoders and messages use it
    os.mkfifo(tmp_path / "fifo")
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    for _ in range(3):
        with pytest.raises(OSError) as info:
            open_regular(str(tmp_path / "fifo"))
        assert info.value.strerror == "not a regular file" and info.value.filename == str(tmp_path / "fifo")
    after = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    assert after <= before  # no descriptor left open


@pytest.mark.parametrize("special", ["/dev/null", "directory"])
def test_other_special_files_are_not_regular_files(tmp_path, special):
    if special == "directory":
        (tmp_path / "x.png").mkdir()
    else:
        (tmp_path / "x.png").symlink_to(special)
    result = reduce_chunk(FileChunk(FolderReader(str(tmp_path)), ("x.png",)), "RGB", PILDecoder())
    assert result.skipped == [("x.png", "cannot read: not a regular file")]


def test_a_source_without_its_way_of_reading_cannot_be_instantiated():
    from abc import ABC

    from prep.sources.base import BatchSource, TaskSource

    class NoBatches(BatchSource):
        kind = "incomplete"

    class NoTasks(TaskSource):
        kind = "incomplete"

    for incomplete in (NoBatches, NoTasks):
        with pytest.raises(TypeError, match="abstract"):
            incomplete("somewhere")
    assert issubclass(BatchSource, ABC) and BatchSource.__abstractmethods__ == {"iter_batches"}
    assert issubclass(TaskSource, ABC) and TaskSource.__abstractmethods__ == {"iter_tasks"}

    class Complete(BatchSource):
        kind = "complete"

        def iter_batches(self, start, mode, pixels_per_batch, batch_size=None):
            yield from ()

    assert Complete("somewhere").describe() == {"kind": "complete", "path": "somewhere", "split": None}
