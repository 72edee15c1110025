"""``prep report`` on the command line: a page written, one-line errors (exit 2) for bad input, no
output replaced that is not a report."""

from __future__ import annotations

import pytest

import prep
from helpers import run


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("report-cli") / "s.json"
    prep.compute_stats("sample", workers=0, progress=False).save(path)
    return path


def _one_line_error(result, *parts: str) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("prep: error: "), result.stderr
    for part in parts:
        assert part in lines[0], lines[0]
    return lines[0]


def test_report_writes_the_page(sample, tmp_path):
    out = tmp_path / "r.html"
    result = run("report", sample, sample, "-o", out, "--label", "train", "--label", "test", "--max-shift", "0.5")
    assert result.exit_code == 0, result.output
    assert result.stderr.strip() == f"wrote {out}" and result.stdout == ""
    page = out.read_text()
    assert "<title>prep report: train vs test</title>" in page and "limit 0.5)" in page
    assert run("report", sample, "-o", out, "--no-thumbnails").exit_code == 0  # its own page is replaced
    assert "train vs test" not in out.read_text()


def test_no_stats_file_is_a_usage_error(tmp_path):
    _one_line_error(run("report", "-o", tmp_path / "r.html"), "Missing argument", "report --help")
    assert not (tmp_path / "r.html").exists()


def test_a_file_load_stats_refuses_is_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema_version": 1, "mean": [0.5]')
    _one_line_error(run("report", bad, "-o", tmp_path / "r.html"), f"{bad}: not valid JSON")
    _one_line_error(run("report", tmp_path / "none.json", "-o", tmp_path / "r.html"), "none.json: cannot read")
    assert not (tmp_path / "r.html").exists()


def test_an_output_that_is_not_a_report_is_never_replaced(sample, tmp_path):
    other = tmp_path / "notes.html"
    other.write_text("<html>my own page</html>")
    _one_line_error(run("report", sample, "-o", other), "exists and is not a prep report")
    assert other.read_text() == "<html>my own page</html>"
    before = sample.read_bytes()
    _one_line_error(run("report", sample, "-o", sample), "exists and is not a prep report")
    assert sample.read_bytes() == before


def test_labels_and_per_image_reports_go_one_per_file(sample, tmp_path):
    out = tmp_path / "r.html"
    _one_line_error(run("report", sample, "-o", out, "--label", "a", "--label", "b"), "--label: give one per FILE")
    _one_line_error(run("report", sample, "-o", out, "--per-image", "a.csv", "--per-image", "b.csv"), "--per-image")
    assert not out.exists()
