"""Pickles whose shape would hang unpickling (hashing a 2^60-node key), in CIFAR batches and in
prep's torch files, are refused from their opcodes before anything is built, at once and in one
line; a long parse stops on Ctrl-C."""

from __future__ import annotations

import json
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from helpers import write_cifar_batch
from prep.errors import SourceError
from prep.sources import pickle_shape
from prep.sources.cifar import read_cifar_batch
from prep.sources.pickle_shape import PickleShapeError, check_pickle_shape

PLACEHOLDER = "PLACEHOLDER"


def doubling_tuple(levels: int = 60, base: int = 1000) -> bytes:
    """Opcodes that build ``t = (); for _ in range(levels): t = (t, t)`` with memo references:
    a few bytes per level, 2^levels nodes to walk. (Building the dict ``{t: 1}`` in Python to
    pickle it would hang the test itself: the dict hashes its key.)"""
    out = b")"  # each level: remember the tuple built so far, push it again, pair the two
    for i in range(base, base + levels):
        out += b"r" + i.to_bytes(4, "little") + b"j" + i.to_bytes(4, "little") + b"\x86"
    return out


def with_doubling_tuple(entry: dict, protocol: int = 2) -> bytes:
    """``pickle.dumps(entry)`` with the string ``PLACEHOLDER`` (a key or a value) replaced by the tuple."""
    data = pickle.dumps(entry, protocol=protocol)
    spelled = (b"X\x0b\x00\x00\x00" if protocol < 4 else b"\x8c\x0b") + PLACEHOLDER.encode()
    assert data.count(spelled) == 1
    return data.replace(spelled, doubling_tuple())


def images(n: int = 2) -> np.ndarray:
    return np.random.default_rng(n).integers(0, 256, (n, 3072), dtype=np.uint8)


HOSTILE = {
    "key": ({PLACEHOLDER: 1}, 2),
    "key-protocol-4": ({PLACEHOLDER: 1}, 4),
    "key-beside-data": ({"data": images(), PLACEHOLDER: 2}, 2),
    "bytes-key-beside-data": ({b"data": images(), PLACEHOLDER: 2}, 2),
    "value": ({"data": images(), "labels": PLACEHOLDER}, 2),
    "value-protocol-5": ({"data": images(), "labels": PLACEHOLDER}, 5),
    "inside-a-list": ({"data": images(), "labels": [1, PLACEHOLDER]}, 4),
}


def run_python(code: str, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)


def test_the_431_byte_key_is_small(tmp_path):
    data = with_doubling_tuple({PLACEHOLDER: 1})
    assert len(data) < 1100
    with pytest.raises(PickleShapeError, match="references that expand to more than"):
        check_pickle_shape(data)


def test_hostile_shapes_are_refused_at_once_naming_the_file(tmp_path):
    """In a subprocess with a timeout: before the check, each of these hangs for ever in C."""
    paths = {}
    for name, (entry, protocol) in HOSTILE.items():
        paths[name] = str(tmp_path / f"{name}_batch")
        with open(paths[name], "wb") as f:
            f.write(with_doubling_tuple(entry, protocol))
    code = textwrap.dedent(
        f"""
        import json, time
        from prep.errors import SourceError
        from prep.sources.cifar import read_cifar_batch
        out = {{}}
        for name, path in {paths!r}.items():
            start = time.perf_counter()
            try:
                read_cifar_batch(path)
                out[name] = ["read", 0]
            except SourceError as exc:
                out[name] = [str(exc), time.perf_counter() - start]
        print(json.dumps(out))
        """
    )
    done = run_python(code, timeout=60)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    for name, (message, seconds) in results.items():
        assert message.startswith(f"{paths[name]}: not a CIFAR python pickle ("), message
        assert "\n" not in message
        assert seconds < 2.0, (name, seconds)


def test_prep_stats_refuses_the_hanging_pickle_in_one_line(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "test_batch").write_bytes(with_doubling_tuple({PLACEHOLDER: 1}))
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "prep", "stats", "cifar10", "--root", str(tmp_path), "--split", "test"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.startswith("prep: error:")]
    assert len(lines) == 1, done.stderr
    assert re.fullmatch(
        rf"prep: error: {re.escape(str(folder / 'test_batch'))}: not a CIFAR python pickle "
        r"\(references that expand to more than [\d,]+ objects\)",
        lines[0],
    ), lines
    assert "Traceback" not in done.stderr
    assert time.monotonic() - start < 60


def test_ctrl_c_stops_a_long_parse(tmp_path):
    """A legitimate-looking batch with 900,000 file names (Python 3 protocol 2 spells each bytes as
    a call): the check takes seconds, in Python, and Ctrl-C ends it with exit 130."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [b"f%07d.png" % i for i in range(900_000)]
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": images(), b"filenames": names}, protocol=2))
    del names
    code = textwrap.dedent(
        f"""
        import sys
        import prep.sources.cifar as cifar
        from prep.cli import run
        check = cifar.check_pickle_shape
        def announced(data):
            sys.stderr.write("parsing\\n")
            sys.stderr.flush()
            return check(data)
        cifar.check_pickle_shape = announced
        sys.argv = ["prep", "stats", "cifar10", "--root", {str(tmp_path)!r}, "--split", "test"]
        run()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        seen = [proc.stderr.readline() for _ in range(1)]
        while seen[-1] not in ("parsing\n", ""):
            seen.append(proc.stderr.readline())
        assert seen[-1] == "parsing\n", seen
        time.sleep(0.3)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        took = time.monotonic() - sent
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert took < 5, took


# ------------------------------------------------------------------ the shapes one at a time


def shape_error(data: bytes) -> str:
    with pytest.raises(PickleShapeError) as info:
        check_pickle_shape(data)
    return str(info.value)


@pytest.mark.parametrize("protocol", [2, 4])
@pytest.mark.parametrize(
    "key,kind",
    [((1, 2), "tuple"), (3, "int"), (2.5, "float"), (None, "NoneType"), (True, "bool")],
)
def test_only_str_and_bytes_keys_are_read(tmp_path, key, kind, protocol):
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({"data": images(), key: 1}, protocol=protocol))
    with pytest.raises(SourceError) as info:
        read_cifar_batch(path)
    assert str(info.value) == (
        f"{path}: not a CIFAR python pickle (a dict key of type {kind}; only str and bytes keys are read)"
    )


def test_sets_are_refused():
    """Protocols 4 and 5 spell sets as opcodes; older ones as a call that find_class refuses."""
    assert shape_error(pickle.dumps({"data": 1, "labels": {1, 2}}, protocol=4)) == "a set, which prep does not read"
    frozen = pickle.dumps({"data": 1, "s": frozenset([1])}, protocol=5)
    assert shape_error(frozen) == "a frozenset, which prep does not read"


def test_deep_nesting_is_refused():
    value: list = [1]
    for _ in range(40):
        value = [value]
    assert shape_error(pickle.dumps({"data": 1, "labels": value})) == "objects nested deeper than 32 levels"
    value = [1]
    for _ in range(25):
        value = [value]
    check_pickle_shape(pickle.dumps({"data": 1, "labels": value}))  # within the bound


def test_a_container_that_contains_itself_is_refused():
    loop: list = [1]
    loop.append(loop)
    assert shape_error(pickle.dumps({"data": 1, "labels": loop})) == "a container that contains itself"


@pytest.mark.parametrize("protocol", [2, 5])
def test_wide_shared_references_are_refused(protocol):
    """Four levels of 100 references each: 10^8 objects to walk in a file of a few kilobytes."""
    value: list = [0]
    for _ in range(4):
        value = [value] * 100
    data = pickle.dumps({"data": 1, "labels": value}, protocol=protocol)
    assert len(data) < 2000
    assert shape_error(data).startswith("references that expand to more than")


def test_the_object_count_is_bounded(monkeypatch):
    data = pickle.dumps({"data": 1, "labels": list(range(1000))})
    check_pickle_shape(data)
    monkeypatch.setattr(pickle_shape, "MAX_OBJECTS", 500)
    assert shape_error(data) == "more than 500 objects"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"", "EOFError: Ran out of input"),
        (pickle.dumps({"data": b"x" * 100})[:-20], "UnpicklingError: pickle data was truncated"),
        (b"\x80\x02}q\x00Z.", "UnpicklingError: invalid load key, 'Z'."),
        (b"\x80\x02h\x05.", "UnpicklingError: Memo value not found at index 5"),
        (b"\x80\x02s.", "UnpicklingError: unpickling stack underflow"),
    ],
)
def test_malformed_streams_say_what_pickle_would(data, reason):
    assert shape_error(data) == reason


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
@pytest.mark.parametrize("byte_keys", [False, True])
def test_real_batches_of_every_protocol_still_load(tmp_path, protocol, byte_keys):
    """The whole layout of a CIFAR batch: batch_label, labels, data, filenames (and NumPy scalars)."""
    data = images(5)
    entry = {
        "batch_label": "training batch 1 of 5",
        "labels": [np.int64(i) for i in range(5)],
        "data": data,
        "filenames": [f"img_{i}.png" for i in range(5)],
        "coarse_labels": [1, 2, 3, 4, 5],
    }
    if byte_keys:
        entry = {k.encode(): v for k, v in entry.items()}
        entry[b"filenames"] = [n.encode() for n in entry[b"filenames"]]
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(entry, protocol=protocol))
    np.testing.assert_array_equal(read_cifar_batch(path), data.reshape(5, 3, 32, 32))
    write_cifar_batch(path, data.reshape(5, 3, 32, 32), range(5), byte_keys=byte_keys, protocol=protocol)
    np.testing.assert_array_equal(read_cifar_batch(path), data.reshape(5, 3, 32, 32))


# ------------------------------------------------------------------ torch files


def torch_file_with_doubling_tuple(path) -> None:
    """A torch zip file whose pickle has the doubling tuple as a dict key (as a whitening file's)."""
    import io
    import zipfile

    import torch

    buffer = io.BytesIO()
    torch.save({"format": "prep-whitening", "W": torch.eye(3, dtype=torch.float64), PLACEHOLDER: 1}, buffer)
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    (name,) = [n for n in members if n.endswith("data.pkl")]
    spelled = b"X\x0b\x00\x00\x00" + PLACEHOLDER.encode()
    assert members[name].count(spelled) == 1
    members[name] = members[name].replace(spelled, doubling_tuple())
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for member, data in members.items():
            archive.writestr(member, data)


def test_a_torch_file_with_the_hanging_key_is_refused_at_once(tmp_path):
    """torch.load(weights_only=True) hashes dict keys as well: the same 1 KB key hangs it."""
    path = tmp_path / "zca.pt"
    torch_file_with_doubling_tuple(path)
    code = textwrap.dedent(
        f"""
        import time
        from prep.errors import StatsFileError
        from prep.transforms.whitening_file import load_whitening
        start = time.perf_counter()
        try:
            load_whitening({str(path)!r})
        except StatsFileError as exc:
            print(f"{{time.perf_counter() - start:.3f}} {{exc}}")
        """
    )
    done = run_python(code, timeout=60)
    assert done.returncode == 0, done.stderr
    seconds, message = done.stdout.strip().split(" ", 1)
    assert re.fullmatch(
        rf"{re.escape(str(path))}: not a readable prep whitening file "
        r"\(references that expand to more than [\d,]+ objects\)",
        message,
    ), message
    assert float(seconds) < 2.0


def test_torch_files_of_the_format_before_zip_are_refused(tmp_path):
    import torch

    from prep.errors import StatsFileError
    from prep.transforms.whitening_file import load_whitening

    path = tmp_path / "old.pt"
    torch.save({"W": torch.eye(2)}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(StatsFileError) as info:
        load_whitening(path)
    assert str(info.value).startswith(f"{path}: not a readable prep whitening file (not a torch zip file")
