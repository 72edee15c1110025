"""Readers of archive members, picklable, so each worker opens the archive itself.

A chunk's reader carries only that chunk's members (a name and where the member is), so sending
a task costs the same whatever the archive's size:

* :class:`TarMemberReader`: an uncompressed tar; a member is a window of the file at the data
  offset the listing recorded, read with one seek (no rescan of headers); a small member is
  read whole with one ``pread`` on a descriptor each process keeps open (as it keeps zips);
* :class:`ZipMemberReader`: a zip; each process opens the archive once (its central directory
  is read once per process, not per member) and ``ZipFile.open`` decompresses a member as it is
  read (a member of at most 4 MiB whole, at once). ``zipfile`` never returns more than a
  member's declared size, so a member declared tiny that inflates to gigabytes yields its
  declared size, and an image whose header declares a huge size meets PIL's own
  decompression-bomb limit, as in a folder;
* :class:`InlineReader`: members of a compressed tar, whose bytes the main process read from the
  stream (the only way through gzip is front to back, once).
"""

from __future__ import annotations

import errno
import io
import os
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import IO

from prep.sources import base
from prep.sources.base import FileReader, InMemoryFile, open_regular

ZIPS_OPEN = 4  # zip files a process keeps open (several zip shards read in turn)
_zips: OrderedDict[tuple[int, str, int, int], zipfile.ZipFile] = OrderedDict()
_tars: OrderedDict[tuple[int, str, int, int], int] = OrderedDict()  # the same, descriptors of tars


def _member(index: dict[str, tuple], name: str) -> tuple:
    try:
        return index[name]
    except KeyError:
        raise OSError(errno.ENOENT, "no such member", name) from None


def _display(archive: str, name: str) -> str:
    """``name`` is ``<archive file name>:<member>``; messages give the archive's whole path."""
    return os.path.join(os.path.dirname(archive), name)


@dataclass(frozen=True)
class TarMemberReader(FileReader):
    """Members of the uncompressed tar ``archive``: ``(name, data offset, size)`` each."""

    archive: str
    members: tuple[tuple[str, int, int], ...]

    @cached_property
    def _index(self) -> dict[str, tuple[str, int, int]]:  # built where the reader is used, once
        return {member[0]: member for member in reversed(self.members)}  # the first of a name, as a search would find

    def open(self, name: str) -> IO[bytes]:
        _, offset, size = _member(self._index, name)
        if size <= base.SMALL_FILE_BYTES and hasattr(os, "pread"):
            return InMemoryFile(os.pread(_tar_descriptor(self.archive), size, offset), self.display(name))
        return io.BufferedReader(_Window(open_regular(self.archive), offset, size))

    def display(self, name: str) -> str:
        return _display(self.archive, name)


@dataclass(frozen=True)
class ZipMemberReader(FileReader):
    """Members of the zip ``archive``: ``(name, name in the archive)`` each."""

    archive: str
    members: tuple[tuple[str, str], ...]

    @cached_property
    def _index(self) -> dict[str, tuple[str, str]]:
        return {member[0]: member for member in reversed(self.members)}  # the first of a name, as a search would find

    def open(self, name: str) -> IO[bytes]:
        _, raw = _member(self._index, name)
        archive = _open_zip(self.archive)
        info = archive.getinfo(raw)
        if info.file_size > base.SMALL_FILE_BYTES:
            return archive.open(info)
        with archive.open(info) as member:  # read whole at once (at most its declared size), so the
            return InMemoryFile(member.read(), self.display(name))  # image's parser reads bytes, not zipfile

    def display(self, name: str) -> str:
        return _display(self.archive, name)


@dataclass(frozen=True)
class InlineReader(FileReader):
    """Members of the compressed tar ``archive``, carried as ``(name, bytes)``."""

    archive: str
    members: tuple[tuple[str, bytes], ...]

    @cached_property
    def _index(self) -> dict[str, tuple[str, bytes]]:
        return {member[0]: member for member in reversed(self.members)}  # the first of a name, as a search would find

    def open(self, name: str) -> IO[bytes]:
        return io.BytesIO(_member(self._index, name)[1])

    def display(self, name: str) -> str:
        return _display(self.archive, name)


def _open_zip(archive: str) -> zipfile.ZipFile:
    """This process's open ``ZipFile`` of ``archive`` (reopened when the file was replaced; a
    process forked from one holding it opens its own, so no file offset is shared)."""
    st = os.stat(archive)
    key = (os.getpid(), archive, st.st_size, st.st_mtime_ns)
    zf = _zips.get(key)
    if zf is None:
        for old in [k for k in _zips if k[0] != key[0]]:
            del _zips[old]  # inherited through fork: the parent's, left to the parent
        zf = zipfile.ZipFile(archive)
        _zips[key] = zf
        while len(_zips) > ZIPS_OPEN:
            _zips.popitem(last=False)[1].close()
    _zips.move_to_end(key)
    return zf


def _tar_descriptor(archive: str) -> int:
    """This process's open descriptor of the tar ``archive`` (opened by the rules of
    :func:`~prep.sources.base.open_regular`; reopened when the file was replaced; one inherited
    through fork is left to the parent). Members are read with ``pread``: no offset is shared."""
    st = os.stat(archive)
    key = (os.getpid(), archive, st.st_size, st.st_mtime_ns)
    fd = _tars.get(key)
    if fd is None:
        for old in [k for k in _tars if k[0] != key[0]]:
            del _tars[old]
        fd, _ = base._open_regular_fd(archive, True)
        _tars[key] = fd
        while len(_tars) > ZIPS_OPEN:
            os.close(_tars.popitem(last=False)[1])
    _tars.move_to_end(key)
    return fd


class _Window(io.RawIOBase):
    """Bytes ``[start, start + size)`` of the open file ``raw``, as a seekable file of their own."""

    def __init__(self, raw: IO[bytes], start: int, size: int) -> None:
        self._raw = raw
        self._start = start
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self._size - self._pos)
        if count <= 0:
            return 0
        self._raw.seek(self._start + self._pos)
        got = self._raw.readinto(memoryview(buffer)[:count]) or 0  # type: ignore[attr-defined]  # a real file
        self._pos += got
        return got

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise OSError(errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()
