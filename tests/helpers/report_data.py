"""Stats files for ``prep report``'s tests: a dirty folder whose file names are hostile markup, and
the page's tables read back (``data-value`` cells) to compare with a stats file."""

from __future__ import annotations

import shutil
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
from PIL import Image

import prep

SCRIPT = "<script>window.__pwned=1</script>"  # a file name made of a folder "<script>window.__pwned=1<" and "script>"
IMG = '"><img src=x onerror=window.__pwned=2>'
BROKEN = '"><img src=x onerror=window.__pwned=3>'
NOTES = "notes <b>bold<b> été 日本"
HOSTILE = (SCRIPT, IMG, BROKEN, NOTES)


def hostile_folder(root: Path) -> Path:
    """Random images and suspicious ones (constant, near black, near white, a duplicate) named with
    markup and non-ASCII, a file that is not an image and one that does not decode."""
    folder = root / "dirty"
    (folder / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(40, 220, (20, 24, 3), dtype=np.uint8)).save(folder / "a" / f"img{i:02d}.png")
    (folder / SCRIPT.split("/")[0]).mkdir()
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(folder / f"{SCRIPT}.png")
    Image.fromarray(np.full((16, 16, 3), 1, np.uint8)).save(folder / f"{IMG}.png")
    Image.fromarray(np.full((16, 16, 3), 128, np.uint8)).save(folder / "a" / "constant été.png")
    Image.fromarray(np.full((16, 16, 3), 253, np.uint8)).save(folder / "a" / "white.png")
    shutil.copy(folder / "a" / "img03.png", folder / "a" / "copy of img03.png")
    (folder / f"{BROKEN}.jpg").write_bytes(b"not a jpeg")
    (folder / f"{NOTES}.txt").write_text("not an image")
    return folder


def hostile_stats(root: Path) -> tuple[Path, Path, Path]:
    """The stats file and per-image CSV of :func:`hostile_folder`: ``(folder, stats, csv)``."""
    import warnings

    folder = hostile_folder(root)
    csv = root / "dirty.csv"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", prep.PrepWarning)  # the skipped files
        stats = prep.compute_stats(folder, workers=0, progress=False, per_image=csv)
    out = root / "dirty.json"
    stats.save(out)
    return folder, out, csv


class TableCells(HTMLParser):
    """Every ``<td data-field data-channel data-value>`` of a page's ``table.channels``, per file:
    ``cells[file][(field, channel)] = (data-value, text)``."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[dict[tuple[str, int], tuple[str, str]]] = []
        self._open: tuple[str, int, str] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "channels" in (a.get("class") or "").split():
            self.cells.append({})
        if tag == "td" and self.cells and a.get("data-value") is not None and a.get("data-channel") is not None:
            self._open = (a["data-field"], int(a["data-channel"]), a["data-value"])
            self._text = []

    def handle_data(self, data):
        if self._open is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "td" and self._open is not None:
            field, channel, value = self._open
            self.cells[-1][(field, channel)] = (value, "".join(self._text))
            self._open = None


def expected_cells(data: dict) -> dict[tuple[str, int], float | int]:
    """What a stats file's JSON ``data`` says each cell of its per-channel table holds."""
    expected: dict[tuple[str, int], float | int] = {}
    for field in ("count", "mean", "std", "min", "max", "per_image_std_mean"):
        for c, value in enumerate(data[field]):
            expected[(field, c)] = value
    if data["percentiles"] is not None:
        for i, q in enumerate(data["percentiles"]["q"]):
            for c, values in enumerate(data["percentiles"]["values"]):
                expected[(f"percentile_{q:g}", c)] = values[i]
    return expected


def cell_text(value: float | int) -> str:
    """How the page prints a cell's value."""
    return f"{value:,}" if isinstance(value, int) else f"{value:.6f}"
