"""Dataset fingerprints: a digest of the file listing (relative path, size, modification time).

Cheap to compute (one ``stat`` per file, no reads), and it changes whenever a file is added,
removed, renamed, resized or rewritten, which is when stored statistics stop being valid. Like
make's and rsync's, it cannot see a file whose bytes were changed in place with its size and
modification time kept (``touch -r``, some copy tools): with ``checksum=True`` the fingerprint
also holds ``"checksum"``, a SHA-256 over the files' contents (:func:`checksum_files`), which
reads every byte once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prep.errors import os_reason
from prep.sources.base import open_regular

HASH_BLOCK = 1 << 20  # bytes per read when hashing without hashlib.file_digest: bounded memory


def fingerprint_files(root: str | os.PathLike, relpaths: Iterable[str], *, checksum: bool = False) -> dict:
    """``{"files", "bytes", "sha256"}`` of the files ``root/relpath``, hashed in the given order;
    with ``checksum``, also ``"checksum"`` over their contents (:func:`checksum_files`)."""
    root = Path(root)
    relpaths = list(relpaths)
    stats = ((rel, (root / rel).stat()) for rel in relpaths)
    fingerprint = fingerprint_listing((rel, st.st_size, st.st_mtime_ns) for rel, st in stats)
    if checksum:
        fingerprint["checksum"] = checksum_files(root, relpaths)
    return fingerprint


def fingerprint_listing(entries: Iterable[tuple[str, int, int]]) -> dict:
    """The fingerprint of ``(relpath, size, mtime_ns)`` entries already at hand (no further system calls)."""
    digest = hashlib.sha256()
    files = size_total = 0
    lines: list[str] = []
    for rel, size, mtime_ns in entries:
        lines.append(f"{rel}\t{size}\t{mtime_ns}\n")
        files += 1
        size_total += size
        if len(lines) == 4096:  # hashed a few thousand lines at a time: the same bytes, fewer calls
            digest.update("".join(lines).encode("utf-8", "surrogateescape"))
            lines.clear()
    digest.update("".join(lines).encode("utf-8", "surrogateescape"))
    return {"files": files, "bytes": size_total, "sha256": digest.hexdigest()}


def checksum_files(root: str | os.PathLike, relpaths: Iterable[str], *, follow_symlinks: bool = True) -> str:
    """SHA-256 hex over the contents of the files ``root/relpath``, in the given order.

    Each file adds the line ``relpath<TAB>sha256 of its bytes<LF>`` to the digest; a file that
    cannot be read (gone, no permission, not a regular file any more) adds
    ``relpath<TAB>error: reason<LF>`` instead, so it changes the checksum but never stops it.
    Files are opened as the workers open them (:func:`~prep.sources.base.open_regular`: a FIFO
    never blocks) and streamed, so memory stays bounded whatever their size.
    """
    digest = hashlib.sha256()
    for rel in relpaths:
        try:
            with open_regular(os.path.join(root, rel), follow_symlinks=follow_symlinks) as f:
                content = _file_sha256(f)
        except OSError as exc:
            content = f"error: {os_reason(exc)}"
        digest.update(f"{rel}\t{content}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def _file_sha256(f: Any) -> str:
    """The SHA-256 hex of the rest of ``f``, read in blocks (hashlib.file_digest where there is one)."""
    if hasattr(hashlib, "file_digest"):  # Python 3.11+: a reused buffer, the GIL released while hashing
        return hashlib.file_digest(f, "sha256").hexdigest()
    digest = hashlib.sha256()
    block = bytearray(HASH_BLOCK)
    view = memoryview(block)
    while size := f.readinto(block):
        digest.update(view[:size])
    return digest.hexdigest()
