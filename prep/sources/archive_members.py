"""Archive listings: the regular-file members of a zip or tar file, read without extracting anything.

One pass over the archive's directory (zip) or headers (tar) gives every member prep may read;
the rest is listed as skipped with its reason, the folder rules carried over to members:

* directories are ignored; symlink and hard-link members are skipped (``symlink member (not
  followed)``, ``hard link member (not followed)``), as are devices and FIFOs (``not a regular
  file``), encrypted zip members and GNU sparse tar members;
* a name that would escape the archive when extracted (absolute, a drive letter, or with a
  ``..`` component; backslashes count as separators) is skipped as ``unsafe name (absolute or
  '..' path)``. prep writes nothing, so such a member is never written anywhere either way;
* names are normalised (``./a//b.jpg`` is ``a/b.jpg``), so they sort as the extracted folder's
  relative paths do; when two members have the same name, the later one is the file extraction
  would leave, so the earlier is skipped as ``duplicate member (a later one has its name)``;
* a member of a compressed tar larger than :data:`MAX_STREAMED_MEMBER` is skipped (its bytes are
  held in memory on their way to a worker; no real image is that large, and PIL refuses such
  sizes as decompression bombs anyway).

Uncompressed tars record each member's data offset, so workers read a member with one seek;
compressed tars (gzip, bzip2, xz, recognised by their magic bytes, not their name) can only be
read front to back. A damaged archive is a one-line :class:`~prep.errors.SourceError`.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
import zlib
from dataclasses import dataclass, field

from prep.errors import SourceError, os_reason

ZIP_SUFFIXES = (".zip",)
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
ARCHIVE_SUFFIXES = ZIP_SUFFIXES + TAR_SUFFIXES
COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00")  # gzip, bzip2, xz
MAX_STREAMED_MEMBER = 512 << 20  # bytes: the largest member of a compressed tar that is read

UNSAFE = "unsafe name (absolute or '..' path)"
DUPLICATE = "duplicate member (a later one has its name)"
ARCHIVE_ERRORS = (tarfile.TarError, zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError)


def is_archive_name(name: str) -> bool:
    """Whether ``name`` ends like an archive prep reads (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``, ...)."""
    return name.lower().endswith(ARCHIVE_SUFFIXES)


@dataclass(frozen=True)
class Member:
    """A regular-file member: its normalised name, its name in the archive, its size, and (plain
    tar) the offset of its data or (compressed tar) its position among the archive's headers."""

    name: str
    raw: str
    size: int
    offset: int = -1
    index: int = -1


@dataclass
class ArchiveListing:
    """The members of one archive, in archive order, and the members passed over, with reasons."""

    path: str
    format: str  # "zip", "tar" (random access) or "tar-stream" (compressed: front to back only)
    size: int
    mtime_ns: int
    members: list[Member] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def random_access(self) -> bool:
        return self.format != "tar-stream"

    def display(self, name: str) -> str:
        """How lists name a member: ``data.zip:cls/a.jpg`` (the archive's file name, then the member)."""
        return f"{os.path.basename(self.path)}:{name}"


def safe_name(raw: str) -> str | None:
    """``raw`` normalised to a relative POSIX path, or None when extracting it would leave the archive.

    >>> safe_name("./cls//a.jpg"), safe_name("../evil.jpg"), safe_name("/etc/x.png"), safe_name("C:\\\\x.png")
    ('cls/a.jpg', None, None, None)
    """
    text = raw.replace("\\", "/")
    if text.startswith("/") or re.match(r"[A-Za-z]:", text):
        return None
    parts = [part for part in text.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def list_archive(path: str) -> ArchiveListing:
    """List the archive at ``path`` (zip by its magic bytes or name, tar otherwise)."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise SourceError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            magic = f.read(6)
    except OSError as exc:
        raise SourceError(f"{path}: {os_reason(exc)}") from None
    is_zip = magic.startswith(b"PK") or (path.lower().endswith(ZIP_SUFFIXES) and not magic.startswith(b"\x1f\x8b"))
    if is_zip:
        listing = ArchiveListing(path, "zip", st.st_size, st.st_mtime_ns)
        reader = _list_zip
    else:
        streamed = magic.startswith(COMPRESSED_MAGIC)
        listing = ArchiveListing(path, "tar-stream" if streamed else "tar", st.st_size, st.st_mtime_ns)
        reader = _list_tar
    try:
        reader(listing)
    except ARCHIVE_ERRORS as exc:
        what = "zip" if is_zip else "tar"
        raise SourceError(f"{path}: not a readable {what} archive ({_first_line(exc)})") from None
    except OSError as exc:
        raise SourceError(f"{path}: {os_reason(exc)}") from None
    _drop_duplicates(listing)
    return listing


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text or type(exc).__name__


def _list_zip(listing: ArchiveListing) -> None:
    with zipfile.ZipFile(listing.path) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            name = safe_name(info.filename)
            unix_mode = info.external_attr >> 16
            if name is None:
                listing.skipped.append((listing.display(info.filename), UNSAFE))
            elif stat.S_ISLNK(unix_mode):
                listing.skipped.append((listing.display(name), "symlink member (not followed)"))
            elif unix_mode and stat.S_IFMT(unix_mode) and not stat.S_ISREG(unix_mode):
                listing.skipped.append((listing.display(name), "not a regular file"))
            elif info.flag_bits & 0x1:
                listing.skipped.append((listing.display(name), "encrypted member (no password)"))
            else:
                listing.members.append(Member(name, info.filename, info.file_size))


def _list_tar(listing: ArchiveListing) -> None:
    streamed = not listing.random_access
    with tarfile.open(listing.path, "r|*" if streamed else "r:") as tf:
        for index, info in enumerate(tf):
            if info.isdir():
                continue
            name = safe_name(info.name)
            if name is None:
                listing.skipped.append((listing.display(info.name), UNSAFE))
            elif info.issym():
                listing.skipped.append((listing.display(name), "symlink member (not followed)"))
            elif info.islnk():
                listing.skipped.append((listing.display(name), "hard link member (not followed)"))
            elif not info.isreg():
                listing.skipped.append((listing.display(name), "not a regular file"))
            elif info.issparse():
                listing.skipped.append((listing.display(name), "sparse member (not supported)"))
            elif streamed and info.size > MAX_STREAMED_MEMBER:
                reason = f"member too large to stream ({info.size} bytes > {MAX_STREAMED_MEMBER})"
                listing.skipped.append((listing.display(name), reason))
            else:
                listing.members.append(Member(name, info.name, info.size, info.offset_data, index))
            tf.members.clear()  # type: ignore[attr-defined]  # the listing keeps what it needs: memory stays flat


def _drop_duplicates(listing: ArchiveListing) -> None:
    """Keep the last member of each name (what extraction leaves); list the earlier ones as skipped."""
    last = {m.name: i for i, m in enumerate(listing.members)}
    if len(last) == len(listing.members):
        return
    kept = []
    for i, member in enumerate(listing.members):
        if last[member.name] == i:
            kept.append(member)
        else:
            listing.skipped.append((listing.display(member.name), DUPLICATE))
    listing.members = kept
