"""Benchmark prep.compute_stats against what users run today and against the decode floor.

Generates its own data (cached under --data, default ./bench-data, which .gitignore excludes):
  * an MNIST-size idx file (60,000 x 28 x 28),
  * a CIFAR-10-size set of pickles (5 x 10,000 x 3 x 32 x 32),
  * a folder of --images JPEGs (default 3,000) with smooth, textured content, 300-500 px a side.

Measures, as the median of --reps runs each, in one process tree on this machine:
  * naive: the forum loop, DataLoader(<dataset>(transform=ToTensor())) summing per batch
    (batch size 1 for folders, 256 for arrays; num_workers = prep's worker count),
  * floor: PIL open + convert("RGB") only, in the same number of processes (folders);
    one NumPy pass (bincount) over the raw bytes (arrays),
  * prep: prep.compute_stats on the same data (device as given, default auto),
the same folder read other ways (without the covariance, with the PIL decoder, as an
uncompressed tar and a stored zip, with --per-image, a 1% --sample) against the default pass,
what the covariance costs the array passes, how long an up-to-date -o takes (plain and with
--resize/--center-crop, decided without importing torch) against prep show, the MNIST-size pass
while a spinning process keeps every core busy, and the peak memory (main process + the largest
worker, times workers) of prep on the folder at 1x and 4x the images. Prints tables of times
and ratios. With --device cuda (or --only gpu) it also times --gpu-images ImageNet-size JPEGs
(500x375, default 20,000) decoded by PIL in CPU workers and by nvjpeg, in images/s, and the
array passes on CUDA in GB/s. --only npy times a 1 GiB uint8 (N, 3, 256, 256) .npy (--npy8-mib) on
one core in GB/s against a memory read and a 256-bin histogram of the same bytes.

    python scripts/bench.py                   # everything, about 6 minutes on 2 cores
    python scripts/bench.py --only arrays --reps 5
    python scripts/bench.py --only npy        # a 1 GiB uint8 .npy on one core against a read and a histogram
    python scripts/bench.py --only folder --profile   # and the cost of each stage per image
    python scripts/bench.py --only volumes --volumes 20 --volume-shape 256x256x128   # NIfTI CT volumes
    python scripts/bench.py --device cuda             # on a GPU machine: the GPU table as well
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

import prep

# The benchmark uses prep's public API only; the data files are written here from their formats.
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """uint8 (N, H, W) as idx3-ubyte: 00 00 08 03, three big-endian sizes, then the bytes."""
    header = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    path.write_bytes(header + np.ascontiguousarray(images, np.uint8).tobytes())


def write_cifar_batch(path: Path, images: np.ndarray, labels) -> None:
    """uint8 (N, 3, 32, 32) as a CIFAR python batch (protocol 4 stores the array bytes verbatim)."""
    with open(path, "wb") as f:
        pickle.dump({"data": images.reshape(len(images), -1), "labels": list(labels)}, f, protocol=4)


# ------------------------------------------------------------------ data
def make_idx(root: Path) -> Path:
    raw = root / "MNIST" / "raw"
    if not (raw / "t10k-labels-idx1-ubyte").exists():
        raw.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        for prefix, n in (("train", 60_000), ("t10k", 10_000)):  # torchvision's MNIST wants both splits
            digits = (rng.random((n, 28, 28)) ** 6 * 255).astype(np.uint8)  # mostly dark, like MNIST
            write_idx_images(raw / f"{prefix}-images-idx3-ubyte", digits)
            labels = bytes(rng.integers(0, 10, n, dtype=np.uint8))
            (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels)
    return root


def make_cifar(root: Path) -> Path:
    folder = root / CIFAR10_FOLDER
    if not (folder / "test_batch").exists():
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(1)
        for name in (*CIFAR10_TRAIN, "test_batch"):
            write_cifar_batch(
                folder / name,
                rng.integers(0, 256, (10_000, 3, 32, 32), dtype=np.uint8),
                rng.integers(0, 10, 10_000),
            )
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [str(i) for i in range(10)]}, f)
    return root


def _jpeg(args: tuple[Path, int, tuple[int, int] | None]) -> None:
    path, seed, size = args
    rng = np.random.default_rng(seed)
    h, w = size if size is not None else (int(v) for v in rng.integers(300, 501, 2))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.empty((h, w, 3), np.float32)
    for c in range(3):
        fx, fy, phase = [*rng.uniform(0.005, 0.05, 2).tolist(), rng.uniform(0, 6.3)]
        img[..., c] = 128 + 80 * np.sin(x * fx + phase) * np.cos(y * fy)
    for _ in range(6):  # a few solid shapes with edges
        cy, cx, r = rng.integers(0, h), rng.integers(0, w), rng.integers(10, 80)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    img += rng.normal(0, 12, img.shape)  # texture
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def _class_folder(root: Path, name: str, images: int, write, suffix: str, arg) -> Path:
    """``images`` files ``class{i % 10}/img{i}{suffix}`` under ``root/name``, each written by
    ``write((path, i, arg))`` in a pool, once: a marker file says the folder is complete."""
    folder = root / name
    marker = root / f".{folder.name}.complete"
    if not marker.exists():
        for cls in range(10):
            (folder / f"class{cls}").mkdir(parents=True, exist_ok=True)
        jobs = [(folder / f"class{i % 10}" / f"img{i:06d}{suffix}", i, arg) for i in range(images)]
        with multiprocessing.get_context("fork").Pool(default_workers()) as pool:
            pool.map(write, jobs, chunksize=32)
        marker.touch()
    return folder


def make_folder(root: Path, images: int, size: tuple[int, int] | None = None) -> Path:
    """``images`` JPEGs in 10 class folders: 300-500 px a side, or all of ``size`` (H, W)."""
    name = f"jpeg-{images}" if size is None else f"jpeg-{images}-{size[1]}x{size[0]}"
    return _class_folder(root, name, images, _jpeg, ".jpg", size)


def make_folder_4x(root: Path, folder: Path) -> Path:
    """4x the images: four copies of the folder's tree made of hard links (same bytes, new paths)."""
    big = root / f"{folder.name}-x4"
    marker = root / f".{big.name}.complete"
    if not marker.exists():
        for copy in range(4):
            for src in folder.rglob("*.jpg"):
                dst = big / f"copy{copy}" / src.relative_to(folder)
                dst.parent.mkdir(parents=True, exist_ok=True)
                if not dst.exists():
                    os.link(src, dst)
        marker.touch()
    return big


# ------------------------------------------------------------------ measured jobs
def naive_loop(dataset, batch_size: int, workers: int) -> tuple[float, float]:
    """The loop users paste: sum and sum of squares per batch of ToTensor() outputs."""
    import torch

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    total = total_sq = 0.0
    count = 0
    for images, _ in loader:
        total += images.sum(dim=(0, 2, 3))
        total_sq += (images**2).sum(dim=(0, 2, 3))
        count += images.numel() // images.shape[1]
    mean = total / count
    return mean, (total_sq / count - mean**2).sqrt()


def naive_folder(folder: Path, workers: int):
    from torchvision import datasets, transforms

    return naive_loop(datasets.ImageFolder(str(folder), transform=transforms.ToTensor()), 1, workers)


def naive_mnist(root: Path, workers: int):
    from torchvision import datasets, transforms

    return naive_loop(datasets.MNIST(str(root), train=True, transform=transforms.ToTensor()), 256, workers)


def naive_cifar(root: Path, workers: int):
    from torchvision import datasets, transforms

    class Unchecked(datasets.CIFAR10):  # the generated pickles have their own md5 sums
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            self.classes = []

    return naive_loop(Unchecked(str(root), train=True, transform=transforms.ToTensor()), 256, workers)


def _decode(path: str) -> int:
    with Image.open(path) as img:
        return img.convert("RGB").size[0]


def floor_folder(folder: Path, workers: int) -> None:
    files = [str(p) for p in sorted(folder.rglob("*.jpg"))]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        for _ in pool.imap(_decode, files, chunksize=64):
            pass


def _load_only(path: str) -> int:
    """PIL's decode alone: no convert, no copy."""
    with Image.open(path) as img:
        img.load()
        return img.size[0]


def _decode_jpeg(path: str) -> int:
    import torch
    from torchvision.io import decode_jpeg

    torch.set_num_threads(1)
    with open(path, "rb") as f:
        data = torch.frombuffer(bytearray(f.read()), dtype=torch.uint8)
    return int(decode_jpeg(data).shape[-1])


def _png(args: tuple[Path, int, int]) -> None:
    path, seed, side = args
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path)


def make_png_folder(root: Path, images: int, side: int = 32) -> Path:
    """``images`` RGB PNGs of ``side`` x ``side`` in 10 class folders (CIFAR-10 as a folder)."""
    return _class_folder(root, f"png-{images}-{side}", images, _png, ".png", side)


def small_files_table(root: Path, images: int, reps: int, workers: int, dev: str) -> None:
    """Small images, where prep's own per-file work shows: 64x64 JPEGs against decode_jpeg alone
    and 32x32 PNGs against PIL's load() alone, in the same number of processes; and the listing
    and fingerprint of the PNG folder, per file, in the main process."""
    from prep.sources import resolve_source

    jpegs = make_folder(root, images, (64, 64))
    pngs = make_png_folder(root, images)
    for name, folder, pattern, floor_fn, floor_name in (
        (f"{images} JPEGs of 64x64", jpegs, "*.jpg", _decode_jpeg, "decode_jpeg alone"),
        (f"{images} PNGs of 32x32", pngs, "*.png", _load_only, "PIL load() alone"),
    ):
        files = [str(p) for p in sorted(folder.rglob(pattern))]

        def floor(files=files, floor_fn=floor_fn) -> None:
            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for _ in pool.imap(floor_fn, files, chunksize=64):
                    pass

        base, mine = paired(floor, lambda folder=folder: prep.compute_stats(folder, workers=workers, device=dev), reps)
        print(
            f"  {name}: {floor_name} {base:.3f} s, prep {mine:.3f} s ({mine / len(files) * 1e6:.0f} us an image), "
            f"ratio {mine / base:.2f}",
            flush=True,
        )
    listing = timed(lambda: resolve_source(str(pngs)).fingerprint(), reps)
    print(f"  listing and fingerprint of {images} files: {listing / images * 1e6:.1f} us a file", flush=True)


def profile_small(folder: Path, images: int = 4000) -> None:
    """What each stage of the 64x64 JPEG pass costs per image, in one process (us per image):
    the same functions the workers call, each timed alone over ``images`` files, and the rest
    (the loop, the fold, the listing) as the whole pass less the stages."""
    from prep.decode.decoders import reduced_tensor, torchvision_kind, torchvision_pixels
    from prep.sources.base import open_regular

    files = [str(p) for p in sorted(folder.rglob("*.jpg"))][:images]
    stages: dict[str, float] = {}

    def stage(name: str, fn, inputs: list) -> list:
        out = [fn(x) for x in inputs[:200]]  # warms the page cache, the allocator and each kind's check
        start = time.perf_counter()
        out = [fn(x) for x in inputs]
        stages[name] = (time.perf_counter() - start) / len(inputs) * 1e6
        return out

    def read(path: str) -> bytes:
        with open_regular(path) as f:
            return f.read()

    datas = stage("open and read the file", read, files)
    kinds = stage("JPEG header: kind, PIL's view of it", torchvision_kind, datas)
    pixels = stage(
        "decode (torchvision.io)", lambda i: torchvision_pixels(datas[i], kinds[i], "RGB"), range(len(files))
    )
    stage("histogram and cross sums", lambda p: reduced_tensor(p, True), pixels)
    count = len(list(folder.rglob("*.jpg")))
    whole = timed(lambda: prep.compute_stats(folder, workers=0), 3) / count * 1e6
    print("\n| stage, 64x64 JPEGs, one process | us per image |")
    print("|---|---|")
    for name, us in stages.items():
        print(f"| {name} | {us:.1f} |")
    print(f"| the rest: loop, fold, listing, tasks (whole - stages) | {whole - sum(stages.values()):.1f} |")
    print(f"| prep.compute_stats(workers=0), {count} files | {whole:.1f} |", flush=True)


def make_tiny_folder(root: Path, files: int) -> Path:
    """``files`` tiny files (a few bytes each, named like images) in folders of 1,000."""
    folder = root / f"tiny-{files}"
    marker = root / f".{folder.name}.complete"
    if not marker.exists():
        for start in range(0, files, 1000):
            sub = folder / f"d{start // 1000:04d}"
            sub.mkdir(parents=True, exist_ok=True)
            for i in range(start, min(start + 1000, files)):
                (sub / f"img{i:07d}.png").write_bytes(b"x")
        marker.touch()
    return folder


def listing_table(root: Path, files: int, reps: int) -> None:
    """The main process's per-file work on a folder of ``files`` tiny files: listing and
    fingerprint, per file (warm directory cache), and the memory the listing keeps, per file."""
    import gc
    import tracemalloc

    from prep.sources import resolve_source

    folder = make_tiny_folder(root, files)
    seconds = timed(lambda: resolve_source(str(folder)).fingerprint(), reps)
    gc.collect()
    tracemalloc.start()
    source = resolve_source(str(folder))
    source.fingerprint()
    kept, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"  listing and fingerprint of {files} tiny files: {seconds / files * 1e6:.1f} us a file; "
        f"the listing keeps {kept / files:.0f} bytes a file (peak {peak / files:.0f})",
        flush=True,
    )
    del source


def true_floor_folder(folder: Path, workers: int, reps: int, mine) -> tuple[float, str, float]:
    """The faster of PIL's decode alone and torchvision.io's, in ``workers`` processes, each
    timed alternately with ``mine`` (prep's pass): ``(floor, its name, prep's median beside it)``."""
    files = [str(p) for p in sorted(folder.rglob("*.jpg"))]

    def run(fn) -> None:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            for _ in pool.imap(fn, files, chunksize=64):
                pass

    pil, mine_pil = paired(lambda: run(_load_only), mine, reps)
    tv, mine_tv = paired(lambda: run(_decode_jpeg), mine, reps)
    return (
        (pil, "PIL load()", mine_pil) if pil / mine_pil <= tv / mine_tv else (tv, "torchvision.io.decode_jpeg", mine_tv)
    )


def profile_folder(folder: Path, images: int = 300) -> None:
    """What each stage of the folder pass costs per image, in one process (ms per image)."""
    import io

    from prep.stats.moments import ChannelMoments

    files = [str(p) for p in sorted(folder.rglob("*.jpg"))][:images]
    stages: dict[str, float] = {}

    def stage(name: str, fn, inputs: list) -> list:
        out = [fn(x) for x in inputs]  # a first round warms the page cache and the allocator
        start = time.perf_counter()
        out = [fn(x) for x in inputs]
        stages[name] = (time.perf_counter() - start) / len(files) * 1000
        return out

    def read(path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    datas = stage("read (open + read bytes)", read, files)
    decoded = stage("decode (PIL open + convert RGB)", lambda d: Image.open(io.BytesIO(d)).convert("RGB"), datas)
    hists = stage("reduce (PIL histogram)", lambda im: im.histogram(), decoded)
    state = ChannelMoments(3)
    start = time.perf_counter()
    for i in range(0, len(hists), 32):
        state = state.merge(ChannelMoments(3).update_histograms(np.array(hists[i : i + 32]).reshape(-1, 3, 256)))
    stages["fold + merge (accumulator, chunks of 32)"] = (time.perf_counter() - start) / len(files) * 1000
    start = time.perf_counter()
    prep.compute_stats(folder, workers=0)
    whole = (time.perf_counter() - start) / len(list(folder.rglob("*.jpg"))) * 1000
    print(f"\n| stage, {len(files)} benchmark JPEGs, one process | ms per image |")
    print("|---|---|")
    for name, ms in stages.items():
        print(f"| {name} | {ms:.3f} |")
    print(f"| sum of the stages | {sum(stages.values()):.3f} |")
    print(f"| prep.compute_stats(workers=0), whole folder | {whole:.3f} |")
    rest = whole - sum(stages.values())
    print(f"| the rest: listing, tasks, progress (whole - stages; noise when < 0) | {rest:.3f} |")


def floor_idx(root: Path) -> np.ndarray:
    raw = np.memmap(root / "MNIST" / "raw" / "train-images-idx3-ubyte", np.uint8, mode="r", offset=16)
    return np.bincount(raw, minlength=256)


def floor_cifar(root: Path) -> list[np.ndarray]:
    arrays = []
    for name in CIFAR10_TRAIN:  # the floor: unpickle (as any reader must) and one bincount per channel
        with open(root / CIFAR10_FOLDER / name, "rb") as f:
            arrays.append(pickle.load(f)["data"].reshape(-1, 3, 1024))
    return [np.bincount(np.concatenate([a[:, c].ravel() for a in arrays]), minlength=256) for c in range(3)]


def make_archives(root: Path, folder: Path) -> tuple[Path, Path]:
    """The folder's files as an uncompressed tar and a stored (uncompressed) zip, same names."""
    import tarfile
    import zipfile

    tar, zip_ = root / f"{folder.name}.tar", root / f"{folder.name}.zip"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if not tar.exists():
        with tarfile.open(tar, "w") as t:
            for p in files:
                t.add(p, p.relative_to(folder).as_posix())
    if not zip_.exists():
        with zipfile.ZipFile(zip_, "w", zipfile.ZIP_STORED) as z:
            for p in files:
                z.write(p, p.relative_to(folder).as_posix())
    return tar, zip_


def _geotiff(args: tuple[Path, int, int]) -> None:
    import tifffile

    path, size, seed = args
    rng = np.random.default_rng(seed)
    bands = rng.integers(1, 12000, (13, size, size), dtype=np.uint16)
    tifffile.imwrite(path, bands, planarconfig="separate", compression="zlib", tile=(256, 256) if size >= 256 else None)


def make_geotiffs(root: Path, files: int, size: int = 256) -> Path:
    """``files`` 13-band uint16 GeoTIFF-like tiles (planar, deflate) of ``size`` x ``size``."""
    folder = root / f"geotiff-{files}-{size}"
    if not folder.exists():
        part = folder.with_suffix(".part")
        shutil.rmtree(part, ignore_errors=True)
        part.mkdir(parents=True)
        with ProcessPoolExecutor(default_workers()) as pool:
            list(pool.map(_geotiff, [(part / f"t{i:05d}.tif", size, i) for i in range(files)], chunksize=16))
        part.rename(folder)
    return folder


def _tifffile_read(path: str) -> int:
    """tifffile's read of one file in one thread, as each of prep's workers reads it (tifffile's
    default decodes the tiles of one file in a thread per core, which is not the floor of
    several processes each on a core)."""
    import tifffile

    return int(tifffile.imread(path, maxworkers=1).shape[0])


def floor_geotiffs(folder: Path, workers: int) -> None:
    """tifffile's read of every tile alone, in ``workers`` processes."""
    paths = sorted(str(p) for p in folder.iterdir())
    if workers <= 1:
        for p in paths:
            _tifffile_read(p)
        return
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_tifffile_read, paths, chunksize=16))


def bands_table(root: Path, files: int, npy_mib: int, reps: int, workers: int, dev: str) -> None:
    """The bands mode: a folder of 13-band uint16 tiles against tifffile's read alone in the same
    number of processes, and a (N, 13, 256, 256) uint16 .npy in GB/s on one core (with and
    without the covariance) beside a memory read of the same bytes."""
    import torch

    folder = make_geotiffs(root, files)
    floor, mine = paired(
        lambda: floor_geotiffs(folder, workers),
        lambda: prep.compute_stats(folder, workers=workers, device=dev, progress=False),
        reps,
    )
    print(
        f"  geotiff folder, {files} x 13 x 256 x 256 uint16 deflate: tifffile alone {floor:.3f} s, "
        f"prep {mine:.3f} s, ratio {mine / floor:.2f}",
        flush=True,
    )
    path = root / f"bands-{npy_mib}.npy"
    images = max(1, npy_mib * 2**20 // (13 * 256 * 256 * 2))
    if not path.exists():
        array = np.lib.format.open_memmap(path, "w+", np.uint16, (images, 13, 256, 256))
        rng = np.random.default_rng(0)
        for i in range(0, images, 64):
            array[i : i + 64] = rng.integers(0, 12000, array[i : i + 64].shape, dtype=np.uint16)
        array.flush()
        del array
    size = path.stat().st_size
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = np.load(path, mmap_mode="r")
        read = timed(lambda: int(np.asarray(data).sum(dtype=np.uint64) > 0), reps)
        plain = timed(lambda: prep.compute_stats(path, device=dev, covariance=False, progress=False), reps)
        full = timed(lambda: prep.compute_stats(path, device=dev, progress=False), reps)
    finally:
        torch.set_num_threads(threads)
    print(
        f"  uint16 .npy, {size / 2**30:.2f} GiB, one core: memory read (a sum) {size / read / 1e9:.2f} GB/s, "
        f"prep without covariance {size / plain / 1e9:.2f} GB/s, with it {size / full / 1e9:.2f} GB/s",
        flush=True,
    )


NO_KERNELS_SCRIPT = """
import sys, time
import prep
start = time.perf_counter()
prep.compute_stats(sys.argv[1], workers=0, device=sys.argv[2], progress=False)
print(time.perf_counter() - start)
"""


def make_npy8(root: Path, mib: int) -> Path:
    """A uint8 (N, 3, 256, 256) .npy of about ``mib`` MiB of random values (cached)."""
    path = root / f"npy8-{mib}.npy"
    if not path.exists():
        images = max(1, mib * 2**20 // (3 * 256 * 256))
        array = np.lib.format.open_memmap(path.with_suffix(".part.npy"), "w+", np.uint8, (images, 3, 256, 256))
        rng = np.random.default_rng(0)
        for i in range(0, images, 64):
            array[i : i + 64] = rng.integers(0, 256, array[i : i + 64].shape, dtype=np.uint8)
        array.flush()
        del array
        path.with_suffix(".part.npy").rename(path)
    return path


def npy8_table(root: Path, mib: int, reps: int, dev: str) -> None:
    """A uint8 (N, 3, 256, 256) .npy from the page cache on one core (workers=0, one torch thread)
    with every default statistic, in GB/s, beside the limits of the same bytes timed in the same
    run: a memory read (the map summed as uint64 words), a 256-bin histogram by np.bincount (16 MiB
    at a time) and by prep's native histogram kernel (where built); and prep without the kernels
    (PREP_NO_KERNELS=1, in a fresh process: the import is not timed)."""
    import torch

    from prep.stats import kernels

    path = make_npy8(root, mib)
    chunk = 16 << 20

    def mapped() -> np.ndarray:  # a fresh map each time, as prep's pass makes one
        return np.asarray(np.load(path, mmap_mode="r")).reshape(-1)

    def read() -> None:
        flat = mapped()
        int(flat[: flat.size // 8 * 8].view(np.uint64).sum())

    def bincount() -> None:
        flat = mapped()
        for i in range(0, flat.size, chunk):
            np.bincount(flat[i : i + chunk], minlength=256)

    def native() -> None:
        flat = mapped()
        for i in range(0, flat.size, chunk):
            kernels.histogram_interleaved(flat[i : i + chunk].reshape(1, -1))

    def without_kernels() -> float:
        env = {**os.environ, "PREP_NO_KERNELS": "1"}
        out = subprocess.run(
            [sys.executable, "-c", NO_KERNELS_SCRIPT, str(path), dev], env=env, capture_output=True, text=True
        )
        return float(out.stdout.split()[-1])

    size = np.load(path, mmap_mode="r").nbytes  # the array's bytes, without the .npy header
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        read()  # into the page cache
        t_read = timed(read, reps)
        t_bincount = timed(bincount, reps)
        t_native = timed(native, reps) if kernels.AVAILABLE else None
        t_prep = timed(lambda: prep.compute_stats(path, workers=0, device=dev, progress=False), reps)
        t_plain = statistics.median(without_kernels() for _ in range(reps))
    finally:
        torch.set_num_threads(threads)

    def rate(seconds: float | None) -> str:
        return "-" if seconds is None else f"{size / seconds / 1e9:.2f}"

    print(f"\n| uint8 .npy {size / 2**30:.2f} GiB (N, 3, 256, 256), one core, page cache | GB/s |")
    print("|---|---|")
    print(f"| memory read (a sum of the map as uint64) | {rate(t_read)} |")
    print(f"| 256-bin histogram, np.bincount in 16 MiB pieces | {rate(t_bincount)} |")
    print(f"| 256-bin histogram, prep's native kernel | {rate(t_native)} |")
    print(f"| prep, every default statistic (histograms, covariance, per-image std, fingerprint) | {rate(t_prep)} |")
    print(f"| prep without the native kernels (PREP_NO_KERNELS=1) | {rate(t_plain)} |", flush=True)


def paired(base, other, reps: int) -> tuple[float, float]:
    """Medians of ``base`` and ``other`` run alternately, so that the machine's drift between
    runs (5-10% here) falls on both alike."""
    a, b = [], []
    for _ in range(reps):
        a.append(timed(base, 1))
        b.append(timed(other, 1))
    return statistics.median(a), statistics.median(b)


def timed(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# VmHWM, not ru_maxrss, for the main process: Linux carries ru_maxrss across exec, so a child
# of this (large) benchmark process would report the benchmark's own size.
PEAK_SCRIPT = """
import json, resource, sys
import prep
prep.compute_stats(sys.argv[1], workers=int(sys.argv[2]), device=sys.argv[3])
with open("/proc/self/status") as f:
    main = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
worker = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"main_kib": main, "worker_kib": worker}))
"""


def peak_memory_mib(folder: Path, workers: int, device: str) -> tuple[float, float]:
    """Peak RSS of the main process and of the largest worker, in MiB (fresh process each time)."""
    out = subprocess.run(
        [sys.executable, "-c", PEAK_SCRIPT, str(folder), str(workers), device],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rss = json.loads(out.strip().splitlines()[-1])
    return rss["main_kib"] / 1024, rss["worker_kib"] / 1024


def make_volumes(root: Path, count: int, shape: tuple[int, int, int]) -> Path:
    """``count`` CT-like int16 ``.nii.gz`` volumes of ``shape`` (air, a noisy body, bone), made once."""
    import nibabel

    folder = root / f"volumes-{count}x{'x'.join(map(str, shape))}"
    if folder.is_dir() and len(list(folder.glob("*.nii.gz"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    x, y = np.meshgrid(np.linspace(-1, 1, shape[0]), np.linspace(-1, 1, shape[1]), indexing="ij")
    body = (x**2 + y**2 < 0.7)[..., None].repeat(shape[2], axis=2)
    for k in range(count):
        hu = np.full(shape, -1024, np.int16)
        hu[body] = rng.normal(40, 30, int(body.sum())).astype(np.int16)
        hu[(np.abs(x) < 0.08)[..., None].repeat(shape[2], axis=2) & body] = 1200
        nibabel.save(nibabel.Nifti1Image(hu, np.eye(4)), folder / f"ct_{k:03d}.nii.gz")
    return folder


NIBABEL_SCRIPT = """
import json, resource, sys
from pathlib import Path
import nibabel, numpy
for path in sorted(Path(sys.argv[1]).glob("*.nii.gz")):
    numpy.asanyarray(nibabel.load(path).dataobj).sum()
with open("/proc/self/status") as f:
    main = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
print(json.dumps({"main_kib": main, "worker_kib": 0}))
"""


def volumes_table(data: Path, count: int, shape: tuple[int, int, int], reps: int, workers: int) -> None:
    """Seconds and peak memory of prep stats over ``count`` CT-like .nii.gz volumes against
    nibabel loading the same files alone (``np.asanyarray(img.dataobj)``: the stored int16)."""
    import nibabel

    folder = make_volumes(data, count, shape)
    files = sorted(folder.glob("*.nii.gz"))
    load = timed(lambda: [np.asanyarray(nibabel.load(p).dataobj).sum() for p in files], reps)
    mine = timed(lambda: prep.compute_stats(folder, workers=workers), reps)
    mine_1 = timed(lambda: prep.compute_stats(folder, workers=0), reps)
    rss = json.loads(
        subprocess.run(
            [sys.executable, "-c", NIBABEL_SCRIPT, str(folder)], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    main_mib, worker_mib = peak_memory_mib(folder, workers, "cpu")
    main_0, _ = peak_memory_mib(folder, 0, "cpu")
    print(f"\n| {count} CT volumes {'x'.join(map(str, shape))} int16 .nii.gz | seconds | peak RSS (MiB) |")
    print("|---|---|---|")
    print(f"| nibabel load alone (1 process) | {load:.3f} | {rss['main_kib'] / 1024:.0f} |")
    print(f"| prep stats, in-process | {mine_1:.3f} | {main_0:.0f} |")
    print(f"| prep stats, {workers} workers | {mine:.3f} | {main_mib:.0f} + {worker_mib:.0f} per worker |", flush=True)


def gpu_table(data: Path, images: int, reps: int, workers: int) -> None:
    """Images per second on ImageNet-size JPEGs (500x375), CPU decoding against nvjpeg, and the
    array passes on CUDA in GB/s of pixels (with a 2 GiB uint8 tensor already on the GPU)."""
    import torch

    from prep.stats.moments import ChannelMoments

    if not torch.cuda.is_available():
        print("\n(no CUDA GPU here: the GPU table needs one)", flush=True)
        return
    folder = make_folder(data, images, size=(375, 500))
    print(f"\n| {images} JPEG 500x375, {torch.cuda.get_device_name()} | prep (s) | images/s |")
    print("|---|---|---|")
    for label, options in (
        (f"PIL in {workers} CPU workers", {"decoder": "pil"}),
        ("nvjpeg on the GPU (--decoder torchvision)", {"decoder": "torchvision"}),
    ):
        t = timed(lambda options=options: prep.compute_stats(folder, workers=workers, device="cuda", **options), reps)
        print(f"| {label} | {t:.3f} | {images / t:,.0f} |", flush=True)
    root = make_cifar(make_idx(data))
    print("\n| arrays on CUDA | prep (s) | GB/s of pixels |")
    print("|---|---|---|")
    for name, nbytes in (("mnist", 60_000 * 784), ("cifar10", 50_000 * 3072)):
        t = timed(lambda name=name: prep.compute_stats(name, root=root, device="cuda"), reps)
        print(f"| {name} files | {t:.3f} | {nbytes / t / 1e9:.2f} |", flush=True)
    batch = torch.randint(0, 256, (14_000, 3, 224, 224), dtype=torch.uint8, device="cuda")  # 2.0 GiB

    def reduce_on_gpu() -> None:
        ChannelMoments(3).update(batch)
        torch.cuda.synchronize()

    reduce_on_gpu()
    t = timed(reduce_on_gpu, reps)
    print(f"| uint8 tensor on the GPU, {batch.numel() / 2**30:.1f} GiB | {t:.3f} | {batch.numel() / t / 1e9:.1f} |")


# ------------------------------------------------------------------ main
def _cli_seconds(*args: str) -> float:
    """Wall seconds of one ``prep`` command in a fresh interpreter (imports included, as a user waits)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "prep", *args], check=True, capture_output=True, timeout=600)
    return time.perf_counter() - start


REUSE_CASES = {  # an up-to-date -o: plain, and measured after --resize/--center-crop (described without torch)
    "plain": (),
    "--resize 256 --center-crop 224": ("--resize", "256", "--center-crop", "224"),
}


def reuse_table(folder: Path, reps: int) -> None:
    import tempfile

    print("\n| up-to-date -o | options | full pass (s) | reuse (s) | prep show (s) | reuse / show |")
    print("|---|---|---|---|---|---|")
    for name, options in REUSE_CASES.items():
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "f.json")
            full = _cli_seconds("stats", str(folder), "-o", out, "-q", *options)
            reuse = statistics.median(
                _cli_seconds("stats", str(folder), "-o", out, "-q", *options) for _ in range(reps)
            )
            show = statistics.median(_cli_seconds("show", out) for _ in range(reps))
        print(f"| {folder.name} | {name} | {full:.2f} | {reuse:.2f} | {show:.2f} | {reuse / show:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decoder", default="auto", help="prep's --decoder for the folder passes (default auto)")
    parser.add_argument(
        "--gpu-images", type=int, default=20_000, help="ImageNet-size JPEGs for the GPU table (default 20,000)"
    )
    parser.add_argument("--volumes", type=int, default=20, help="CT-like .nii.gz volumes for --only volumes")
    parser.add_argument("--volume-shape", default="256x256x128", help="their shape, XxYxZ (default 256x256x128)")
    parser.add_argument(
        "--only",
        choices=[
            *("folder", "arrays", "npy", "memory", "variants", "contention", "reuse", "gpu", "bands", "volumes"),
            *("small", "listing"),
        ],
        action="append",
    )
    parser.add_argument("--profile", action="store_true", help="also print the cost of each stage per image")
    parser.add_argument("--geotiffs", type=int, default=1000, help="13-band tiles of --only bands (default 1000)")
    parser.add_argument("--small-images", type=int, default=20000, help="files of each --only small folder")
    parser.add_argument("--listing-files", type=int, default=200_000, help="tiny files of --only listing")
    parser.add_argument("--npy-mib", type=int, default=1024, help="size of --only bands' uint16 .npy (default 1 GiB)")
    parser.add_argument("--npy8-mib", type=int, default=1024, help="size of --only npy's uint8 .npy (default 1 GiB)")
    args = parser.parse_args()
    parts = set(args.only or ["folder", "arrays", "memory", "variants", "contention", "reuse"])
    args.data.mkdir(parents=True, exist_ok=True)
    w, reps, dev, decoder = args.workers, args.reps, args.device, args.decoder
    import torch

    if dev == "cuda" and not args.only:
        parts.add("gpu")
    print(
        f"# prep {prep.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, workers={w}, "
        f"device={dev} (CUDA available: {torch.cuda.is_available()}), median of {reps}",
        flush=True,
    )
    rows = []

    def row(name: str, naive: float, floor: float, mine: float) -> None:
        rows.append((name, naive, floor, mine))
        print(f"  measured {name}: naive {naive:.3f} s, floor {floor:.3f} s, prep {mine:.3f} s", flush=True)

    if "small" in parts:
        small_files_table(args.data, args.small_images, reps, w, dev)
        if args.profile:
            profile_small(make_folder(args.data, args.small_images, (64, 64)))
    if "listing" in parts:
        listing_table(args.data, args.listing_files, reps)
    if "npy" in parts:
        npy8_table(args.data, args.npy8_mib, reps, dev)
    if "bands" in parts:
        bands_table(args.data, args.geotiffs, args.npy_mib, reps, w, dev)
    if "folder" in parts:
        folder = make_folder(args.data, args.images)
        row(
            *(
                f"folder, {args.images} JPEG 300-500px",
                timed(lambda: naive_folder(folder, w), reps),
                timed(lambda: floor_folder(folder, w), reps),
                timed(lambda: prep.compute_stats(folder, workers=w, device=dev, decoder=decoder), reps),
            )
        )
    if "arrays" in parts:
        root = make_cifar(make_idx(args.data))
        row(
            *(
                "MNIST idx, 60000x28x28",
                timed(lambda: naive_mnist(root, w), reps),
                timed(lambda: floor_idx(root), reps),
                timed(lambda: prep.compute_stats("mnist", root=root, device=dev), reps),
            )
        )
        row(
            *(
                "CIFAR-10 pickles, 50000x3x32x32",
                timed(lambda: naive_cifar(root, w), reps),
                timed(lambda: floor_cifar(root), reps),
                timed(lambda: prep.compute_stats("cifar10", root=root, device=dev), reps),
            )
        )
    if rows:
        print("\n| data | naive (s) | floor (s) | prep (s) | naive/prep | prep/floor |")
        print("|---|---|---|---|---|---|")
        for name, naive, floor, mine in rows:
            print(f"| {name} | {naive:.3f} | {floor:.3f} | {mine:.3f} | {naive / mine:.1f}x | {mine / floor:.2f} |")
    if "arrays" in parts:  # what the covariance (on by default) costs the array passes
        root = make_cifar(make_idx(args.data))
        print("\n| arrays | prep (s) | --no-covariance (s) | ratio |")
        print("|---|---|---|---|")
        for name in ("mnist", "cifar10"):
            with_cov = timed(lambda name=name: prep.compute_stats(name, root=root, device=dev), reps)
            without = timed(lambda name=name: prep.compute_stats(name, root=root, device=dev, covariance=False), reps)
            print(f"| {name} | {with_cov:.3f} | {without:.3f} | {with_cov / without:.2f} |", flush=True)
    if "folder" in parts:
        folder = make_folder(args.data, args.images)
        floor, how, mine = true_floor_folder(
            folder, w, reps, lambda: prep.compute_stats(folder, workers=w, device=dev, decoder=decoder)
        )
        print(
            f"\ntrue decode floor (the faster of PIL load() and decode_jpeg, {w} processes, each run "
            f"alternately with prep): {floor:.3f} s ({how}); prep beside it {mine:.3f} s; prep / true floor: "
            f"{mine / floor:.2f}",
            flush=True,
        )
    if args.profile:
        profile_folder(make_folder(args.data, args.images))
    if "reuse" in parts:  # an up-to-date -o decided without importing torch, against prep show
        reuse_table(make_folder(args.data, args.images), reps)
    if "variants" in parts:  # the same folder read other ways, against the plain folder pass
        import tempfile

        folder = make_folder(args.data, args.images)
        tar, zip_ = make_archives(args.data, folder)
        with tempfile.TemporaryDirectory() as tmp:

            def base() -> None:
                prep.compute_stats(folder, workers=w, device=dev)

            variants = [
                (
                    "folder, --no-covariance",
                    lambda: prep.compute_stats(folder, workers=w, device=dev, covariance=False),
                ),
                ("folder, --decoder pil", lambda: prep.compute_stats(folder, workers=w, device=dev, decoder="pil")),
                (
                    "folder, --decoder pil --no-covariance",
                    lambda: prep.compute_stats(folder, workers=w, device=dev, decoder="pil", covariance=False),
                ),
                ("uncompressed tar of the folder", lambda: prep.compute_stats(tar, workers=w, device=dev)),
                ("stored zip of the folder", lambda: prep.compute_stats(zip_, workers=w, device=dev)),
                (
                    "folder with --per-image",
                    lambda: prep.compute_stats(folder, workers=w, device=dev, per_image=os.path.join(tmp, "r.csv")),
                ),
                ("folder, --sample 1%", lambda: prep.compute_stats(folder, workers=w, device=dev, sample=0.01)),
            ]
            print(f"\n| {args.images} JPEG, run alternately with the default | default (s) | this (s) | ratio |")
            print("|---|---|---|---|")
            for name, fn in variants:
                b, t = paired(base, fn, reps)
                print(f"| {name} | {b:.3f} | {t:.3f} | {t / b:.2f} |", flush=True)
    if "contention" in parts:  # the array pass while other processes keep every core busy
        root = make_idx(args.data)
        quiet = timed(lambda: prep.compute_stats("mnist", root=root, device=dev), reps)
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 1)]
        try:
            time.sleep(0.5)
            busy = timed(lambda: prep.compute_stats("mnist", root=root, device=dev), reps)
        finally:
            for hog in hogs:
                hog.kill()
        print("\n| MNIST idx, 60000x28x28 | quiet (s) | every core busy (s) | busy/quiet |")
        print("|---|---|---|---|")
        print(f"| prep | {quiet:.3f} | {busy:.3f} | {busy / quiet:.2f} |", flush=True)
    if "gpu" in parts:
        gpu_table(args.data, args.gpu_images, reps, w)
    if "volumes" in parts:  # asked for by name (nibabel is prep[medical]'s)
        shape = tuple(int(n) for n in args.volume_shape.lower().split("x"))
        volumes_table(args.data, args.volumes, shape, reps, w)  # type: ignore[arg-type]
    if "memory" in parts:
        folder = make_folder(args.data, args.images)
        big = make_folder_4x(args.data, folder)
        print(f"\n| peak RSS, folder | images | main (MiB) | largest worker (MiB) | main + {w} workers (MiB) |")
        print("|---|---|---|---|---|")
        totals = []
        for scale, path in (("1x", folder), ("4x", big)):
            runs = [peak_memory_mib(path, w, dev) for _ in range(reps)]
            main_mib = statistics.median(r[0] for r in runs)
            worker_mib = statistics.median(r[1] for r in runs)
            totals.append(main_mib + w * worker_mib)
            images = args.images * (4 if scale == "4x" else 1)
            print(f"| {scale} | {images} | {main_mib:.0f} | {worker_mib:.0f} | {totals[-1]:.0f} |")
        print(
            f"\npeak memory 4x/1x: {totals[1] / totals[0]:.3f} (worker RSS includes the shared pages of "
            "torch's libraries inherited through fork)"
        )


if __name__ == "__main__":
    main()
