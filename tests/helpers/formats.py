"""Writers of the real on-disk formats (idx, idx.gz, CIFAR pickles, image files), written here from
the format specifications rather than by prep, and damaged copies of them."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """(N, H, W) uint8 images as an idx3-ubyte file: 00 00 08 03, three big-endian sizes, the bytes
    (gzip-compressed when the name ends in .gz)."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", *images.shape)
    data = header + images.tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


def write_cifar_batch(
    path: Path, images: np.ndarray, labels, label_key: str = "labels", byte_keys: bool = True, protocol: int = 2
) -> None:
    """uint8 (N, 3, 32, 32) images as a CIFAR python batch: a pickled dict with data (N, 3072)."""
    entry = {"data": np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1), label_key: list(labels)}
    if byte_keys:
        entry = {k.encode(): v for k, v in entry.items()}
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=protocol)


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    labels = np.asarray(labels, np.uint8)
    path.write_bytes(bytes([0, 0, 8, 1]) + len(labels).to_bytes(4, "big") + labels.tobytes())


def make_mnist(
    root: Path, folder: str = "MNIST", n_train: int = 300, n_test: int = 70, gz: bool = False, seed: int = 0
) -> dict[str, np.ndarray]:
    """MNIST-format images in torchvision's layout ROOT/<folder>/raw/, with label files."""
    rng = np.random.default_rng(seed)
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, prefix, n in (("train", "train", n_train), ("test", "t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[:, :4] = 0  # realistic: dark borders, many zero pixels
        suffix = ".gz" if gz else ""
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", rng.integers(0, 10, n))
        out[split] = images
    return out


def make_cifar10(root: Path, per_batch: int = 40, byte_keys: bool = False, seed: int = 1) -> dict[str, np.ndarray]:
    """CIFAR-10 python pickles (5 train batches + test) with batches.meta, as torchvision expects."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    train = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        images = rng.integers(0, 256, (per_batch, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / name, images, rng.integers(0, 10, per_batch), byte_keys=byte_keys)
        if name != "test_batch":
            train.append(images)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)
    return {"train": np.concatenate(train), "test": images}


def make_cifar100(root: Path, n: int = 50, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split in ("train", "test"):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        write_cifar_batch(folder / split, images, rng.integers(0, 100, n), label_key="fine_labels", byte_keys=False)
        out[split] = images
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, f)
    return out


def make_folder(root: Path, n_per_class: int = 6, seed: int = 3) -> Path:
    """Class subfolders of real PNG/JPEG/BMP/TIFF files in several PIL modes and sizes."""
    rng = np.random.default_rng(seed)
    formats = [
        ("png", "RGB"),
        ("jpg", "RGB"),
        ("png", "L"),
        ("png", "P"),
        ("bmp", "RGB"),
        ("png", "RGBA"),
        ("tiff", "RGB"),
        ("JPEG", "L"),
    ]
    for label in ("ants", "bees"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            h, w = int(rng.integers(8, 40)), int(rng.integers(8, 40))
            ext, mode = formats[(i + (label == "bees")) % len(formats)]
            img = Image.fromarray(rng.integers(0, 256, (h, w, 4 if mode == "RGBA" else 3), dtype=np.uint8))
            img = img.convert(mode) if mode != "RGBA" else img
            img.save(root / label / f"{label}{i}.{ext}")
    return root


# ImageFolder classes of different brightness: (low, high) of each class's uniform raw values
CLASS_LEVELS = {"birds": (60, 200), "cats": (70, 210), "dogs": (50, 190), "night": (0, 40)}


def make_class_folder(root: Path, n_per_class: int = 5, seed: int = 5) -> dict[str, list[Path]]:
    """``root/<class>/`` PNG files of the :data:`CLASS_LEVELS` classes (RGB, one grey per class,
    sizes differ), an undecodable ``dogs/broken.png``, a text file, and an empty class folder
    ``zebras``; returns each class's decodable files."""
    rng = np.random.default_rng(seed)
    files: dict[str, list[Path]] = {}
    for label, (low, high) in CLASS_LEVELS.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        files[label] = []
        for i in range(n_per_class):
            h, w = int(rng.integers(5, 20)), int(rng.integers(5, 20))
            img = Image.fromarray(rng.integers(low, high + 1, (h, w, 3), dtype=np.uint8))
            path = root / label / f"{label}{i}.png"
            (img.convert("L") if i == 1 else img).save(path)
            files[label].append(path)
    (root / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "cats" / "notes.txt").write_text("not an image")
    (root / "zebras").mkdir()
    return files


def good_images(folder: Path, n: int = 4) -> list[Path]:
    """``n`` small random RGB PNG files in ``folder``."""
    rng = np.random.default_rng(11)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"good{i}.png"
        Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def jpeg_bytes() -> bytes:
    """A valid 64x64 RGB JPEG file's bytes."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int | None) -> bytes:
    """``data`` with bytes overwritten at ``flips`` (position modulo length, value) and cut at ``cut``."""
    buf = bytearray(data)
    for pos, val in flips:
        if buf:
            buf[pos % len(buf)] = val
    return bytes(buf[:cut] if cut is not None else buf)


def split_folder(root: Path) -> Path:
    """``root`` with train/, valid/ and test/ folders of 3, 2 and 1 small PNG files."""
    rng = np.random.default_rng(9)
    for split, n in (("train", 3), ("valid", 2), ("test", 1)):
        (root / split / "cls").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)).save(root / split / "cls" / f"{i}.png")
    return root


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth colour content with noise: what JPEG subsampling and IDCT rounding act on."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w, 1), y * 255 / max(h, 1), (x + y) * 127 / max(h + w, 1)], -1)
    return np.clip(base + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)


JPEG_KINDS = {  # name -> (PIL mode, save options)
    "420": ("RGB", {"subsampling": 2, "quality": 90}),
    "422": ("RGB", {"subsampling": 1, "quality": 85}),
    "444": ("RGB", {"subsampling": 0, "quality": 95}),
    "progressive": ("RGB", {"progressive": True, "quality": 80}),
    "progressive444": ("RGB", {"progressive": True, "subsampling": 0}),
    "optimized": ("RGB", {"optimize": True, "quality": 70}),
    "grey": ("L", {"quality": 90}),
    "grey-progressive": ("L", {"progressive": True}),
    "cmyk": ("CMYK", {"quality": 90}),
}
PNG_KINDS = ("RGB", "L", "RGBA", "LA", "P", "P-transparent", "RGB-transparent", "1", "I;16")


def write_kinds(folder: Path, sizes=((37, 23), (64, 48), (1, 1))) -> dict[str, Path]:
    """One file per JPEG and PNG kind (and BMP, GIF, TIFF), in several sizes, odd ones included."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, (h, w) in enumerate(sizes):
        rgb = Image.fromarray(_picture(h, w, k))
        for name, (mode, options) in JPEG_KINDS.items():
            path = folder / f"{name}-{k}.jpg"
            rgb.convert(mode).save(path, "JPEG", **options)
            paths[f"{name}-{k}"] = path
        for name in PNG_KINDS:
            path = folder / f"png-{name}-{k}.png"
            if name == "RGBA":
                alpha = Image.fromarray(np.random.default_rng(k).integers(0, 256, (h, w), dtype=np.uint8))
                img = rgb.copy()
                img.putalpha(alpha)
                img.save(path)
            elif name == "LA":
                rgb.convert("LA").save(path)
            elif name == "P-transparent":
                rgb.convert("P").save(path, transparency=3)
            elif name == "RGB-transparent":
                rgb.save(path, transparency=(10, 20, 30))
            elif name == "I;16":
                Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257).save(path)
            else:
                rgb.convert(name).save(path)
            paths[f"png-{name}-{k}"] = path
        for ext in ("bmp", "gif", "tiff"):
            path = folder / f"other-{k}.{ext}"
            rgb.save(path)
            paths[f"{ext}-{k}"] = path
    return paths
