"""Image folders: a sorted recursive listing, and the per-worker reduction of image files.

A folder is listed once, deterministically (sorted relative POSIX paths, symlinks followed,
loops detected). Files are decoded by worker processes; each worker reduces its files to a
:class:`~prep.accumulator.ChannelMoments` state and returns only that, so pixels never cross
a process boundary. 8-bit images are reduced by PIL's own ``histogram()`` of the converted
image, which is exact and costs a fraction of the decode.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..accumulator import ChannelMoments
from ..errors import BadImageError, SourceError, os_reason
from ..pixels import CHANNELS, eight_bit_histogram, is_eight_bit, stack_histograms, to_array
from .fingerprint import fingerprint_listing

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


@dataclass
class FolderListing:
    """Image files (relative POSIX paths, sorted) and files passed over, with reasons."""

    root: Path
    images: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, os.stat_result] = field(default_factory=dict, repr=False)

    def fingerprint(self) -> dict:
        """The dataset fingerprint, from the ``stat`` results the listing already made."""
        return fingerprint_listing((rel, self.stats[rel]) for rel in self.images)


def list_images(root: str | os.PathLike) -> FolderListing:
    """List the image files under ``root`` recursively, following symlinks, detecting loops."""
    root = Path(root)
    try:
        top = root.stat()
    except OSError as exc:
        raise SourceError(f"{root}: {os_reason(exc)}") from None
    if not stat.S_ISDIR(top.st_mode):
        raise SourceError(f"{root}: not a directory")
    listing = FolderListing(root)
    visited = {(top.st_dev, top.st_ino)}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            entries = sorted(os.scandir(root / rel_dir), key=lambda e: e.name)
        except OSError as exc:
            listing.skipped.append((rel_dir or ".", f"cannot list directory: {os_reason(exc)}"))
            continue
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                st = entry.stat()  # follows symlinks
            except OSError as exc:
                reason = "symlink loop" if entry.is_symlink() else "cannot stat"
                listing.skipped.append((rel, f"{reason}: {os_reason(exc)}"))
                continue
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in visited:
                    listing.skipped.append((rel, "symlink loop: directory already visited"))
                else:
                    visited.add(key)
                    subdirs.append(rel)
            elif not stat.S_ISREG(st.st_mode):
                listing.skipped.append((rel, "not a regular file"))
            elif has_image_extension(entry.name):
                listing.images.append(rel)
                listing.stats[rel] = st
            else:
                listing.skipped.append((rel, "not an image file extension"))
        stack.extend(reversed(subdirs))
    listing.images.sort()
    listing.skipped.sort()
    return listing


def reduce_files(root: str, relpaths: list[str], mode: str, strict: bool) -> tuple[ChannelMoments, list]:
    """Decode ``relpaths`` under ``root`` and reduce them to one state; runs inside a worker.

    Returns the state and the ``(relpath, reason)`` of files that could not be decoded, or,
    with ``strict``, raises :class:`BadImageError` at the first such file.
    """
    acc = ChannelMoments(CHANNELS[mode])
    histograms: list[list[int]] = []  # PIL's flat per-image histograms, converted once per chunk
    skipped = []
    for rel in relpaths:
        path = os.path.join(root, rel)
        try:
            with Image.open(path) as img:
                if is_eight_bit(img):
                    histograms.append(eight_bit_histogram(img, mode))
                else:
                    acc.update_array(*to_array(img, mode))
        except Exception as exc:  # PIL raises many types for bad files; all mean "not decodable"
            reason = _describe(exc)
            if strict:
                raise BadImageError(f"{path}: {reason}") from None
            skipped.append((rel, reason))
    if histograms:
        acc.update_histograms(stack_histograms(histograms, mode))
    return acc, skipped


def _describe(exc: Exception) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read: {exc.strerror}"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"cannot decode: {type(exc).__name__}{': ' + text if text else ''}"
