"""Dataset fingerprints: a digest of the file listing (relative path, size, modification time).

Cheap to compute (one ``stat`` per file, no reads), and it changes whenever a file is added,
removed, renamed, resized or rewritten, which is when stored statistics stop being valid.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def fingerprint_files(root: str | os.PathLike, relpaths: Iterable[str]) -> dict:
    """``{"files", "bytes", "sha256"}`` of the files ``root/relpath``, hashed in the given order."""
    root = Path(root)
    return fingerprint_listing((rel, (root / rel).stat()) for rel in relpaths)


def fingerprint_listing(entries: Iterable[tuple[str, os.stat_result]]) -> dict:
    """The fingerprint of ``(relpath, stat)`` pairs already at hand (no further system calls)."""
    digest = hashlib.sha256()
    files = size_total = 0
    for rel, st in entries:
        digest.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        files += 1
        size_total += st.st_size
    return {"files": files, "bytes": size_total, "sha256": digest.hexdigest()}
