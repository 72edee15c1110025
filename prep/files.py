"""prep's own files (stats files, checkpoints, config presets): read within bounds, written atomically.

Writes go to a temporary file in the target's directory, are flushed to disk, then renamed over
the target, so a reader (or a kill at any moment) sees the old file or the new one, never half of
either. A target that is a symlink is followed: the file it points to is replaced and the link
kept. A new file gets the mode the umask allows (``0666 & ~umask``), a replaced one keeps its
mode. A target that exists and is not a regular file (directory, device, FIFO, socket) is refused
before anything is written; so is a read of such a file, or of one larger than
:data:`MAX_READ_BYTES`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from prep.errors import OutputError, StatsFileError, os_reason, printable

MAX_READ_BYTES = 256 * 1024 * 1024  # stats files and checkpoints are KB to a few MB; configs less
# what `-o -` prints, and the commands that print it
STDOUT_COMMANDS = {"stats file": "prep stats and prep merge", "export": "prep export"}
log = logging.getLogger("prep")


def output_target(path: str | os.PathLike, what: str = "output") -> Path:
    """The regular file a write to ``path`` replaces (symlinks followed), checked before any work.

    Raises :class:`OutputError` when ``path`` exists but is not a regular file, or when its
    directory does not exist or cannot be written, and for ``-``: the commands that can print
    what they write (``prep stats``, ``prep merge`` and ``prep export`` with ``-o -``) handle it
    before they get here, and anything else would write a file named ``-`` where standard
    output was meant.
    """
    text = os.fspath(path)
    if text == "-":
        where = f" ('-o -' of {STDOUT_COMMANDS[what]} prints it)" if what in STDOUT_COMMANDS else ""
        raise OutputError(
            f"-: the {what} cannot be written to standard output here{where}; name a file ('./-' for one named '-')"
        )
    target = Path(os.path.realpath(text))
    try:
        st = os.stat(target)
    except FileNotFoundError:
        try:  # /dev/stdout and the like: links to a pipe or terminal that realpath cannot name
            st = os.stat(text)
        except OSError:
            st = None
    except OSError as exc:
        raise OutputError(f"{text}: cannot use as {what} ({os_reason(exc)})") from None
    if st is not None and not stat.S_ISREG(st.st_mode):
        stdout = text in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1") and what in STDOUT_COMMANDS
        hint = "; '-o -' writes to standard output" if stdout else ""
        raise OutputError(f"{text}: exists and is not a regular file; refusing to replace it with the {what}{hint}")
    folder = target.parent
    if not folder.is_dir():
        raise OutputError(f"{text}: cannot write the {what}: directory {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{text}: cannot write the {what}: directory {folder} is not writable")
    return target


def umask() -> int:
    """The process's umask (what a new file's mode leaves out), read without changing it."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(f)`` on a temporary file beside the target, fsync it, then rename it over the
    target: a reader sees the old file or the new one, never half of one. The target keeps its
    mode (a new one gets what the umask allows), a symlink keeps pointing at the replaced file,
    and a file with several hard links is replaced under this name only (with a warning)."""
    target = output_target(path)
    try:
        old = os.stat(target)
    except FileNotFoundError:
        old = None
    if old is not None and old.st_nlink > 1:
        log.warning("%s has %d hard links; the new file replaces this name only", os.fspath(path), old.st_nlink)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, stat.S_IMODE(old.st_mode) if old is not None else 0o666 & ~umask())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable
        dir_fd = os.open(target.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


FOREIGN_HEAD = 4096  # bytes of an existing output read to tell whether prep wrote it


def refuse_foreign(shown: str, target: str | os.PathLike, ours: Callable[[bytes], bool], what: str) -> None:
    """Refuse (:class:`OutputError`) to replace an existing non-empty file at ``target`` whose
    first :data:`FOREIGN_HEAD` bytes ``ours`` does not recognise as prep's ``what``: an output
    never overwrites an image or a config by a slip of ``-o``. An unreadable file is left to the
    write to report."""
    if not os.path.isfile(target):
        return
    try:
        with open(target, "rb") as f:
            head = f.read(FOREIGN_HEAD)
    except OSError:
        return
    if head.strip() and not ours(head):
        raise OutputError(f"{shown}: exists and is not a {what}; delete it or choose another -o")


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically (:func:`write_atomic`)."""
    data = text.encode("utf-8")

    def write(f: BinaryIO) -> None:
        f.write(data)

    write_atomic(path, write)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def read_bytes_bounded(path: str | os.PathLike, what: str, error: type[Exception] = StatsFileError) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_READ_BYTES`; FIFOs and devices never block."""
    text = os.fspath(path)
    try:
        fd = os.open(text, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise error(f"{text}: cannot read {what} ({os_reason(exc)})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise error(f"{text}: cannot read {what} (not a regular file)")
        if st.st_size > MAX_READ_BYTES:
            raise error(f"{text}: cannot read {what} (larger than {MAX_READ_BYTES // 2**20} MiB)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(MAX_READ_BYTES + 1)
    except OSError as exc:
        raise error(f"{text}: cannot read {what} ({os_reason(exc)})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_READ_BYTES:
        raise error(f"{text}: cannot read {what} (larger than {MAX_READ_BYTES // 2**20} MiB)")
    return data


def write_torch_atomic(path: str | os.PathLike, obj: Any, what: str) -> None:
    """``torch.save(obj)`` to ``path`` atomically (:func:`write_atomic`); a failed write (a full
    disk raises ``OSError`` or torch's ``RuntimeError`` from its zip writer) is one
    :class:`OutputError` line, and the old file is kept."""
    import torch

    text = os.fspath(path)
    output_target(text, what)
    try:
        write_atomic(text, lambda f: torch.save(obj, f))
    except OSError as exc:
        raise OutputError(f"{text}: cannot write the {what} ({os_reason(exc)})") from None
    except RuntimeError as exc:  # torch's zip writer: "[enforce fail at inline_container.cc] unexpected pos ..."
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else "write failed"
        raise OutputError(f"{text}: cannot write the {what} ({first}; is the disk full?)") from None


def _check_torch_pickles(f: BinaryIO, text: str, what: str, limit: int) -> None:
    """The shape of the pickles in a torch zip file, checked before ``torch.load`` builds them
    (:mod:`prep.sources.pickle_shape`: building a dict hashes its keys, in C, where a 1 KB file
    can make that take for ever); files of torch's format before 1.6 (not a zip) are refused."""
    import zipfile

    from prep.sources.pickle_shape import PickleShapeError, check_pickle_shape

    try:
        with zipfile.ZipFile(f) as archive:
            for info in archive.infolist():
                if info.filename.endswith(".pkl"):
                    with archive.open(info) as member:
                        data = member.read(limit + 1)
                    if len(data) > limit:
                        raise StatsFileError(f"{text}: cannot read the {what} ({info.filename} is too large)")
                    check_pickle_shape(data, persistent_ids=True)
    except zipfile.BadZipFile as exc:
        raise StatsFileError(f"{text}: not a readable prep {what} (not a torch zip file: {exc})") from None
    except PickleShapeError as exc:
        raise StatsFileError(f"{text}: not a readable prep {what} ({printable(str(exc))})") from None


def read_torch_bounded(path: str | os.PathLike, what: str, limit: int = MAX_READ_BYTES) -> Any:
    """``torch.load(weights_only=True)`` of a regular file of at most ``limit`` bytes: only
    tensors and plain values are built, never arbitrary pickled objects. Any failure is one
    :class:`StatsFileError` line naming the file."""
    import torch

    from prep.sources.base import open_regular

    text = os.fspath(path)
    try:
        with open_regular(text) as f:
            if f.seek(0, os.SEEK_END) > limit:  # a small file is read whole: no descriptor to ask
                raise StatsFileError(f"{text}: cannot read the {what} (larger than {limit >> 20} MiB)")
            _check_torch_pickles(f, text, what, limit)
            f.seek(0)
            return torch.load(f, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise StatsFileError(f"{text}: cannot read the {what} ({os_reason(exc)})") from None
    except StatsFileError:
        raise
    except Exception as exc:  # torch.load raises many types for damaged or foreign files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise StatsFileError(
            f"{text}: not a readable prep {what} ({type(exc).__name__}{': ' + reason[:200] if reason else ''})"
        ) from None
