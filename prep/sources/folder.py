"""Image folders: a sorted recursive listing, decoded by workers in chunks of files.

A folder is listed once, deterministically (sorted relative POSIX paths, symlinks followed,
loops detected, as torchvision's ``ImageFolder`` walks it; ``follow_symlinks=False`` passes over
symlinks instead). Its files are decoded and reduced by worker processes (:mod:`prep.engine.workers`),
which open them through a :class:`FolderReader`: a file that became a FIFO or a device after the
listing is skipped as ``cannot read: not a regular file``, never waited on.
"""

from __future__ import annotations

import errno
import os
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prep.errors import SourceError, os_reason
from prep.sources.base import Classes, FileChunk, FirstFolder, FolderReader, TaskSource, chunk_ranges
from prep.sources.fingerprint import checksum_files, fingerprint_listing
from prep.stats import kernels

# torchvision.datasets.folder.IMG_EXTENSIONS, matched case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def has_image_extension(name: str) -> bool:
    return name.lower().endswith(IMG_EXTENSIONS)


NOT_FOLLOWED = "symlink (not followed)"  # the reason of a symlink listed under follow_symlinks=False


@dataclass
class FolderListing:
    """Image files (relative POSIX paths, sorted) and files passed over, with reasons.

    The size and modification time of each image (what the fingerprint hashes) are kept in two
    int64 arrays beside ``images``, 16 bytes a file, not a ``stat`` result each: a million files
    cost the paths and 16 MB."""

    root: Path
    images: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sizes: array = field(default_factory=lambda: array("q"), repr=False)
    mtimes: array = field(default_factory=lambda: array("q"), repr=False)
    follow_symlinks: bool = True

    def fingerprint(self, checksum: bool = False) -> dict:
        """The dataset fingerprint, from the ``stat`` results the listing already made; with
        ``checksum``, also ``"checksum"`` over the images' contents (reads every file)."""
        fingerprint = fingerprint_listing(zip(self.images, self.sizes, self.mtimes))
        if checksum:
            fingerprint["checksum"] = checksum_files(self.root, self.images, follow_symlinks=self.follow_symlinks)
        return fingerprint


def list_images(root: str | os.PathLike, follow_symlinks: bool = True) -> FolderListing:
    """List the image files under ``root`` recursively, detecting loops.

    Symlinks below ``root``, to files or directories, inside ``root`` or outside it, are followed
    as torchvision's ``ImageFolder`` follows them; with ``follow_symlinks=False`` each is listed
    as skipped with the reason ``symlink (not followed)``. ``root`` itself is always followed.
    """
    root = Path(root)
    try:
        top = root.stat()
    except OSError as exc:
        raise SourceError(f"{root}: {os_reason(exc)}") from None
    if not stat.S_ISDIR(top.st_mode):
        raise SourceError(f"{root}: not a directory")
    listing = FolderListing(root, follow_symlinks=follow_symlinks)
    visited = {(top.st_dev, top.st_ino)}
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            fd, entries = _scan(root / rel_dir, follow_symlinks)
        except OSError as exc:
            listing.skipped.append((rel_dir or ".", f"cannot list directory: {os_reason(exc)}"))
            continue
        subdirs = []
        try:
            for name, link, err, mode, size, mtime_ns, dev, ino in entries:
                rel = f"{rel_dir}/{name}" if rel_dir else name
                if not follow_symlinks and link:
                    listing.skipped.append((rel, NOT_FOLLOWED))
                elif err:
                    listing.skipped.append((rel, _stat_failure(link, err)))
                elif stat.S_ISDIR(mode):
                    if (dev, ino) in visited:
                        listing.skipped.append((rel, "symlink loop: directory already visited"))
                    else:
                        visited.add((dev, ino))
                        subdirs.append(rel)
                elif not stat.S_ISREG(mode):
                    listing.skipped.append((rel, "not a regular file"))
                elif has_image_extension(name):
                    listing.images.append(rel)
                    listing.sizes.append(size)
                    listing.mtimes.append(mtime_ns)
                else:
                    listing.skipped.append((rel, "not an image file extension"))
        finally:
            if fd is not None:
                os.close(fd)
        stack.extend(reversed(subdirs))
    if sorted(listing.images) != listing.images:  # the walk's order already is, unless a name sorts before "/"
        order = sorted(range(len(listing.images)), key=listing.images.__getitem__)
        listing.images = [listing.images[i] for i in order]
        listing.sizes = array("q", (listing.sizes[i] for i in order))
        listing.mtimes = array("q", (listing.mtimes[i] for i in order))
    listing.skipped.sort()
    return listing


_SCAN_BY_FD = os.scandir in os.supports_fd and hasattr(os, "O_DIRECTORY")

# what the listing needs of an entry: name, whether it is a symlink, the errno of its stat (0:
# none), and its stat's mode, size, modification time (ns), device and inode
Entry = tuple[str, bool, int, int, int, int, int, int]


def _scan(directory: Path, follow_symlinks: bool) -> tuple[int | None, list[Entry]]:
    """The entries of ``directory`` sorted by name, each stat'ed (symlinks followed with
    ``follow_symlinks``; without it, not stat'ed), and the descriptor they were read from, which
    the caller closes. Each stat is an ``fstatat`` of the entry's name in that descriptor, which
    saves resolving the whole path again; where prep's kernels were built, one native call reads
    and stats the whole directory (:func:`prep.stats.kernels.scan_dir`), with no ``DirEntry``
    or ``stat_result`` object a file. Where the platform cannot scan a descriptor: by path."""
    if not _SCAN_BY_FD:
        with os.scandir(directory) as it:
            return None, sorted(_entry(e, follow_symlinks) for e in it)
    flags = os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(directory, flags)  # non-blocking: a FIFO that took its place is never waited on
    try:
        if kernels.SCAN_DIR:
            return fd, sorted(kernels.scan_dir(fd, follow_symlinks))
        with os.scandir(fd) as it:
            return fd, sorted(_entry(e, follow_symlinks) for e in it)  # stat'ed while fd is open
    except BaseException:
        os.close(fd)
        raise


def _stat_failure(link: bool, err: int) -> str:
    """The reason a file whose stat failed with ``err`` is passed over."""
    reason = ("broken symlink" if err == errno.ENOENT else "symlink loop") if link else "cannot stat"
    return f"{reason}: {os_reason(OSError(err, os.strerror(err)))}"


def _entry(entry: os.DirEntry, follow_symlinks: bool) -> Entry:
    """What the listing needs of ``entry`` (see :data:`Entry`), by its own methods."""
    link = _is_symlink(entry)
    if link and not follow_symlinks:
        return entry.name, True, 0, 0, 0, 0, 0, 0
    try:
        st = entry.stat(follow_symlinks=follow_symlinks)
    except OSError as exc:
        return entry.name, link, exc.errno or errno.EIO, 0, 0, 0, 0, 0
    return entry.name, link, 0, st.st_mode, st.st_size, st.st_mtime_ns, st.st_dev, st.st_ino


def _is_symlink(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a symlink; an entry that vanished or cannot be inspected is not."""
    try:
        return entry.is_symlink()
    except OSError:
        return False


def find_classes(root: str) -> tuple[str, ...]:
    """The classes of ``root`` as torchvision's ``find_classes`` finds them: the names of its
    entries that are directories (symlinks to directories included), sorted."""
    try:
        with os.scandir(root) as entries:
            return tuple(sorted(entry.name for entry in entries if _is_dir(entry)))
    except OSError as exc:
        raise SourceError(f"{root}: {os_reason(exc)}") from None


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


# subfolder names of each split, in the order they are looked for (ImageFolder's per-split layout)
SPLIT_FOLDERS = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


def split_folder(root: str | os.PathLike, split: str) -> Path:
    """The subfolder of ``root`` that holds ``split`` (``train``, ``val``/``valid``/``validation``, ``test``)."""
    names = next((names for names in SPLIT_FOLDERS.values() if split in names), (split,))
    for name in names:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    present = [n for names in SPLIT_FOLDERS.values() for n in names if (Path(root) / n).is_dir()]
    found = f"it has {', '.join(present)}" if present else "it has no train/val/test subfolders"
    raise SourceError(f"{root}: no '{split}' split ({'/'.join(names)} subfolder); {found}")


class FolderSource(TaskSource):
    """A directory of image files, listed on first use; with ``split``, its split subfolder.

    ``follow_symlinks`` (default True, as torchvision's ``ImageFolder``): follow symlinks below
    the folder; when False they are listed as skipped (``symlink (not followed)``) and never
    opened. ``checksum`` (default False): the fingerprint also holds a SHA-256 of every image's
    bytes, so an edit that keeps a file's size and modification time makes stored statistics
    stale too; it reads the whole folder once per source object, and a stats file written
    without it does not match one checked with it (nor the reverse).
    """

    path: str  # always a file or folder here

    kind = "folder"

    def __init__(
        self,
        path: str,
        kind: str = "folder",
        split: str | None = None,
        follow_symlinks: bool = True,
        checksum: bool = False,
    ) -> None:
        super().__init__(path, split)
        self.kind = kind
        self.root = str(split_folder(path, split)) if split else path
        self.follow_symlinks = follow_symlinks
        self.checksum = checksum
        self._listing: FolderListing | None = None
        self._fingerprint: dict | None = None

    @property
    def listing(self) -> FolderListing:
        if self._listing is None:
            self._listing = list_images(self.root, follow_symlinks=self.follow_symlinks)
        return self._listing

    def num_images(self) -> int:
        return len(self.listing.images)

    def fingerprint(self) -> dict:
        """The listing's fingerprint (with the contents' checksum under ``checksum``), made once."""
        if self._fingerprint is None:
            self._fingerprint = self.listing.fingerprint(checksum=self.checksum)
        return dict(self._fingerprint)

    def listed_skipped(self) -> list[tuple[str, str]]:
        return list(self.listing.skipped)

    def classes(self) -> Classes:
        """``ImageFolder``'s classes of the folder (of its split subfolder): its subfolders, sorted."""
        outside = tuple(name for name in self.listing.images if "/" not in name)
        return Classes(find_classes(self.root), FirstFolder(), outside)

    def empty_message(self) -> str:
        return f"no image files found (looked for {', '.join(IMG_EXTENSIONS)})"

    def label(self) -> str:
        name = os.path.basename(os.path.normpath(self.path)) or self.path
        return f"{name} {self.split}" if self.split else name

    sized = True

    def iter_tasks(self, start: int, size: int, max_bytes: int | None = None) -> Iterator[FileChunk]:
        reader = FolderReader(str(self.listing.root), follow_symlinks=self.follow_symlinks)
        images = self.listing.images
        for first, end in chunk_ranges(self.listing.sizes, start, size, max_bytes):
            yield FileChunk(reader, tuple(images[first:end]))
