"""Small images of the suspicious images a stats file names, as ``data:`` URIs for ``prep report``.

A stats file's ``outliers`` name images as the pass named them: a path relative to the folder
(its split subfolder included) for image folders and ``sample``, ``<archive>:<member>`` for zip
and tar archives and WebDataset shards. :class:`Thumbnails` reads each named file from the
source again, decodes it with PIL (a JPEG at a reduced scale), shrinks it to at most
:data:`SIZE` pixels a side, and encodes it (PNG for small images, JPEG otherwise) as a
``data:`` URI, so the page needs no file beside it.

Names are untrusted: a folder name that leads outside the source folder (a ``..`` part, an
absolute path) is not read; symlinks inside it are followed, as the pass followed them. Nothing
here raises: a file that is gone, unreadable, too large (:data:`MAX_BYTES`), not an image, or of
a source without image files (idx, CIFAR, NumPy, Python datasets) gives a :class:`Thumbnail`
without an image and the reason, and at most ``limit`` images are read in all.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import tarfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any

SIZE = 96  # pixels, the longer side of a thumbnail
MAX_BYTES = 64 * 1024 * 1024  # a file larger than this is not read for a thumbnail
LIMIT = 48  # thumbnails in a report, in all
FOLDER_KINDS = ("folder", "sample")
ARCHIVE_KINDS = ("archive", "webdataset")


@dataclass(frozen=True)
class Thumbnail:
    """One image's thumbnail: ``uri`` (a ``data:`` URI) or, when there is none, ``missing`` (why)."""

    name: str
    uri: str | None = None
    missing: str | None = None
    width: int = 0
    height: int = 0


class Thumbnails:
    """Reads thumbnails of the images of one stats file's source, at most ``budget.left`` of them.

    ``base`` is the directory of the stats file: a relative source path is looked for there too
    when it is not found from the current directory. Use as a context manager (open archives are
    closed at its end)."""

    def __init__(self, source: Mapping[str, Any], budget: Budget, base: str | None = None) -> None:
        self.source = source
        self.kind = str(source.get("kind"))
        self.budget = budget
        self.base = base
        self._archives: dict[str, Any] = {}

    def __enter__(self) -> Thumbnails:
        return self

    def __exit__(self, *exc: object) -> None:
        for archive in self._archives.values():
            with contextlib.suppress(Exception):
                archive.close()
        self._archives.clear()

    def get(self, name: str) -> Thumbnail:
        if not self.budget.take():
            return Thumbnail(name, missing=f"not shown: a report shows at most {self.budget.limit} thumbnails")
        try:
            with self._open(name) as f:
                data = f.read(MAX_BYTES + 1)
        except _Missing as exc:
            return Thumbnail(name, missing=str(exc))
        except Exception as exc:  # a file gone, unreadable, a damaged archive: never the report's end
            return Thumbnail(name, missing=f"cannot read: {_reason(exc)}")
        if len(data) > MAX_BYTES:
            return Thumbnail(name, missing=f"larger than {MAX_BYTES >> 20} MiB")
        return _encode(name, data)

    # -------------------------------------------------------------- where a named image is
    def _open(self, name: str) -> IO[bytes]:
        if self.kind in FOLDER_KINDS:
            return self._open_in_folder(name)
        if self.kind in ARCHIVE_KINDS:
            return self._open_in_archive(name)
        raise _Missing(f"a {self.kind} source has no image files to read thumbnails from")

    def _where(self, path: str) -> str | None:
        """``path`` as found from here, or from the stats file's directory when it is relative."""
        if os.path.exists(path):
            return path
        if self.base is not None and not os.path.isabs(path):
            other = os.path.join(self.base, path)
            if os.path.exists(other):
                return other
        return None

    def _open_in_folder(self, name: str) -> IO[bytes]:
        from prep.sources.base import open_regular

        path = self.source.get("path")
        if not isinstance(path, str) or not path:
            raise _Missing("the stats file names no source folder")
        root = self._where(path)
        if root is None:
            raise _Missing(f"the source folder {path} is not here")
        split = self.source.get("split")
        if split:
            from prep.sources.folder import split_folder

            try:
                root = str(split_folder(root, str(split)))
            except Exception as exc:
                raise _Missing(f"no split folder: {_reason(exc)}") from None
        parts = name.replace("\\", "/").split("/")
        if os.path.isabs(name) or "\0" in name or ".." in parts:
            raise _Missing("the name leads outside the source folder; not read")
        path = os.path.join(root, *parts)
        if not os.path.lexists(path):
            raise _Missing("no such file")
        return open_regular(path)  # a symlink inside the folder is followed, as the pass followed it

    def _open_in_archive(self, name: str) -> IO[bytes]:
        archive_name, sep, member = name.partition(":")
        if not sep or not member:
            raise _Missing("not an <archive>:<member> name")
        archive = self._archive(archive_name)
        if isinstance(archive, zipfile.ZipFile):
            try:
                info = archive.getinfo(member)
            except KeyError:
                raise _Missing(f"no member {member} in {archive_name}") from None
            if info.file_size > MAX_BYTES:
                raise _Missing(f"larger than {MAX_BYTES >> 20} MiB")
            return archive.open(info)
        try:
            info = archive.getmember(member)
        except KeyError:
            raise _Missing(f"no member {member} in {archive_name}") from None
        if not info.isfile():
            raise _Missing("not a regular file in the archive")
        if info.size > MAX_BYTES:
            raise _Missing(f"larger than {MAX_BYTES >> 20} MiB")
        f = archive.extractfile(info)
        if f is None:
            raise _Missing("not a regular file in the archive")
        return f

    def _archive(self, archive_name: str) -> Any:
        """The open zip or tar ``archive_name`` of this source (opened once)."""
        if archive_name in self._archives:
            return self._archives[archive_name]
        if os.sep in archive_name or archive_name in (".", ".."):
            raise _Missing("not an archive's file name")
        path = self._archive_path(archive_name)
        if zipfile.is_zipfile(path):
            opened: Any = zipfile.ZipFile(path)  # kept open for the next member; closed in __exit__
        else:  # plain or compressed; its members are listed on the first look-up
            opened = tarfile.open(path)  # noqa: SIM115  # kept open likewise
        self._archives[archive_name] = opened
        return opened

    def _archive_path(self, archive_name: str) -> str:
        path = self.source.get("path")
        if not isinstance(path, str) or not path:
            raise _Missing("the stats file names no archive")
        candidates = []
        if os.path.basename(path) == archive_name:
            candidates.append(path)
        candidates += [os.path.join(path, archive_name), os.path.join(os.path.dirname(path), archive_name)]
        for candidate in candidates:
            found = self._where(candidate)
            if found is not None and os.path.isfile(found):
                return found
        raise _Missing(f"the archive {archive_name} is not here")


class Budget:
    """How many more thumbnails a report may read (shared by its files)."""

    def __init__(self, limit: int) -> None:
        self.limit = self.left = max(0, int(limit))

    def take(self) -> bool:
        if self.left <= 0:
            return False
        self.left -= 1
        return True


class _Missing(Exception):
    """Why an image has no thumbnail."""


def _reason(exc: BaseException) -> str:
    from prep.errors import os_reason

    text = os_reason(exc) if isinstance(exc, OSError) else str(exc) or type(exc).__name__
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__


def _encode(name: str, data: bytes) -> Thumbnail:
    """``data`` (an image file's bytes) as a thumbnail, or why it cannot be one."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (SIZE * 2, SIZE * 2))  # JPEG: decode at a reduced scale
            image = _as_rgb(image)
            image.thumbnail((SIZE, SIZE))
            out = io.BytesIO()
            if image.width * image.height <= 64 * 64:
                image.save(out, format="PNG", optimize=True)
                kind = "png"
            else:
                image.save(out, format="JPEG", quality=80, optimize=True)
                kind = "jpeg"
    except Exception as exc:  # not an image, damaged, a decompression bomb: no thumbnail
        return Thumbnail(name, missing=f"cannot decode: {_reason(exc)}")
    uri = f"data:image/{kind};base64," + base64.b64encode(out.getvalue()).decode("ascii")
    return Thumbnail(name, uri=uri, width=image.width, height=image.height)


def _as_rgb(image: Any) -> Any:
    """``image`` as 8-bit RGB; 16-bit and float images scaled from their own range."""
    from PIL import Image

    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        import numpy as np

        array = np.asarray(image, np.float64)
        lo, hi = float(np.nanmin(array)), float(np.nanmax(array))
        scaled = np.zeros_like(array) if hi <= lo else (array - lo) / (hi - lo) * 255
        return Image.fromarray(np.nan_to_num(scaled).astype(np.uint8), "L").convert("RGB")
    return image.convert("RGB")
