"""The per-image report: one CSV row per image, written during the pass, and the suspicious images.

``prep stats SOURCE --per-image images.csv`` writes a header and then, in the source's order,
one row per decoded image: ``index, name, width, height``, then per channel ``mean``, ``std``
(population), ``min`` and ``max`` in unit scale, then ``digest`` (the first 64 bits of the
SHA-256 of the file's bytes, or of the pixels for sources without files). Rows are written as results arrive
(the pool returns them in order), so memory holds 16 bytes per image, not the rows.

A name is untrusted text that a spreadsheet would run as a formula (``=HYPERLINK(...)``): a
name beginning with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is written with a
single quote in front (OWASP's advice against CSV injection), and so is a name beginning with a
single quote, so the name is always the cell minus one leading quote when it has one.

The suspicious images, at most :data:`SHOWN` named per kind with the total of each, go to the
stats file under ``outliers``:

* ``constant``: std 0 in every channel (one colour);
* ``near_black`` / ``near_white``: every channel's mean below :data:`NEAR_BLACK` / above
  :data:`NEAR_WHITE` (unit scale);
* ``brightness``: an image whose brightness (the mean of its channel means) lies more than
  ``k`` (default 4) standard deviations of the images' brightness from their mean;
* ``duplicates``: byte-identical files (equal digests), each named with the first image it
  repeats.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from prep.errors import OutputError, os_reason
from prep.files import output_target, umask
from prep.pixels import channel_names

SHOWN = 10  # images named per kind of outlier
NEAR_BLACK = 0.02  # every channel's mean below this: near black
NEAR_WHITE = 0.98  # every channel's mean above this: near white
DEFAULT_K = 4.0
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")  # what makes a spreadsheet read a cell as a formula

# one image: (name, width, height, means, stds, mins, maxs, digest)
Row = tuple[str, int, int, Sequence[float], Sequence[float], Sequence[float], Sequence[float], int]


def digest_of(data: bytes | memoryview) -> int:
    """The 64-bit digest that identifies byte-identical files: the first 8 bytes of their SHA-256
    (twice BLAKE2b's speed where the CPU has SHA instructions: 46 against 85 us for 80 KB here)."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "big")


_POWERS = np.stack([np.ones(256), np.arange(256.0), np.arange(256.0) ** 2], axis=1)


def rows_from_histograms(hist: np.ndarray) -> list[tuple[list[float], ...]]:
    """``(means, stds, mins, maxs)`` per image of 8-bit images given as histograms ``(N, C, 256)``,
    in unit scale, computed for all images at once (float64 sums of integers below 2**53 are exact)."""
    n, s, q = np.moveaxis(hist.astype(np.float64) @ _POWERS, -1, 0)
    safe = np.maximum(n, 1)
    means = s / (255 * safe)
    stds = np.sqrt(np.maximum(n * q - s * s, 0) / (safe * safe)) / 255
    present = hist > 0
    mins = present.argmax(-1) / 255
    maxs = (255 - present[..., ::-1].argmax(-1)) / 255
    return list(zip(means.tolist(), stds.tolist(), mins.tolist(), maxs.tolist()))


def row_from_array(name: str, array: np.ndarray, pixel_max: float, channels: int, digest: int, nodata=None) -> Row:
    """A row from an image ``(C, H, W)`` (a single channel stands for every channel), float64,
    over its valid values (finite, and not the channel's ``nodata`` value)."""
    x = np.asarray(array, np.float64).reshape(array.shape[0], -1)
    valid = np.isfinite(x)
    if nodata is not None:
        valid &= x != np.asarray(nodata, np.float64)[: x.shape[0], None]
    finite = np.where(valid, x / pixel_max, np.nan)
    with warnings.catch_warnings():  # a channel without a valid value: NaN in its columns
        warnings.simplefilter("ignore", RuntimeWarning)
        stats = [np.nanmean(finite, 1), np.nanstd(finite, 1), np.nanmin(finite, 1), np.nanmax(finite, 1)]
    if array.shape[0] == 1 and channels > 1:
        stats = [np.repeat(v, channels) for v in stats]
    return (name, int(array.shape[-1]), int(array.shape[-2]), *(v.tolist() for v in stats), digest)


def row_from_state(name: str, size: tuple[int, int], state: Any, digest: int) -> Row:
    """A row from one image's state (an image reduced a piece at a time), its size (width, height)."""
    s = state.compute()
    return (name, int(size[0]), int(size[1]), list(s.mean), list(s.std), list(s.min), list(s.max), digest)


def rows_from_batch(batch: Any, pixel_max: float, names: Sequence[str]) -> list[Row]:
    """Rows of a tensor batch ``(N, C, H, W)``, named ``names`` (their indices in the source)."""
    x = batch.detach().cpu()
    rows = []
    for i, name in enumerate(names):
        image = x[i].contiguous().numpy()
        rows.append(row_from_array(name, image, pixel_max, image.shape[0], digest_of(image.tobytes())))
    return rows


class PerImageReport:
    """Writes the rows to ``path`` (a temp file beside it, renamed when the pass ends) and keeps
    what finding the outliers needs: 16 bytes per image and the first named of each kind.

    Any failed write (a full disk, a quota) removes the temp file and raises one
    :class:`OutputError` line naming ``path``; a report already at ``path`` is kept."""

    def __init__(self, path: str | os.PathLike, channels: int, k: float = DEFAULT_K) -> None:
        self.path = os.fspath(path)
        self.target = output_target(self.path, "per-image report")
        self.channels, self.k = channels, k
        names = channel_names(channels)
        self._tmp: str | None = None
        self._file: Any = None
        with self._writing():
            fd, self._tmp = tempfile.mkstemp(prefix=".prep-", suffix=".csv", dir=os.path.dirname(self.target) or ".")
            try:  # the mode a new file gets from the umask, or the replaced file's
                old = os.stat(self.target)
                os.fchmod(fd, stat.S_IMODE(old.st_mode))
            except FileNotFoundError:
                os.fchmod(fd, 0o666 & ~umask())
            except OSError:
                os.close(fd)
                raise
            self._file = os.fdopen(fd, "w", newline="", encoding="utf-8")
            self._csv = csv.writer(self._file)
            header = ["index", "name", "width", "height"]
            for field in ("mean", "std", "min", "max"):
                header += [f"{field}_{c}" for c in names]
            self._csv.writerow([*header, "digest"])
        self.index = 0
        self._brightness: list[float] = []
        self._digests: list[int] = []
        self.found: dict[str, list[Any]] = {"constant": [], "near_black": [], "near_white": []}
        self.counts = {"constant": 0, "near_black": 0, "near_white": 0}

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write inside the block: the temp file removed, one OutputError line."""
        try:
            yield
        except OSError as exc:
            self.abort()
            raise OutputError(f"{self.path}: cannot write the per-image report ({os_reason(exc)})") from None

    def add(self, rows: Iterable[Row]) -> None:
        for name, width, height, means, stds, mins, maxs, digest in rows:
            values = [f"{v:.9g}" for group in (means, stds, mins, maxs) for v in group]
            with self._writing():
                self._csv.writerow([self.index, csv_cell(name), width, height, *values, f"{digest:016x}"])
            for kind, hit in (
                ("constant", all(s == 0 for s in stds)),
                ("near_black", all(m < NEAR_BLACK for m in means)),
                ("near_white", all(m > NEAR_WHITE for m in means)),
            ):
                if hit:
                    self.counts[kind] += 1
                    if len(self.found[kind]) < SHOWN:
                        self.found[kind].append(name)
            self._brightness.append(float(np.mean(means)))
            self._digests.append(digest)
            self.index += 1

    def finish(self) -> dict[str, Any]:
        """Close and rename the CSV into place; return the ``outliers`` of the stats file."""
        with self._writing():
            self._file.close()  # the last rows reach the disk here
        brightness = np.array(self._brightness)
        far: list[int] = []
        if len(brightness) > 1 and brightness.std() > 0:
            z = np.abs(brightness - brightness.mean()) / brightness.std()
            far = [int(i) for i in np.argsort(-z) if z[i] > self.k]
        duplicates = _duplicates(np.array(self._digests, np.uint64))
        wanted = set(far[:SHOWN]) | {i for pair in duplicates[:SHOWN] for i in pair}
        assert self._tmp is not None  # finish() is called once, on an open report
        with self._writing():
            names = _names_at(self._tmp, wanted)
            os.replace(self._tmp, self.target)
        self._tmp = None
        outliers = {kind: {"count": self.counts[kind], "images": names_} for kind, names_ in self.found.items()}
        outliers["brightness"] = {"count": len(far), "k": self.k, "images": [names[i] for i in far[:SHOWN]]}
        outliers["duplicates"] = {
            "count": len(duplicates),
            "images": [[names[i], names[j]] for i, j in duplicates[:SHOWN]],
        }
        return outliers

    def abort(self) -> None:
        """Remove the unfinished CSV (a failed or interrupted pass leaves no partial report)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()  # a full disk fails this flush again; the descriptor is closed anyway
        if self._tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(self._tmp)


def csv_cell(name: str) -> str:
    """``name`` as the report's cell: with a single quote in front when it begins like a formula
    (:data:`FORMULA_STARTS`) or with a quote; :func:`name_of_cell` undoes it."""
    return "'" + name if name.startswith((*FORMULA_STARTS, "'")) else name


def name_of_cell(cell: str) -> str:
    """The name a report cell holds (:func:`csv_cell` reversed)."""
    return cell[1:] if cell.startswith("'") else cell


def _duplicates(digests: np.ndarray) -> list[tuple[int, int]]:
    """``(index, index of the first image with the same digest)`` of every repeated image."""
    if len(digests) < 2:
        return []
    order = np.argsort(digests, kind="stable")
    ordered = digests[order]
    pairs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(ordered) + 1):
        if i == len(ordered) or ordered[i] != ordered[start]:
            first = int(order[start])
            pairs.extend((int(j), first) for j in order[start + 1 : i])
            start = i
    return sorted(pairs)


def _names_at(path: str, indices: set[int]) -> dict[int, str]:
    """The names of the rows ``indices`` of the CSV at ``path`` (one streaming read)."""
    if not indices:
        return {}
    found = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        next(reader)
        for row in reader:
            index = int(row[0])
            if index in indices:
                found[index] = name_of_cell(row[1])
    return found
