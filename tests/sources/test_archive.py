"""Zip and tar archives and WebDataset shards: read in place, with the folder rules, and giving the
extracted folder's statistics bit for bit; hostile members skipped and listed, damaged archives
refused in one line, compressed tars decompressed a bounded number of times."""

from __future__ import annotations

import io
import os
import pickle
import struct
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

import prep
from helpers import exact_stats, jpeg_bytes, make_folder, pil_pixels
from prep.engine.measure import load_or_compute
from prep.errors import BadImageError, SourceError
from prep.sources import resolve_source
from prep.sources.archive import ArchiveSource
from prep.sources.archive_members import UNSAFE

FIELDS = ("mean", "std", "count", "min", "max", "images")
TAR_MODES = {".tar": "w", ".tar.gz": "w:gz", ".tgz": "w:gz", ".tar.xz": "w:xz"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("archives") / "images", n_per_class=5)


@pytest.fixture(scope="module")
def folder_stats(folder):
    return prep.compute_stats(folder, workers=0)


def files_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def make_zip(path: Path, entries: dict[str, bytes], compression=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def make_tar(path: Path, entries: dict[str, bytes]) -> Path:
    mode = next(m for suffix, m in TAR_MODES.items() if path.name.endswith(suffix))
    with tarfile.open(path, mode) as tf:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def entries_of(folder: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + p.relative_to(folder).as_posix(): p.read_bytes() for p in files_of(folder)}


def same_stats(actual, expected) -> None:
    for name in FIELDS:
        assert getattr(actual, name) == getattr(expected, name), name


def skipped_of(stats) -> dict[str, str]:
    return dict(stats.skipped_files().listed)


@pytest.mark.parametrize("suffix", [".zip", ".stored.zip", ".tar", ".tar.gz", ".tgz", ".tar.xz"])
@pytest.mark.parametrize("workers", [0, 2])
def test_archive_equals_extracted_folder(folder, folder_stats, tmp_path, suffix, workers):
    entries = entries_of(folder, prefix="./" if suffix == ".tar" else "")
    path = tmp_path / f"data{suffix}"
    if suffix.endswith(".zip"):
        make_zip(path, entries, zipfile.ZIP_STORED if suffix == ".stored.zip" else zipfile.ZIP_DEFLATED)
    else:
        make_tar(path, entries)
    stats = prep.compute_stats(path, workers=workers)
    same_stats(stats, folder_stats)
    assert not stats.skipped_files().listed
    src = resolve_source(path)
    assert src.num_images() == len(entries)
    assert stats.source["path"] == str(path)


def test_folder_matches_an_exact_reference(folder, folder_stats):
    """The folder the archives are compared with agrees with exact integer arithmetic."""
    pixels = np.concatenate([pil_pixels(p) for p in files_of(folder)]).astype(np.uint8)
    exact = exact_stats(pixels)
    np.testing.assert_allclose(folder_stats.mean, exact["mean"], rtol=1e-12)
    np.testing.assert_allclose(np.square(folder_stats.std), exact["var"], rtol=1e-9)


def _hostile_tar(path: Path, good: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz" if path.name.endswith("gz") else "w") as tf:

        def add(name, data=b"", **attrs):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            for key, value in attrs.items():
                setattr(info, key, value)
            tf.addfile(info, io.BytesIO(data) if data else None)

        add("cls", type=tarfile.DIRTYPE)
        for name, data in good.items():
            add(name, data)
        add("cls/trunc.png", good["cls/good0.png"][:40])
        add("cls/notes.txt", b"hello")
        add("../evil.jpg", jpeg_bytes())
        add("/abs/evil.png", good["cls/good0.png"])
        add("cls/link.png", type=tarfile.SYMTYPE, linkname="good0.png")
        add("cls/hard.png", type=tarfile.LNKTYPE, linkname="cls/good0.png")
        add("cls/fifo.png", type=tarfile.FIFOTYPE)
    return path


@pytest.fixture
def good(tmp_path) -> dict[str, bytes]:
    folder = make_folder(tmp_path / "good", n_per_class=2)
    return {f"cls/good{i}.png": p.read_bytes() for i, p in enumerate(f for f in files_of(folder) if f.suffix == ".png")}


@pytest.mark.parametrize("name", ["bad.tar", "bad.tar.gz"])
def test_hostile_tar_members_are_skipped_and_listed(tmp_path, good, name):
    folder = tmp_path / "extracted"
    for rel, data in good.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    path = _hostile_tar(tmp_path / name, good)
    with pytest.warns(prep.PrepWarning, match="skipped"):
        stats = prep.compute_stats(path, workers=2)
    same_stats(stats, prep.compute_stats(folder, workers=0))
    skipped = skipped_of(stats)
    assert skipped[f"{name}:../evil.jpg"] == UNSAFE
    assert skipped[f"{name}:/abs/evil.png"] == UNSAFE
    assert skipped[f"{name}:cls/link.png"] == "symlink member (not followed)"
    assert skipped[f"{name}:cls/hard.png"] == "hard link member (not followed)"
    assert skipped[f"{name}:cls/fifo.png"] == "not a regular file"
    assert skipped[f"{name}:cls/notes.txt"] == "not an image file extension"
    assert skipped[f"{name}:cls/trunc.png"].startswith("cannot decode")
    assert not any(p.name == "evil.jpg" for p in tmp_path.parent.rglob("evil.jpg"))  # nothing was written
    with pytest.raises(BadImageError, match=rf"^{tmp_path}/{name}:cls/trunc.png: cannot decode"):
        prep.compute_stats(path, workers=0, strict=True)


def test_hostile_zip_members_are_skipped_and_listed(tmp_path, good):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel, data in good.items():
            zf.writestr(rel, data)
        zf.writestr("cls/", b"")  # a directory entry: ignored
        zf.writestr("../evil.jpg", jpeg_bytes())
        zf.writestr("..\\win.jpg", jpeg_bytes())
        link = zipfile.ZipInfo("cls/link.png")
        link.external_attr = (0o120777 << 16) | 0x20  # a symlink, as Info-ZIP stores one
        zf.writestr(link, "good0.png")
        with pytest.warns(UserWarning, match="Duplicate name"):
            zf.writestr("cls/good0.png", good["cls/good1.png"])  # a duplicate name: the later one wins
    with pytest.warns(prep.PrepWarning):
        stats = prep.compute_stats(path, workers=0)
    skipped = skipped_of(stats)
    assert skipped["bad.zip:../evil.jpg"] == UNSAFE
    assert skipped["bad.zip:..\\win.jpg"] == UNSAFE
    assert skipped["bad.zip:cls/link.png"] == "symlink member (not followed)"
    assert skipped["bad.zip:cls/good0.png"].startswith("duplicate member")
    assert stats.images == len(good)
    folder = tmp_path / "extracted" / "cls"
    folder.mkdir(parents=True)
    (folder / "good0.png").write_bytes(good["cls/good1.png"])
    for rel, data in list(good.items())[1:]:
        (folder.parent / rel).write_bytes(data)
    same_stats(stats, prep.compute_stats(folder.parent, workers=0))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` grey pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_zip_bombs_are_bounded(tmp_path, good):
    """A member declared tiny that inflates to 64 MiB yields only its declared size; an image whose
    header declares 10^10 pixels meets PIL's decompression-bomb limit. Both are skipped, quickly."""
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("a.png", good["cls/good0.png"])
        zf.writestr("bomb.png", b"\0" * (64 << 20))
        zf.writestr("huge.png", _png_header_only(100_000, 100_000))
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("bomb.png")
        central = zf.start_dir
    while data[central + 46 : central + 46 + struct.unpack_from("<H", data, central + 28)[0]] != b"bomb.png":
        central = data.index(b"PK\x01\x02", central + 4)
    struct.pack_into("<I", data, info.header_offset + 22, 100)  # local header: uncompressed size
    struct.pack_into("<I", data, central + 24, 100)  # central directory: uncompressed size
    path.write_bytes(bytes(data))
    with pytest.warns(prep.PrepWarning):
        stats = prep.compute_stats(path, workers=0)
    assert stats.images == 1
    skipped = skipped_of(stats)
    assert skipped["bomb.zip:bomb.png"].startswith("cannot decode")
    assert "DecompressionBomb" in skipped["bomb.zip:huge.png"]


@pytest.mark.parametrize(
    ("name", "data"),
    [("junk.zip", b"not a zip at all" * 10), ("junk.tar", b"\x01" * 1024), ("cut.tar.gz", None)],
)
def test_damaged_archive_is_a_one_line_source_error(tmp_path, good, name, data):
    path = tmp_path / name
    if data is None:
        make_tar(path, good)
        data = path.read_bytes()[: len(path.read_bytes()) // 2]
    path.write_bytes(data)
    with pytest.raises(SourceError) as info:
        prep.compute_stats(path, workers=0)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message


def test_fingerprint_reuse_and_staleness(tmp_path, good):
    path = make_zip(tmp_path / "data.zip", good)
    out = tmp_path / "stats.json"
    first, reused = load_or_compute(out, path, workers=0)
    assert not reused
    again, reused = load_or_compute(out, path, workers=0)
    assert reused and again.mean == first.mean
    prep.load_stats(out, verify_against=path)
    fingerprint = resolve_source(path).fingerprint()
    assert fingerprint["files"] == len(good) and fingerprint["bytes"] == path.stat().st_size
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert resolve_source(path).fingerprint() != fingerprint
    with pytest.raises(prep.StaleStatsError):
        prep.load_stats(out, verify_against=path)


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".zip"])
def test_tasks_resume_mid_archive_and_pickle_small(tmp_path, good, suffix):
    entries = {f"{i:03d}.png": data for i, data in enumerate(list(good.values()) * 3)}
    path = tmp_path / f"many{suffix}"
    make_zip(path, entries) if suffix == ".zip" else make_tar(path, entries)
    src = resolve_source(path)
    names = [f"many{suffix}:{n}" for n in sorted(entries)]
    chunks = list(src.iter_tasks(5, 2))
    assert [n for c in chunks for n in c.names] == names[5:]
    assert all(len(c.names) <= 2 for c in chunks)
    chunk = pickle.loads(pickle.dumps(chunks[0]))
    with chunk.reader.open(chunk.names[0]) as f:
        assert f.read() == entries[chunk.names[0].split(":", 1)[1]]
    assert chunk.reader.display(chunk.names[0]) == f"{path}:{chunk.names[0].split(':', 1)[1]}"
    assert src.display(chunk.names[0]) == chunk.reader.display(chunk.names[0])


def test_compressed_tar_is_decompressed_twice_whatever_the_chunks(tmp_path, good, monkeypatch):
    """Once to list, once to read: never once per chunk."""
    entries = {f"{i:03d}.png": data for i, data in enumerate(list(good.values()) * 5)}
    path = make_tar(tmp_path / "many.tar.gz", entries)
    opened = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    src = resolve_source(path)
    chunks = list(src.iter_tasks(0, 1))
    assert len(chunks) == len(entries) and len(opened) == 2


# ------------------------------------------------------------------ WebDataset shards
def make_shards(folder: Path, out: Path, count: int = 3, suffix: str = ".tar", extra=None) -> list[Path]:
    """The folder's images as WebDataset samples (``000007.png`` with ``000007.cls``) in ``count`` shards."""
    files = files_of(folder)
    out.mkdir(parents=True, exist_ok=True)
    shards = []
    for s in range(count):
        entries = {}
        for i in range(s, len(files), count):
            ext = files[i].suffix.lstrip(".").lower()
            entries[f"{i:06d}.{ext}"] = files[i].read_bytes()
            entries[f"{i:06d}.cls"] = str(i % 2).encode()
            if extra:
                entries.update(extra(i))
        shards.append(make_tar(out / f"train-{s:06d}{suffix}", entries))
    return shards


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_webdataset_shards_equal_the_folder(folder, folder_stats, tmp_path, suffix):
    shards = make_shards(folder, tmp_path / "shards", suffix=suffix)
    pattern = str(tmp_path / "shards" / f"train-{{000000..000002}}{suffix}")
    for source, options in (
        (pattern, {}),
        ([str(p) for p in shards], {}),
        (tmp_path / "shards", {"archives": True}),
    ):
        src = resolve_source(source, **options)
        assert isinstance(src, ArchiveSource) and src.kind == "webdataset"
        assert src.num_images() == len(files_of(folder))
        assert not src.listed_skipped()  # the .cls members of samples are not listed
        archives = [c.reader.archive for c in src.iter_tasks(0, 4)]
        assert archives == sorted(archives)  # whole shards, in order
    same_stats(prep.compute_stats(pattern, workers=2), folder_stats)
    same_stats(prep.compute_stats([str(p) for p in shards], workers=0), folder_stats)


def test_webdataset_key_picks_the_image_and_skips_samples_without_one(folder, tmp_path):
    png = next(p for p in files_of(folder) if p.suffix == ".png").read_bytes()
    shards = make_shards(folder, tmp_path / "s", count=2, extra=lambda i: {f"{i:06d}.seg.png": png})
    with pytest.raises(SourceError, match=r"several images \(.*seg\.png\); pass key="):
        resolve_source([str(p) for p in shards]).num_images()
    src = resolve_source([str(p) for p in shards], key="seg.png")
    assert src.num_images() == len(files_of(folder))
    stats = prep.compute_stats(src, workers=0)
    reference = np.concatenate([pil_pixels(io.BytesIO(png))] * len(files_of(folder))).astype(np.uint8)
    np.testing.assert_allclose(stats.mean, exact_stats(reference)["mean"], rtol=1e-12)
    # a sample without the key's member is skipped with a reason
    lonely = make_tar(tmp_path / "s" / "train-000002.tar", {"x.jpg": png, "y.seg.png": png})
    src = resolve_source([str(p) for p in [*shards, lonely]], key="seg.png")
    assert src.listed_skipped() == [("train-000002.tar:x", "no 'seg.png' member in the sample")]


def test_missing_shard_and_non_archive_in_a_list(tmp_path, good):
    shard = make_tar(tmp_path / "a-0.tar", good)
    with pytest.raises(SourceError, match=r"a-1\.tar: no such file"):
        resolve_source(str(tmp_path / "a-{0..1}.tar"))
    (tmp_path / "x.png").write_bytes(good["cls/good0.png"])
    with pytest.raises(SourceError, match=r"x\.png: not an archive"):
        resolve_source([str(shard), str(tmp_path / "x.png")])


def test_tar_members_small_and_large_read_the_same_and_a_replaced_tar_is_reopened(tmp_path, good, monkeypatch):
    from prep.sources import archive_readers, base

    entries = {f"{i:03d}.png": data for i, data in enumerate(good.values())}
    path = make_tar(tmp_path / "t.tar", entries)
    chunks = list(resolve_source(path).iter_tasks(0, 100, max_bytes=10**9))
    assert len(chunks) == 1
    reader = pickle.loads(pickle.dumps(chunks[0].reader))
    for name in chunks[0].names:  # small members: one pread on the process's descriptor
        with reader.open(name) as f:
            assert f.read() == entries[name.split(":", 1)[1]] and name in repr(f)
    with pytest.raises(OSError, match="no such member"):
        reader.open("t.tar:absent.png")
    monkeypatch.setattr(base, "SMALL_FILE_BYTES", 0)  # large members: a window of the file
    for name in chunks[0].names:
        with reader.open(name) as f:
            assert f.read() == entries[name.split(":", 1)[1]]
    monkeypatch.undo()
    replaced = {name: data[::-1] for name, data in entries.items()}
    os.replace(make_tar(tmp_path / "u.tar", replaced), path)  # the same names and sizes, other bytes
    os.utime(path, ns=(1, 1))
    with reader.open(chunks[0].names[0]) as f:
        assert f.read() == replaced[chunks[0].names[0].split(":", 1)[1]]
    assert len(archive_readers._tars) <= archive_readers.ZIPS_OPEN
