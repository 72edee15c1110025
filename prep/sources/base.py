"""The source protocol: what every kind of dataset gives the statistics pass.

Every source says what it is (:meth:`Source.describe`), how many images it holds
(:meth:`Source.num_images`), what identifies its data (:meth:`Source.fingerprint`), which mode
keeps its channels (:attr:`Source.native_mode`) and which entries it passed over when listing
(:meth:`Source.listed_skipped`). Then one of two ways of reading, by where decoding happens:

* :class:`BatchSource`: read in the main process; ``iter_batches(start, ...)`` yields CPU
  tensor batches ``(n, C, H, W)`` (uint8, 16-bit integers or float, by :mod:`prep.pixels`'
  rule) from image ``start`` on. idx files, CIFAR pickles and Python datasets.
* :class:`TaskSource`: decoded by worker processes; ``iter_tasks(start, size)`` yields
  picklable :class:`FileChunk` tasks from image ``start`` on, each a :class:`FileReader` (how to
  open a named file, in any process) and the names. Image folders; archives next.

:func:`prep.compute_stats` runs one loop per way, so adding a source is one module here and one
line in :mod:`prep.sources.resolve`.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, BinaryIO

if TYPE_CHECKING:
    import torch


class Source:
    """Common description of a source: what it is, where, which split, and its fingerprint.

    A source is read as a :class:`BatchSource` or a :class:`TaskSource`, abstract base classes: a
    subclass that lacks their ``iter_batches`` or ``iter_tasks`` cannot be instantiated.
    """

    kind: str = ""
    _native_mode: str | None = "RGB"

    def __init__(self, path: str | None, split: str | None = None) -> None:
        self.path = path
        self.split = split

    @property
    def native_mode(self) -> str:
        """The mode images of this source are measured in unless ``mode`` says otherwise."""
        return self._native_mode or "RGB"

    def describe(self) -> dict[str, Any]:
        """``{"kind", "path", "split"}``: what the stats file records under ``source``."""
        return {"kind": self.kind, "path": self.path, "split": self.split}

    def fingerprint(self) -> dict | None:
        """What identifies the data (see :mod:`prep.sources.fingerprint`); None when nothing can."""
        return None

    def num_images(self) -> int | None:
        """The number of images, when known without reading them."""
        return None

    def index_of(self, position: int) -> int:
        """The index in the whole source of this source's image ``position`` (a shard or a sample
        maps its positions back; every other source is the whole)."""
        return position

    def estimated_images(self) -> int | None:
        """The number of images for a progress bar: :meth:`num_images`, or a guess the source
        refines as it is read (CIFAR pickles have no header to count from)."""
        return self.num_images()

    def resume_key(self) -> dict | None:
        """What a checkpoint must match besides the fingerprint, for sources that have none that
        proves identity (a Python dataset); None for the rest."""
        return None

    def listed_skipped(self) -> list[tuple[str, str]]:
        """``(name, reason)`` of entries passed over before any image is read (not images, loops)."""
        return []

    def classes(self) -> Classes | None:
        """The source's classes (``ImageFolder``'s: its first-level subfolders, sorted) and how a
        file's name gives its class; None for a source without classes."""
        return None

    def empty_message(self) -> str:
        """What is wrong when the source holds no images."""
        return "contains no images"

    def label(self) -> str:
        """A short name for progress bars and messages."""
        return self.kind

    def where(self) -> str:
        """What messages name: the path, or the kind when there is none."""
        return self.path or self.kind

    def display(self, name: str) -> str:
        """How messages name the entry ``name`` of this source (a skipped file, say)."""
        return os.path.join(self.where(), name)


class BatchSource(Source, ABC):
    """A source read in the main process as tensor batches."""

    @abstractmethod
    def iter_batches(
        self, start: int, mode: str, pixels_per_batch: int, batch_size: int | None = None
    ) -> Iterator[tuple[torch.Tensor, int]]:
        """Yield ``(batch, images)`` from image ``start`` on: a CPU tensor ``(n, C, H, W)`` and how
        many of the source's images it holds (``n``, or 1 for an item that is itself a batch).

        ``C`` is the source's own channel count or that of ``mode``; the pass converts the rest
        on the device (:func:`prep.pixels.convert_channels`). A batch holds ``batch_size``
        images, or about ``pixels_per_batch`` pixels when ``batch_size`` is None.
        """


class FileReader(ABC):
    """Opens the files of a :class:`TaskSource` by name; picklable, so workers open them themselves."""

    @abstractmethod
    def open(self, name: str) -> IO[bytes]:
        """A binary file object for ``name`` (raises ``OSError`` when it cannot be read)."""

    @abstractmethod
    def display(self, name: str) -> str:
        """How messages name the file ``name`` (a path users can find)."""


SMALL_FILE_BYTES = 4 << 20  # regular files up to this size are read whole when opened


def open_regular(path: str, *, follow_symlinks: bool = True) -> BinaryIO:
    """``path`` opened for binary reading, or ``OSError`` when it is not a regular file.

    The file is opened non-blocking, so a FIFO or device that took an image's place after the
    listing is refused after ``fstat`` (strerror ``not a regular file``) instead of waiting for
    a writer; a regular file is then read normally. With ``follow_symlinks=False`` a symlink as
    the last component is refused (strerror ``symlink (not followed)``). The descriptor is closed
    on every error; the file object's ``name`` is ``path``, as with :func:`open`.

    A file of at most :data:`SMALL_FILE_BYTES` is read whole at once and its descriptor closed:
    the object returned holds its bytes (one ``read`` system call instead of a buffered file's
    several; a folder of small images is opened at the cost of the syscalls alone).
    """
    fd, size = _open_regular_fd(path, follow_symlinks)
    if size > SMALL_FILE_BYTES:
        try:
            fp = open(fd, "rb")  # noqa: SIM115 - the caller closes it
        except BaseException:
            os.close(fd)
            raise
        fp.raw.name = path  # type: ignore[attr-defined]  # as open(path) names it
        return fp
    try:
        data = os.read(fd, size + 1)
        if len(data) != size:  # it changed since fstat, or a short read: on to its end, as read() goes
            rest = [data]
            while chunk := os.read(fd, 1 << 20):
                rest.append(chunk)
            data = b"".join(rest)
    finally:
        os.close(fd)
    return InMemoryFile(data, path)


class InMemoryFile(io.BytesIO):
    """A small file's bytes, read whole (:func:`open_regular`), named by its path."""

    def __init__(self, data: bytes, name: str) -> None:
        super().__init__(data)
        self.name = name

    def __repr__(self) -> str:  # as a file object is named in messages (PIL's "cannot identify image file ...")
        return f"<InMemoryFile name={self.name!r}>"


def _open_regular_fd(path: str, follow_symlinks: bool) -> tuple[int, int]:
    """A blocking descriptor of the regular file ``path`` and its size at ``fstat``."""
    flags = _OPEN_FLAGS
    if not follow_symlinks:
        flags |= _flag("O_NOFOLLOW")
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks and os.path.islink(path):
            raise OSError(errno.ELOOP, "symlink (not followed)", path) from None
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if _flag("O_NONBLOCK"):
            os.set_blocking(fd, True)  # fcntl(F_SETFL) clearing O_NONBLOCK: regular reads from here on
    except BaseException:
        os.close(fd)
        raise
    return fd, info.st_size


def _flag(name: str) -> int:
    """The ``os.O_*`` flag ``name``, or 0 where the platform has none."""
    return getattr(os, name, 0)


_OPEN_FLAGS = os.O_RDONLY | _flag("O_NONBLOCK") | _flag("O_CLOEXEC") | _flag("O_NOCTTY") | _flag("O_BINARY")


@dataclass(frozen=True)
class FolderReader(FileReader):
    """Files below a directory, named by relative POSIX path, opened by :func:`open_regular`.

    With ``follow_symlinks=False`` a file that became a symlink after the listing is refused.
    """

    root: str
    follow_symlinks: bool = True

    def open(self, name: str) -> IO[bytes]:
        return open_regular(os.path.join(self.root, name), follow_symlinks=self.follow_symlinks)

    def display(self, name: str) -> str:
        return os.path.join(self.root, name)


@dataclass(frozen=True)
class FirstFolder:
    """A file's class by ``ImageFolder``'s rule: the first folder of its name after ``prefix``
    (``cats/x.png`` -> ``cats``; ``data.zip:train/cats/x.png`` after ``data.zip:train/``); None
    for a name outside every class folder. Picklable: workers route each file's result by it."""

    prefix: str = ""

    def __call__(self, name: str) -> str | None:
        if not name.startswith(self.prefix):
            return None
        head, sep, _ = name[len(self.prefix) :].partition("/")
        return head if sep and head else None


@dataclass(frozen=True)
class Classes:
    """A source's classes: ``names`` in ``ImageFolder``'s order (``find_classes``: sorted), the
    rule giving a file's class from its name in a :class:`FileChunk`, and the images that lie
    outside every class folder (which ``ImageFolder`` leaves out)."""

    names: tuple[str, ...]
    of: FirstFolder
    outside: tuple[str, ...] = ()


@dataclass(frozen=True)
class FileChunk:
    """A worker's task: the files ``names`` that ``reader`` opens, in order."""

    reader: FileReader
    names: tuple[str, ...]


class TaskSource(Source, ABC):
    """A source decoded by worker processes, one :class:`FileChunk` at a time.

    ``sized`` sources know their files' sizes from the listing: their chunks end at ``max_bytes``
    too, so a folder of thumbnails makes few tasks and one of large photos short ones."""

    sized = False

    @abstractmethod
    def iter_tasks(self, start: int, size: int, max_bytes: int | None = None) -> Iterator[FileChunk]:
        """Yield chunks of up to ``size`` files, from image ``start`` on, in the source's order; in
        a ``sized`` source, a chunk also ends with the file that brings it to ``max_bytes``."""


def chunk_ranges(sizes, start: int, size: int, max_bytes: int | None) -> Iterator[tuple[int, int]]:
    """``(first, end)`` of the chunks of the files ``start:`` whose byte sizes are ``sizes``: each
    at most ``size`` files and ending with the file that brings it to ``max_bytes`` (at least one
    file). One cumulative sum and a binary search per chunk: no per-file Python work."""
    import numpy as np

    count = len(sizes)
    if max_bytes is None:
        yield from ((i, min(i + size, count)) for i in range(start, count, size))
        return
    ends = np.cumsum(np.asarray(sizes, np.int64))
    first = start
    while first < count:
        before = int(ends[first - 1]) if first else 0
        last = int(np.searchsorted(ends, before + max_bytes, side="left"))  # reaches max_bytes
        end = max(first + 1, min(last + 1, first + size, count))
        yield first, end
        first = end
