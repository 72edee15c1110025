"""Hostile and malformed idx / CIFAR files: every one is refused at once with a one-line
``SourceError`` naming the file, without hanging, decompressing a bomb, or crashing the process."""

from __future__ import annotations

import contextlib
import gzip
import os
import pickle
import stat
import struct
import sys
import threading
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest

from common import write_cifar_batch, write_idx_images
from prep.errors import SourceError
from prep.sources.cifar import read_cifar_batch
from prep.sources.idx import count_idx_images, idx_source, read_idx_images


def idx_header(n: int, h: int, w: int) -> bytes:
    return bytes([0, 0, 0x08, 3]) + struct.pack(">III", n, h, w)


def write_raw(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def source_error(fn, path) -> str:
    """The message of the ``SourceError`` that ``fn(path)`` raises, checked to be one line naming ``path``."""
    with pytest.raises(SourceError) as info:
        fn(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and "\r" not in message, message
    return message


def call_without_blocking(fn, path):
    """``fn(path)`` in a thread; fails the test (after unblocking it) if it waits on a FIFO's writer."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn(path)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        with contextlib.suppress(OSError):  # a writer end lets the reader's open() return, so the thread ends
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"{fn.__name__} blocked on {path}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# ---------------------------------------------------------------- idx headers


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "shape,reason",
    [
        ((2**32 - 1, 0, 0), "header says 4294967295 images of 0x0: zero-size images"),
        ((5, 0, 28), "header says 5 images of 0x28: zero-size images"),
        ((5, 28, 0), "header says 5 images of 28x0: zero-size images"),
        ((0, 28, 28), "header says 0 images of 28x28: no images"),
    ],
)
@pytest.mark.parametrize("fn", [read_idx_images, count_idx_images])
def test_idx_header_with_a_zero_dimension_is_refused(tmp_path, suffix, shape, reason, fn):
    path = write_raw(tmp_path / f"x-images-idx3-ubyte{suffix}", idx_header(*shape))
    assert source_error(fn, path) == f"{path}: {reason}"


def test_zero_size_idx_source_does_not_iterate(tmp_path):
    path = write_raw(tmp_path / "x-images-idx3-ubyte", idx_header(2**32 - 1, 0, 0))
    src = idx_source(path)
    with pytest.raises(SourceError, match="zero-size images"):
        src.num_images()
    with pytest.raises(SourceError, match="zero-size images"):
        next(src.iter_batches(0, src.native_mode, pixels_per_batch=1 << 20))


@pytest.mark.parametrize("fn", [read_idx_images, count_idx_images])
@pytest.mark.parametrize("shape", [(2**22, 2**21, 2**21), (2**32 - 1, 2**32 - 1, 2**32 - 1), (60000, 28, 28)])
def test_absurd_idx_header_is_a_one_line_error_on_a_plain_file(tmp_path, fn, shape):
    # 2**22 * 2**21 * 2**21 == 2**64 wraps to 0 in int64: the old check passed and NumPy raised
    # "array is too big"; the count alone used to be returned without looking at the file's size
    path = write_raw(tmp_path / "x-images-idx3-ubyte", idx_header(*shape) + b"\0" * 100)
    n, h, w = shape
    expected = f"{path}: header says {n} images of {h}x{w} ({16 + n * h * w} bytes), file has 116 bytes"
    assert source_error(fn, path) == expected


@pytest.mark.parametrize("fn", [read_idx_images, count_idx_images])
@pytest.mark.parametrize("shape", [(2**22, 2**21, 2**21), (60000, 28, 28)])
def test_absurd_idx_header_is_a_one_line_error_on_a_gz_file(tmp_path, fn, shape):
    path = write_raw(tmp_path / "x-images-idx3-ubyte.gz", idx_header(*shape) + b"\0" * 100)
    n, h, w = shape
    size = path.stat().st_size
    expected = (
        f"{path}: header says {n} images of {h}x{w} ({16 + n * h * w} bytes), "
        f"more than a gzip file of {size} bytes can hold"
    )
    assert source_error(fn, path) == expected


# ---------------------------------------------------------------- gzip bomb, short gzip


def test_gzip_bomb_is_refused_after_the_declared_bytes(tmp_path, monkeypatch):
    image = np.arange(28 * 28, dtype=np.uint8)
    path = tmp_path / "bomb-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_header(1, 28, 28) + image.tobytes() + bytes(50 << 20)))
    assert path.stat().st_size < 200_000  # 50 MB of decompressed data in a small file

    sizes = []
    real_read = gzip.GzipFile.read

    def recording_read(self, size=-1):
        sizes.append(size)
        return real_read(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", recording_read)
    tracemalloc.start()
    try:
        message = source_error(read_idx_images, path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert message == (
        f"{path}: file has more bytes than its header declares (header says 1 images of 28x28 (800 bytes))"
    )
    assert peak < 4 << 20, f"peak {peak} bytes while refusing a 50 MB stream"
    assert sizes and all(isinstance(s, int) and 0 < s <= 1 << 24 for s in sizes), sizes


def test_gzip_with_fewer_bytes_than_declared(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8)
    path = write_raw(tmp_path / "short-images-idx3-ubyte.gz", idx_header(3, 28, 28) + images.tobytes())
    assert source_error(read_idx_images, path) == (
        f"{path}: header says 3 images of 28x28 (2368 bytes), decompressed data ends after 1584 bytes"
    )
    # the compressed stream itself cut short
    cut = tmp_path / "cut-images-idx3-ubyte.gz"
    cut.write_bytes(gzip.compress(idx_header(2, 28, 28) + images.tobytes())[:-12])
    assert source_error(read_idx_images, cut) == (
        f"{cut}: cannot read idx file (Compressed file ended before the end-of-stream marker was reached)"
    )


def test_gz_idx_still_reads_exactly(tmp_path):
    images = np.random.default_rng(1).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    path = tmp_path / "ok-images-idx3-ubyte.gz"
    write_idx_images(path, images)
    np.testing.assert_array_equal(read_idx_images(path), images)
    assert count_idx_images(path) == 7


# ---------------------------------------------------------------- plain files: read, not mapped


def test_plain_idx_is_read_into_memory_not_memory_mapped(tmp_path):
    images = np.random.default_rng(2).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    path = tmp_path / "x-images-idx3-ubyte"
    write_idx_images(path, images)
    array = read_idx_images(path)
    assert type(array) is np.ndarray and array.dtype == np.uint8 and array.shape == (9, 28, 28)
    assert count_idx_images(path) == 9
    # a memory map would raise SIGBUS on the next line: the file no longer holds the pixels
    os.truncate(path, 0)
    np.testing.assert_array_equal(array, images)


@pytest.mark.parametrize(
    "change,reason",
    [
        (
            "truncate",
            "header says 9 images of 28x28 (7072 bytes), file ended (truncated while reading?) after 1016 bytes",
        ),
        ("append", "file has more bytes than its header declares (header says 9 images of 28x28 (7072 bytes))"),
    ],
)
def test_plain_idx_changed_after_its_size_was_checked(tmp_path, monkeypatch, change, reason):
    images = np.random.default_rng(3).integers(0, 256, (9, 28, 28), dtype=np.uint8)
    path = tmp_path / "x-images-idx3-ubyte"
    write_idx_images(path, images)
    checked = os.stat(path)
    if change == "truncate":
        os.truncate(path, 1016)
    else:
        with open(path, "ab") as f:
            f.write(b"extra")
    real_fstat = os.fstat

    def stale_fstat(fd):  # the size the file had when it was checked, as if it changed right after
        st = real_fstat(fd)
        return checked if (st.st_dev, st.st_ino) == (checked.st_dev, checked.st_ino) else st

    monkeypatch.setattr(os, "fstat", stale_fstat)
    assert source_error(read_idx_images, path) == f"{path}: {reason}"


# ---------------------------------------------------------------- FIFOs, directories, devices


def special_file(tmp_path: Path, kind: str, name: str) -> tuple[Path, str]:
    if kind == "fifo":
        if not hasattr(os, "mkfifo"):
            pytest.skip("no FIFOs on this platform")
        path = tmp_path / name
        os.mkfifo(path)
        return path, "a FIFO"
    if kind == "directory":
        path = tmp_path / name
        path.mkdir()
        return path, "a directory"
    if not os.path.exists("/dev/null") or not stat.S_ISCHR(os.stat("/dev/null").st_mode):
        pytest.skip("no /dev/null character device")
    return Path("/dev/null"), "a character device"


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
@pytest.mark.parametrize(
    "fn,name,what",
    [
        (read_idx_images, "x-images-idx3-ubyte", "idx file"),
        (read_idx_images, "x-images-idx3-ubyte.gz", "idx file"),
        (count_idx_images, "x-images-idx3-ubyte", "idx file"),
        (count_idx_images, "x-images-idx3-ubyte.gz", "idx file"),
        (read_cifar_batch, "data_batch_1", "CIFAR batch"),
    ],
)
def test_special_files_are_refused_without_blocking(tmp_path, kind, fn, name, what):
    path, described = special_file(tmp_path, kind, name)
    with pytest.raises(SourceError) as info:
        call_without_blocking(fn, path)
    assert str(info.value) == f"{path}: cannot read {what}: not a regular file ({described})"


# ---------------------------------------------------------------- CIFAR pickles


@pytest.mark.parametrize("byte_keys", [False, True])
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_cifar_pickles_of_every_numpy_protocol(tmp_path, protocol, byte_keys):
    images = np.random.default_rng(protocol).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    data = images.reshape(6, -1)
    path = tmp_path / "data_batch_1"
    data_key, labels_key = (b"data", b"labels") if byte_keys else ("data", "labels")
    with open(path, "wb") as f:
        pickle.dump({data_key: data, labels_key: [np.int64(i) for i in range(6)]}, f, protocol=protocol)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        array = read_cifar_batch(path)
    assert array.dtype == np.uint8 and array.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(array, images)


def test_cifar_protocol_5_fortran_order_and_helper_writer(tmp_path):
    images = np.random.default_rng(9).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    path = tmp_path / "test_batch"
    with open(path, "wb") as f:
        pickle.dump({"data": np.asfortranarray(images.reshape(4, -1)), "labels": [0, 1, 2, 3]}, f, protocol=5)
    np.testing.assert_array_equal(read_cifar_batch(path), images)
    write_cifar_batch(path, images, [0, 1, 2, 3], byte_keys=False, protocol=5)
    np.testing.assert_array_equal(read_cifar_batch(path), images)


def test_cifar_protocol_5_pickle_with_numpy_1_names(tmp_path):
    """NumPy 1 writes ``numpy.core.numeric._frombuffer``; it loads, without NumPy 2's deprecation warning."""
    images = np.random.default_rng(4).integers(0, 256, (2, 3, 32, 32), dtype=np.uint8)
    data = pickle.dumps({"data": images.reshape(2, -1), "labels": [1, 2]}, protocol=5)
    # one frame (opcode 0x95, 8-byte length) holds the whole pickle; renaming shortens it by a byte
    assert data[2] == 0x95 and int.from_bytes(data[3:11], "little") == len(data) - 11
    old, new = b"\x8c\x13numpy._core.numeric", b"\x8c\x12numpy.core.numeric"
    assert data.count(old) == 1
    body = data[11:].replace(old, new)
    path = tmp_path / "test_batch"
    path.write_bytes(data[:3] + len(body).to_bytes(8, "little") + body)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        array = read_cifar_batch(path)
    np.testing.assert_array_equal(array, images)


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize(
    "func,args,refused",
    [
        (print, ("pwned",), "builtins.print"),
        (os.system, ("touch {marker}",), f"{os.system.__module__}.system"),
        (eval, ("open({marker!r}, 'w')",), "builtins.eval"),
        (np.load, ("{marker}",), "numpy.load"),
    ],
)
@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickle_calling_anything_else_is_still_refused(tmp_path, func, args, refused, protocol):
    if protocol < 3:  # Python 2's name for the module, mapped back by the unpickler
        refused = refused.replace("builtins.", "__builtin__.")
    marker = tmp_path / "marker"
    args = tuple(a.format(marker=str(marker)) for a in args)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": _Reduce(func, *args), "labels": [1]}, protocol=protocol))
    assert source_error(read_cifar_batch, path) == (
        f"{path}: not a CIFAR python pickle (UnpicklingError: refusing to load {refused})"
    )
    assert not marker.exists()


def test_refused_global_with_a_newline_stays_one_line(tmp_path):
    def short_unicode(text: str) -> bytes:
        return b"\x8c" + bytes([len(text)]) + text.encode()

    path = tmp_path / "data_batch_1"
    path.write_bytes(b"\x80\x04" + short_unicode("evil\nmodule") + short_unicode("run") + b"\x93.")
    assert source_error(read_cifar_batch, path) == (
        f"{path}: not a CIFAR python pickle (UnpicklingError: refusing to load evil\\nmodule.run)"
    )


@pytest.mark.parametrize(
    "entry,keys",
    [
        ({b"\xff\xfe": 1, "labels": [1]}, "\\xff\\xfe, labels"),
        ({b"batch_label": b"x", b"\x80data": np.zeros((1, 3072), np.uint8)}, "\\x80data, batch_label"),
        ({"a\nb": 1}, "'a\\nb'"),
        ({}, "none"),
    ],
)
def test_cifar_keys_that_are_not_text_are_listed_on_one_line(tmp_path, entry, keys):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(entry, protocol=2))
    assert source_error(read_cifar_batch, path) == f"{path}: no 'data' entry (keys: {keys})"


def test_cifar_many_keys_are_cut_short(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({f"k{i:03d}": i for i in range(100)}))
    shown = ", ".join(f"k{i:03d}" for i in range(20))
    assert source_error(read_cifar_batch, path) == f"{path}: no 'data' entry (keys: {shown}, ... (80 more))"


@pytest.mark.parametrize(
    "data,got",
    [
        ([[0] * 3072, [1] * 3072], "a uint8 array of shape (N, 3072); got list"),
        ([[1, 2], [3]], "a uint8 array of shape (N, 3072); got list"),
        ("a string", "a uint8 array of shape (N, 3072); got str"),
        (b"\0" * 3072, "a uint8 array of shape (N, 3072); got bytes"),
        (7, "a uint8 array of shape (N, 3072); got int"),
        (np.zeros((2, 3072), np.int64), "uint8 of shape (N, 3072); got int64 (2, 3072)"),
        (np.zeros((2, 3, 32, 32), np.uint8), "uint8 of shape (N, 3072); got uint8 (2, 3, 32, 32)"),
        (np.zeros(3072, np.uint8), "uint8 of shape (N, 3072); got uint8 (3072,)"),
        (np.zeros((2, 3072), np.float32), "uint8 of shape (N, 3072); got float32 (2, 3072)"),
    ],
)
def test_cifar_data_that_is_not_a_uint8_image_array(tmp_path, data, got):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": data, b"labels": [0, 1]}, protocol=2))
    assert source_error(read_cifar_batch, path) == f"{path}: 'data' must be {got}"


def test_cifar_pickle_of_something_other_than_a_dict(tmp_path):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps([np.zeros((1, 3072), np.uint8)]))
    assert source_error(read_cifar_batch, path) == f"{path}: expected a pickled dict with a 'data' entry; got list"


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_unreadable_files_name_the_file(tmp_path):
    missing = tmp_path / "nope-images-idx3-ubyte"
    assert source_error(read_idx_images, missing) == f"{missing}: cannot read idx file (No such file or directory)"
    assert source_error(count_idx_images, missing) == f"{missing}: cannot read idx file (No such file or directory)"
    missing = tmp_path / "data_batch_9"
    assert source_error(read_cifar_batch, missing) == f"{missing}: cannot read CIFAR batch (No such file or directory)"
