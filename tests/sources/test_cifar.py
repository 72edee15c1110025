"""prep.sources.cifar: CIFAR python pickles read as torchvision reads them; hostile or malformed
pickles refused with a one-line ``SourceError`` naming the file, without running what they name."""

from __future__ import annotations

import os
import pickle
import warnings

import numpy as np
import pytest

import prep
from helpers import make_cifar10, make_cifar100, source_arrays, torchvision_cifar, write_cifar_batch
from helpers.errors import source_error
from prep.errors import SourceError
from prep.sources import resolve_source
from prep.sources.cifar import read_cifar_batch


def test_cifar10_reader_equals_torchvision(tmp_path):
    make_cifar10(tmp_path)
    tv = torchvision_cifar("cifar10", tmp_path, train=True)
    arrays = source_arrays(resolve_source("cifar10", root=tmp_path))
    np.testing.assert_array_equal(np.concatenate(arrays).transpose(0, 2, 3, 1), tv.data)


def test_cifar_pickles_with_bytes_keys(tmp_path):
    images = make_cifar10(tmp_path, byte_keys=True)["test"]
    (array,) = source_arrays(resolve_source("cifar10", root=tmp_path, split="test"))
    np.testing.assert_array_equal(array, images)


def test_cifar100_reader_equals_torchvision(tmp_path):
    make_cifar100(tmp_path)
    tv = torchvision_cifar("cifar100", tmp_path, train=False)
    (array,) = source_arrays(resolve_source("cifar100", root=tmp_path, split="test"))
    np.testing.assert_array_equal(array.transpose(0, 2, 3, 1), tv.data)


def test_cifar_pickle_without_data_key(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({"labels": [1, 2]}, f)
    with pytest.raises(SourceError, match=r"no 'data' entry \(keys: labels\)"):
        read_cifar_batch(path)


def test_cifar_pickle_that_runs_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({"data": Evil()}))
    with pytest.raises(SourceError, match=r"refusing to load builtins\.print"):
        read_cifar_batch(path)


def test_cifar_progress_has_a_total_from_the_start_and_ends_exact(tmp_path):
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


# ---------------------------------------------------------------- hostile and malformed pickles


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
