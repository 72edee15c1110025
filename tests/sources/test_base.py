"""prep.sources.base: files are read only when they are regular files, never waiting on a FIFO."""

from __future__ import annotations

import os

import pytest

from helpers import good_images
from prep.decode.decoders import PILDecoder
from prep.engine.workers import reduce_chunk
from prep.sources import FileChunk, FolderReader, base
from prep.sources.base import InMemoryFile, open_regular


def test_open_regular_reads_a_regular_file_blocking_and_closes_on_refusal(tmp_path, monkeypatch):
    (path,) = good_images(tmp_path, 1)
    before = set(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else set()
    with open_regular(str(path)) as f:  # a small file: read whole, its descriptor already closed
        assert isinstance(f, InMemoryFile) and f.read() == path.read_bytes()
        assert f.name == str(path) and str(path) in repr(f)  # as open() names it: decoders and messages use it
        assert set(os.listdir("/proc/self/fd")) <= before if before else True
    monkeypatch.setattr(base, "SMALL_FILE_BYTES", 10)
    with open_regular(str(path)) as f:  # a larger one: a file object, blocking
        assert os.get_blocking(f.fileno()) and f.read() == path.read_bytes()
        assert f.name == str(path)
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


@pytest.mark.parametrize("seen", [100, 2_000_000])
def test_open_regular_reads_a_file_that_changed_since_fstat_to_its_end(tmp_path, monkeypatch, seen):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(range(256)) * 5000)
    real = os.fstat

    def earlier(fd):  # the size fstat saw before the file grew (100) or shrank (2,000,000)
        st = real(fd)
        return os.stat_result((*st[:6], seen, *st[7:10]))

    monkeypatch.setattr(base.os, "fstat", earlier)
    with open_regular(str(path)) as f:
        assert f.read() == path.read_bytes()


def _reference_ranges(sizes, start, size, max_bytes):
    out, first = [], start
    while first < len(sizes):
        end, held = first, 0
        while end < len(sizes) and end - first < size and (max_bytes is None or held < max_bytes):
            held += sizes[end]
            end += 1
        out.append((first, end))
        first = end
    return out


@pytest.mark.parametrize("seed", range(20))
def test_chunk_ranges_end_at_the_file_that_reaches_the_bytes_or_at_the_count(seed):
    import random

    rng = random.Random(seed)
    sizes = [rng.choice([0, 1, 3, 1000, 5000]) for _ in range(rng.randint(0, 60))]
    start = rng.randint(0, len(sizes))
    size = rng.randint(1, 9)
    max_bytes = rng.choice([None, 1, 2000, 10_000])
    got = list(base.chunk_ranges(sizes, start, size, max_bytes))
    assert got == _reference_ranges(sizes, start, size, max_bytes)
    assert [i for first, end in got for i in range(first, end)] == list(range(start, len(sizes)))


def test_a_folder_of_small_files_makes_few_tasks_and_large_files_short_ones(tmp_path):
    from prep.sources.folder import FolderSource

    for i in range(10):
        (tmp_path / f"small{i}.png").write_bytes(b"x" * 100)
    for i in range(3):
        (tmp_path / f"zlarge{i}.png").write_bytes(b"x" * 5000)
    chunks = [c.names for c in FolderSource(str(tmp_path)).iter_tasks(0, 1024, max_bytes=4000)]
    assert chunks == [(*tuple(f"small{i}.png" for i in range(10)), "zlarge0.png"), ("zlarge1.png",), ("zlarge2.png",)]
