"""Untrusted names reach a terminal with their control characters escaped, and a spreadsheet as
text, never as a formula."""

from __future__ import annotations

import csv
import json
import warnings

import numpy as np
import pytest
from PIL import Image

import prep
from helpers import run
from prep.errors import PrepWarning, printable
from prep.insight.per_image_report import csv_cell, name_of_cell

HOSTILE = "\x1b]0;pwned\x07\x1b[2J"  # set the window title, clear the screen


@pytest.mark.parametrize(
    "text,shown",
    [
        (HOSTILE, "\\x1b]0;pwned\\x07\\x1b[2J"),
        ("a\nb\rc\td", "a\\nb\\rc\\td"),
        ("csi \x9b31m and del \x7f", "csi \\x9b31m and del \\x7f"),
        ("abc\u202ecba.png", "abc\\u202ecba.png"),  # a right-to-left override
        ("undecodable \udcff.jpg", "undecodable \\udcff.jpg"),  # os.fsdecode of the byte 0xff
        ("photos/été 日本 ok.jpg", "photos/été 日本 ok.jpg"),
        (3, "3"),
    ],
)
def test_printable_escapes_only_what_is_not_printable(text, shown):
    assert printable(text) == shown
    assert printable(shown) == shown


def assert_no_controls(text: str) -> None:
    assert not any((ord(c) < 0x20 and c != "\n") or 0x7F <= ord(c) < 0xA0 for c in text), repr(text)


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(5)
    (tmp_path / "imgs").mkdir()
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (3, 2, 3), dtype=np.uint8)).save(tmp_path / "imgs" / f"good{i}.png")
    (tmp_path / "imgs" / f"{HOSTILE}.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    return tmp_path / "imgs"


def test_the_skipped_file_warning_escapes_the_name(folder):
    result = run("stats", folder, "--workers", 0, "-q")
    assert result.exit_code == 0, result.output
    assert_no_controls(result.stderr)
    assert "skipped 1 file(s) under" in result.stderr and "\\x1b]0;pwned\\x07\\x1b[2J.jpg" in result.stderr


def test_the_python_warning_escapes_the_name(folder):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        prep.compute_stats(folder, workers=0)
    (message,) = [str(w.message) for w in caught if issubclass(w.category, PrepWarning)]
    assert "\\x1b]0;pwned\\x07\\x1b[2J.jpg" in message
    assert_no_controls(message)


def test_prep_whiten_escapes_the_name(folder, tmp_path):
    result = run("whiten", folder, "-o", tmp_path / "w.pt", "--workers", 0, "-q", "--eps", "0.1")
    assert result.exit_code == 0, result.output
    assert "\\x1b]0;pwned\\x07\\x1b[2J.jpg" in result.stderr
    assert_no_controls(result.stderr)


def test_strict_errors_escape_the_name(folder):
    result = run("stats", folder, "--workers", 0, "--strict", "-q")
    assert result.exit_code == 1
    assert_no_controls(result.stderr)
    assert "\\x1b]0;pwned\\x07\\x1b[2J.jpg" in result.stderr


def test_prep_show_escapes_an_edited_source_path(folder, tmp_path):
    out = tmp_path / "s.json"
    assert run("stats", folder, "-o", out, "--workers", 0, "-q").exit_code == 0
    data = json.loads(out.read_text())
    data["source"]["path"] = f"/data/{HOSTILE}"
    out.write_text(json.dumps(data))
    shown = run("show", out)
    assert shown.exit_code == 0, shown.output
    assert_no_controls(shown.output)
    assert "/data/\\x1b]0;pwned\\x07\\x1b[2J" in shown.stdout
    assert "\\x1b]0;pwned\\x07\\x1b[2J.jpg: cannot decode" in shown.stdout  # the skipped file, listed


FORMULAS = [
    '=HYPERLINK("evil.example","click").png',
    "+1.png",
    "-2.png",
    "@SUM(A1).png",
    "\tTAB.png",
    "\rCR.png",
    "'quoted.png",
]


@pytest.mark.parametrize("name", [*FORMULAS, "plain.png", "a=b.png"])
def test_csv_cells_round_trip(name):
    cell = csv_cell(name)
    assert name_of_cell(cell) == name
    assert cell.startswith("'") == (name[0] in "=+-@\t\r'")


def test_the_per_image_report_never_holds_a_formula(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = np.random.default_rng(1).integers(0, 256, (3, 2, 3), dtype=np.uint8)
    for name in [*FORMULAS, "plain.png"]:
        Image.fromarray(pixels).save(folder / name, format="PNG")  # byte-identical: named as duplicates
    report = tmp_path / "report.csv"
    stats = prep.compute_stats(folder, workers=0, per_image=report)
    with open(report, newline="", encoding="utf-8") as f:
        cells = [row["name"] for row in csv.DictReader(f)]
    assert sorted(cells) == sorted("'" + n if n != "plain.png" else n for n in [*FORMULAS, "plain.png"])
    assert all(not cell.startswith(("=", "+", "-", "@", "\t", "\r")) for cell in cells)
    named = {n for pair in stats.outliers["duplicates"]["images"] for n in pair}
    assert named == {*FORMULAS, "plain.png"}  # the stats file holds the names themselves
    assert stats.outliers["duplicates"]["count"] == len(FORMULAS)
