"""prep.sources.folder: image folders listed as torchvision's ImageFolder lists them, also under
hostile or tricky file systems: a listed file replaced by a FIFO is skipped instead of hanging the
run, symlinks are followed or not on request, and ``checksum`` sees edits that keep a file's size
and modification time."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import tracemalloc
import warnings
from pathlib import Path

import numpy as np
import pytest
import torchvision
from PIL import Image

import prep
from helpers import good_images, make_folder, run, split_folder, write_idx_images
from prep.engine.measure import load_or_compute
from prep.errors import BadImageError
from prep.sources import folder as folder_module
from prep.sources import resolve_source
from prep.sources.fingerprint import checksum_files, fingerprint_files
from prep.sources.folder import NOT_FOLLOWED, FolderSource, list_images

BOUND_SECONDS = 30  # far above what these small runs take; a hang fails the test instead of CI


def bounded(fn, *unblock: Path):
    """``fn()`` in a thread; fails the test if it has not returned within :data:`BOUND_SECONDS`,
    after opening each FIFO in ``unblock`` for writing so that a reader waiting on one ends."""
    outcome = {}

    def target():
        try:
            outcome["value"] = fn()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(BOUND_SECONDS)
    if thread.is_alive():
        for fifo in unblock:
            with contextlib.suppress(OSError):  # a writer that comes and goes gives the reader EOF
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(BOUND_SECONDS)
        pytest.fail(f"blocked on {', '.join(map(str, unblock))}")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def listed_then_fifo(folder: Path, name: str = "good1.png", **options) -> tuple[FolderSource, Path]:
    """A FolderSource listed while ``name`` was an image, after which ``name`` became a FIFO."""
    good_images(folder, 3)
    src = FolderSource(str(folder), **options)
    assert src.num_images() == 3  # listed now, as a run lists before it reads
    fifo = folder / name
    fifo.unlink()
    os.mkfifo(fifo)
    return src, fifo


def write_bmp(path: Path, seed: int) -> None:
    """An uncompressed 8x6 RGB BMP: other pixels, same size in bytes."""
    pixels = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="BMP")


def bmp_folder(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_bmp(folder / f"img{i}.bmp", seed=i)
    return folder


def edit_in_place_keeping_size_and_mtime(path: Path) -> None:
    """What ``touch -r`` after an edit does: new bytes, same size, same (atime, mtime)."""
    before = path.stat()
    old = path.read_bytes()
    write_bmp(path, seed=99)
    assert path.read_bytes() != old and path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime_ns == before.st_mtime_ns


# ---------------------------------------------------------------- listing


def test_folder_listing_equals_image_folder(image_folder):
    (image_folder / "ants" / "notes.txt").write_text("not an image")
    (image_folder / "bees" / ".DS_Store").write_bytes(b"\0\0")
    listing = list_images(image_folder)
    tv = torchvision.datasets.ImageFolder(str(image_folder))
    assert [image_folder / p for p in listing.images] == sorted(image_folder / p for p, _ in tv.samples)
    assert ("ants/notes.txt", "not an image file extension") in listing.skipped
    assert ("bees/.DS_Store", "not an image file extension") in listing.skipped


def test_folder_extensions_are_case_insensitive(tmp_path):
    Image.new("RGB", (2, 2)).save(tmp_path / "A.PNG")
    Image.new("RGB", (2, 2)).save(tmp_path / "b.JpEg", format="JPEG")
    assert list_images(tmp_path).images == ["A.PNG", "b.JpEg"]


def test_symlink_loop_is_skipped_not_followed_forever(tmp_path):
    Image.new("L", (2, 2)).save(tmp_path / "a.png")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "self.png").symlink_to(tmp_path / "self.png")
    listing = list_images(tmp_path)
    assert listing.images == ["a.png"]
    reasons = dict(listing.skipped)
    assert reasons["sub/loop"].startswith("symlink loop")
    assert reasons["self.png"].startswith("symlink loop")


# ---------------------------------------------------------------- FIFOs and devices


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_a_listed_file_replaced_by_a_fifo_is_skipped_not_waited_on(tmp_path, workers):
    src, fifo = listed_then_fifo(tmp_path / "images")
    with pytest.warns(prep.PrepWarning, match="good1.png"):
        stats = bounded(lambda: prep.compute_stats(src, workers=workers), fifo)
    assert list(stats.skipped) == [{"path": "good1.png", "reason": "cannot read: not a regular file"}]
    assert stats.images == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_a_fifo_fails_a_strict_run_naming_the_file(tmp_path, workers):
    src, fifo = listed_then_fifo(tmp_path / "images")
    with pytest.raises(BadImageError) as info:
        bounded(lambda: prep.compute_stats(src, workers=workers, strict=True), fifo)
    assert str(info.value) == f"{fifo}: cannot read: not a regular file"


# ---------------------------------------------------------------- symlinks


@pytest.fixture
def linked_folder(tmp_path) -> Path:
    """``root`` with real images, a symlink to one of them, and a symlink to a folder outside ``root``."""
    root = tmp_path / "root"
    good_images(root / "real", 2)
    outside = good_images(tmp_path / "outside", 1)
    (root / "file.png").symlink_to(root / "real" / "good0.png")
    (root / "out").symlink_to(outside[0].parent, target_is_directory=True)
    return root


def test_symlinks_are_followed_by_default_even_outside_the_root(linked_folder):
    listing = list_images(linked_folder)
    assert listing.images == ["file.png", "out/good0.png", "real/good0.png", "real/good1.png"]
    assert listing.skipped == []


def test_symlinks_are_skipped_when_not_followed(linked_folder):
    listing = list_images(linked_folder, follow_symlinks=False)
    assert listing.images == ["real/good0.png", "real/good1.png"]
    reason = "symlink (not followed)"
    assert listing.skipped == [("file.png", reason), ("out", reason)]


def test_a_run_without_following_symlinks_lists_them_as_skipped(linked_folder):
    src = resolve_source(str(linked_folder), follow_symlinks=False)
    assert isinstance(src, FolderSource) and not src.follow_symlinks
    with pytest.warns(prep.PrepWarning, match="symlink"):
        stats = prep.compute_stats(src, workers=0)
    assert stats.images == 2
    assert {s["path"]: s["reason"] for s in stats.skipped} == dict.fromkeys(["file.png", "out"], NOT_FOLLOWED)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert prep.compute_stats(resolve_source(str(linked_folder)), workers=0).images == 4


def test_a_file_that_became_a_symlink_after_listing_is_not_followed(tmp_path):
    good = good_images(tmp_path / "images", 2)
    src = FolderSource(str(tmp_path / "images"), follow_symlinks=False)
    assert src.num_images() == 2
    good[1].unlink()
    good[1].symlink_to(good[0])
    with pytest.warns(prep.PrepWarning):
        stats = prep.compute_stats(src, workers=0)
    assert list(stats.skipped) == [{"path": "good1.png", "reason": "cannot read: symlink (not followed)"}]


def test_the_root_itself_is_followed_when_it_is_a_symlink(tmp_path):
    good_images(tmp_path / "real", 2)
    (tmp_path / "link").symlink_to(tmp_path / "real", target_is_directory=True)
    assert list_images(tmp_path / "link", follow_symlinks=False).images == ["good0.png", "good1.png"]


# ---------------------------------------------------------------- checksum


def test_an_edit_keeping_size_and_mtime_changes_only_the_checksum_fingerprint(tmp_path):
    folder = bmp_folder(tmp_path / "images")
    plain = FolderSource(str(folder)).fingerprint()
    summed = FolderSource(str(folder), checksum=True).fingerprint()
    assert "checksum" not in plain and {k: v for k, v in summed.items() if k != "checksum"} == plain
    edit_in_place_keeping_size_and_mtime(folder / "img1.bmp")
    assert FolderSource(str(folder)).fingerprint() == plain  # the documented limit of (size, mtime)
    after = FolderSource(str(folder), checksum=True).fingerprint()
    assert after["checksum"] != summed["checksum"] and after["sha256"] == summed["sha256"]


def test_the_checksum_of_an_unchanged_folder_is_stable_and_defined(image_folder):
    first = FolderSource(str(image_folder), checksum=True).fingerprint()
    second = FolderSource(str(image_folder), checksum=True).fingerprint()
    assert first == second
    lines = "".join(
        f"{rel}\t{hashlib.sha256((image_folder / rel).read_bytes()).hexdigest()}\n"
        for rel in list_images(image_folder).images
    )
    assert first["checksum"] == hashlib.sha256(lines.encode()).hexdigest()
    rels = list_images(image_folder).images
    assert fingerprint_files(image_folder, rels, checksum=True) == first


def test_the_checksum_is_computed_once_per_source(tmp_path, monkeypatch):
    folder = bmp_folder(tmp_path / "images")
    calls = []
    real = folder_module.checksum_files
    monkeypatch.setattr(folder_module, "checksum_files", lambda *a, **k: calls.append(1) or real(*a, **k))
    src = FolderSource(str(folder), checksum=True)
    first = src.fingerprint()
    first["checksum"] = "changed by the caller"
    assert src.fingerprint()["checksum"] != first["checksum"]
    assert len(calls) == 1


def test_stats_with_a_checksum_are_reused_until_an_edit_that_keeps_size_and_mtime(tmp_path):
    folder = bmp_folder(tmp_path / "images")
    out = tmp_path / "stats.json"
    stats, reused = load_or_compute(out, FolderSource(str(folder), checksum=True), workers=0)
    assert not reused and "checksum" in stats.fingerprint
    again, reused = load_or_compute(out, FolderSource(str(folder), checksum=True), workers=0)
    assert reused and again.mean == stats.mean
    edit_in_place_keeping_size_and_mtime(folder / "img0.bmp")
    fresh, reused = load_or_compute(out, FolderSource(str(folder), checksum=True), workers=0)
    assert not reused and fresh.mean != stats.mean
    assert prep.load_stats(out).fingerprint["checksum"] == fresh.fingerprint["checksum"]


def test_an_unreadable_file_enters_the_checksum_as_its_reason(tmp_path):
    src, fifo = listed_then_fifo(tmp_path / "images", checksum=True)
    fingerprint = bounded(src.fingerprint, fifo)
    rels = ["good0.png", "good1.png", "good2.png"]
    assert fingerprint["checksum"] == checksum_files(tmp_path / "images", rels)
    fifo.unlink()
    missing = checksum_files(tmp_path / "images", rels)
    assert len({fingerprint["checksum"], missing}) == 2  # "not a regular file" vs "No such file ..."


def test_the_checksum_streams_large_files_in_bounded_memory(tmp_path):
    big = tmp_path / "big.png"
    data = np.random.default_rng(0).integers(0, 256, 24 << 20, dtype=np.uint8).tobytes()
    big.write_bytes(data)
    expected = hashlib.sha256(f"big.png\t{hashlib.sha256(data).hexdigest()}\n".encode()).hexdigest()
    del data
    tracemalloc.start()
    try:
        assert checksum_files(tmp_path, ["big.png"]) == expected
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


def test_checksum_is_stronger_not_different(tmp_path):
    root = split_folder(tmp_path / "data")
    out = tmp_path / "s.json"
    run("stats", root, "-o", out, "--checksum")
    assert "is up to date" in run("stats", root, "-o", out).stdout  # hashed contents satisfy the default check
    run("stats", root, "-o", out, "--force")
    weaker = run("stats", root, "-o", out, "--checksum")
    assert "written without --checksum" in weaker.stderr


# ---------------------------------------------------------------- resolve_source


def test_resolve_source_passes_the_folder_options_to_folders_and_sample(tmp_path):
    folder = make_folder(tmp_path / "images")
    sources = resolve_source(str(folder), follow_symlinks=False, checksum=True), resolve_source("sample", checksum=True)
    for src in sources:
        assert isinstance(src, FolderSource) and src.checksum
        assert "checksum" in src.fingerprint()
    assert not resolve_source(str(folder), follow_symlinks=False).follow_symlinks
    assert resolve_source("sample").fingerprint().keys() == {"files", "bytes", "sha256"}


def test_other_sources_ignore_the_folder_options(tmp_path):
    path = tmp_path / "x-images-idx3-ubyte"
    write_idx_images(path, np.zeros((2, 3, 3), np.uint8))
    src = resolve_source(str(path), follow_symlinks=False, checksum=True)
    assert src.num_images() == 2
    already = FolderSource(str(bmp_folder(tmp_path / "images")))
    assert resolve_source(already, checksum=True) is already


# ---------------------------------------------------------------- the native directory scan


@pytest.mark.parametrize("follow_symlinks", [True, False])
def test_the_native_scan_lists_exactly_what_dir_entries_list(tmp_path, monkeypatch, follow_symlinks):
    """prep.stats.kernels.scan_dir (one native call a directory) and the DirEntry path, and the
    path-based scan where a platform cannot scan descriptors, give one listing, reasons and all."""
    from prep.sources import folder as folder_module
    from prep.stats import kernels

    root = tmp_path / "root"
    good_images(root / "real", 3)
    good_images(tmp_path / "outside", 1)
    (root / "a-b").mkdir()  # sorts before "a/": the walk's order is not the listing's
    Image.new("L", (2, 2)).save(root / "a-b" / "x.png")
    (root / "a").mkdir()
    Image.new("L", (2, 2)).save(root / "a" / "y.png")
    (root / "file.png").symlink_to(root / "real" / "good0.png")
    (root / "out").symlink_to(tmp_path / "outside", target_is_directory=True)
    (root / "broken.png").symlink_to(tmp_path / "missing.png")
    (root / "self.png").symlink_to(root / "self.png")
    (root / "real" / "loop").symlink_to(root, target_is_directory=True)
    os.mkfifo(root / "fifo.png")
    (root / "notes.txt").write_text("x")
    (root / "caf\u00e9.png").write_bytes((root / "real" / "good1.png").read_bytes())
    (root / "b\udcff.png").write_bytes(b"")  # a name that is not UTF-8: surrogate-escaped
    listings = []
    for native, by_fd in ((True, True), (False, True), (False, False)):
        monkeypatch.setattr(kernels, "SCAN_DIR", native and kernels.SCAN_DIR)
        monkeypatch.setattr(folder_module, "_SCAN_BY_FD", by_fd)
        listing = list_images(root, follow_symlinks=follow_symlinks)
        listings.append((listing.images, list(listing.sizes), list(listing.mtimes), listing.skipped))
    assert listings[0] == listings[1] == listings[2]
    images, sizes, mtimes, skipped = listings[0]
    assert images == sorted(images) and images.index("a-b/x.png") < images.index("a/y.png")
    assert sizes == [os.stat(root / name).st_size for name in images]
    assert mtimes == [os.stat(root / name).st_mtime_ns for name in images]
    reasons = dict(skipped)
    assert reasons["fifo.png"] == "not a regular file" and reasons["notes.txt"] == "not an image file extension"
    if follow_symlinks:
        assert "file.png" in images and "out/good0.png" in images
        assert reasons["broken.png"].startswith("broken symlink") and reasons["self.png"].startswith("symlink loop")
        assert reasons["real/loop"].startswith("symlink loop")
    else:
        assert all(reasons[n] == "symlink (not followed)" for n in ("file.png", "out", "broken.png", "self.png"))


def test_a_directory_that_cannot_be_listed_is_a_reason_with_or_without_the_native_scan(tmp_path, monkeypatch):
    from prep.stats import kernels

    if os.geteuid() == 0:
        pytest.skip("root can list directories without read permission")
    good_images(tmp_path / "ok", 1)
    (tmp_path / "closed").mkdir()
    (tmp_path / "closed").chmod(0)
    try:
        first = list_images(tmp_path).skipped
        monkeypatch.setattr(kernels, "SCAN_DIR", False)
        assert list_images(tmp_path).skipped == first
        assert first[0][0] == "closed" and first[0][1].startswith("cannot list directory")
    finally:
        (tmp_path / "closed").chmod(0o755)
