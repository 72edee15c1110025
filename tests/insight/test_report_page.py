"""prep report's page (prep.insight.report_page): each section from the file's data and only then,
the file's numbers in its tables, nothing fetched, every string from a stats file escaped,
thumbnails that never fail the report, and an output written like every prep output."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import zipfile

import pytest
import torch

import prep
from helpers.report_data import (
    BROKEN,
    HOSTILE,
    IMG,
    SCRIPT,
    TableCells,
    cell_text,
    expected_cells,
    hostile_stats,
)
from prep.errors import MismatchError, OptionError, OutputError, PrepError
from prep.insight.exports import TARGETS
from prep.insight.report_page import MAX_FILES, build_report, read_brightness, report
from prep.insight.thumbnails import LIMIT


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    path = tmp_path_factory.mktemp("report") / "sample.json"
    prep.compute_stats("sample", workers=0, progress=False).save(path)
    return path


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    """``(folder, stats file, per-image CSV)`` of a folder of hostile names and suspicious images."""
    return hostile_stats(tmp_path_factory.mktemp("dirty"))


def _cells(page: str) -> list[dict]:
    parser = TableCells()
    parser.feed(page)
    return parser.cells


def test_the_sample_page_has_the_file_s_numbers_and_each_section(sample):
    page = build_report(sample)
    data = json.loads(sample.read_text())
    stats = prep.load_stats(sample)
    (cells,) = _cells(page)
    expected = expected_cells(data)
    assert set(expected) <= set(cells)
    for key, value in expected.items():
        shown, text = cells[key]
        assert (int(shown) if isinstance(value, int) else float(shown)) == value, key  # exactly, not rounded
        assert text == cell_text(value), key
    assert f"<code>{stats.normalize_line()}</code>" in page
    assert page.count('class="copy"') == 1 + len(TARGETS)  # the Normalize line and each library's export
    for target in ("torchvision", "albumentations", "hf", "timm", "kornia", "monai", "dali", "ffcv", "keras"):
        assert f'id="export-0-{target}"' in page
    assert page.count('<svg class="chart histogram"') == 3 and 'data-series="1"' in page
    assert page.count('class="scale-linear"') == page.count('class="scale-log"') == 3
    assert "Covariance and PCA" in page and "ImageNet axis 1" in page and "0.2175" in page
    for absent in ('id="compare"', "Skipped files", "Suspicious images", "Brightness of the images", "Per class"):
        assert absent not in page
    assert len(page.encode()) < 150_000  # about 56 KB


def test_the_page_asks_the_network_for_nothing(sample, dirty):
    page = build_report([sample, dirty[1]])
    assert "http://" not in page and "https://" not in page and "//" not in re.sub(r"</\w+>|<!--.*?-->", "", page)
    for attribute in re.findall(r'\s(?:src|href)="([^"]*)"', page):
        assert attribute.startswith(("data:", "#")), attribute
    assert "@import" not in page and "url(" not in page.replace("url(#", "")
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in policy and "img-src data:" in policy
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in policy  # only prep's own script may run
    assert page.count("<script") == 1


def test_sections_appear_only_with_their_data(tmp_path):
    images = [torch.rand(3, 6, 5) for _ in range(4)]  # float data: bounded percentiles, no bars, no covariance
    page = build_report(prep.compute_stats(images, workers=0, progress=False))
    assert page.count('<svg class="chart histogram"') == 3
    assert "summary marks only" in page and "no bars: data beyond 8 bits" in page
    assert 'data-field="percentile_' in page and "within 2**-7 relative" in page
    assert "Covariance and PCA" not in page and "Suspicious images" not in page
    mixed = prep.compute_stats([torch.rand(3, 6, 5), torch.zeros(3, 6, 5, dtype=torch.uint8)], workers=0)
    page = build_report(mixed)  # two kinds of data: no histogram at all
    assert "no histogram: data of several kinds" in page and 'data-field="percentile_' not in page
    grey = prep.compute_stats("sample", mode="L", workers=0, progress=False, covariance=True)
    page = build_report(grey)
    assert page.count('<svg class="chart histogram"') == 1
    assert "Covariance and PCA" in page and "eigenvalue" not in page  # one channel has no principal axes


def test_two_files_are_compared_and_overlaid(sample, dirty):
    page = build_report([sample, dirty[1]], labels=["train", "test"])
    comparison = prep.compare_stats(sample, dirty[1])
    assert not comparison.ok
    assert 'id="compare"' in page and 'class="verdict drift"' in page
    assert page.count('<tr class="fail"') == sum(
        abs(d) > comparison.max_shift or not 1 / comparison.max_std_ratio <= r <= comparison.max_std_ratio
        for d, r in zip(comparison.mean_shift, comparison.std_ratio)
    )
    for c, shift in enumerate(comparison.mean_shift):
        assert f'data-field="mean_shift" data-value="{shift!r}"' in page
        assert f'data-field="wasserstein" data-value="{comparison.wasserstein[c]!r}"' in page
    charts = re.findall(r'<svg class="chart histogram".*?</svg>', page, re.S)
    assert len(charts) == 3
    for chart in charts:
        assert 'data-series="2"' in chart
        assert chart.count('class="series" data-file="0"') == chart.count('class="series" data-file="1"') == 2
        assert 'class="mark mark-mean" data-file="1"' in chart
    assert len(_cells(page)) == 2 and "<title>prep report: train vs test</title>" in page
    same = build_report([sample, sample], max_shift=10, max_std_ratio=10)
    assert 'class="verdict same"' in same and "sample_data [sample.json]" in same  # equal labels told apart


def test_what_the_page_refuses(sample, tmp_path):
    grey = tmp_path / "grey.json"
    prep.compute_stats("sample", mode="L", workers=0, progress=False).save(grey)
    with pytest.raises(MismatchError, match="different channel counts"):
        build_report([sample, grey])
    with pytest.raises(OptionError, match="at least one"):
        build_report([])
    with pytest.raises(OptionError, match=f"at most {MAX_FILES}"):
        build_report([sample] * (MAX_FILES + 1))
    with pytest.raises(OptionError, match="2 labels for 1"):
        build_report(sample, labels=["a", "b"])
    with pytest.raises(OptionError, match="per-image reports for 1"):
        build_report(sample, per_image=[None, None])


def test_strings_from_a_stats_file_are_text_never_markup(dirty):
    _, path, csv = dirty
    stats = prep.load_stats(path)
    object.__setattr__(stats, "per_class", {SCRIPT: {"mean": [0.1] * 3, "std": [0.2] * 3, "images": 3}})
    page = build_report(stats, labels=[IMG], per_image=[csv])
    assert page.count("<script") == 1 and "<img src=x" not in page and "<b>" not in page
    text = page.replace("&#34;", '"').replace("&#39;", "'")
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;.png" in text  # an outlier's name, as text
    assert '"&gt;&lt;img src=x onerror=window.__pwned=3&gt;.jpg' in text  # a skipped file's name
    assert "&lt;b&gt;bold&lt;b&gt; été 日本.txt" in text  # non-ASCII kept as it is
    assert "<title>prep report: &#34;&gt;&lt;img src=x onerror=window.__pwned=2&gt;</title>" in page
    assert "Per class" in page and "<th>&lt;script&gt;window.__pwned=1&lt;/script&gt;</th>" in page
    for name in HOSTILE:
        assert name not in page


def test_suspicious_images_are_thumbnails_read_from_the_source(dirty):
    folder, path, _ = dirty
    stats = prep.load_stats(path)
    page = build_report(path)
    named = sum(len(e["images"]) * (2 if kind == "duplicates" else 1) for kind, e in stats.outliers.items())
    assert named and page.count('<img src="data:image/') == named
    assert 'data-kind="duplicates"' in page and page.count('<div class="pair">') == 1
    assert 'class="missing"' not in page
    (folder / f"{SCRIPT}.png").unlink()  # gone since the pass: a missing thumbnail, not a failure
    page = build_report(path)
    gone = [name for entry in stats.outliers.values() for name in entry["images"]].count(f"{SCRIPT}.png")
    assert gone and page.count('<img src="data:image/') == named - gone
    assert page.count('<div class="missing" title="no such file">missing: no such file</div>') == gone
    without = build_report(path, thumbnails=False)
    assert "<img" not in without and "&lt;script&gt;window.__pwned=1&lt;/script&gt;.png" in without


def test_thumbnails_are_bounded_and_stay_inside_the_source_folder(dirty):
    _, path, _ = dirty
    stats = prep.load_stats(path)
    names = [f"a/img{i:02d}.png" for i in range(10)]
    outliers = {kind: {"count": 10, "images": names} for kind in ("constant", "near_black", "near_white", "brightness")}
    outliers["brightness"]["k"] = 4.0
    pairs = [["../dirty.json", "/etc/passwd"], [BROKEN + ".jpg", "a/img00.png"]] + [names[:2]] * 4
    outliers["duplicates"] = {"count": 12, "images": pairs}
    page = build_report(dataclasses.replace(stats, outliers=outliers))
    assert page.count('<img src="data:image/') == LIMIT - 3  # 3 of the 48 reads found no image
    assert page.count(f"missing: not shown: a report shows at most {LIMIT} thumbnails") == 40 + 12 - LIMIT
    assert page.count("missing: the name leads outside the source folder; not read") == 2
    assert "missing: cannot decode: " in page and "and 6 more" in page


def test_thumbnails_of_archives_and_of_sources_without_files(tmp_path, dirty):
    folder = dirty[0]
    archive = tmp_path / "part.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name in ("img00.png", "img01.png", "copy of img03.png", "img03.png", "white.png"):
            z.write(folder / "a" / name, f"a/{name}")
    stats = prep.compute_stats(archive, workers=0, progress=False, per_image=tmp_path / "part.csv")
    assert stats.outliers["duplicates"]["count"] == 1
    page = build_report(stats)
    assert page.count('<img src="data:image/') == 4 and 'class="missing"' not in page  # the pair, white (constant too)
    tensors = [torch.full((3, 4, 4), 0.0)] + [torch.rand(3, 4, 4) for _ in range(3)]
    stats = prep.compute_stats(tensors, workers=0, progress=False, per_image=tmp_path / "t.csv")
    page = build_report(stats)
    assert "missing: a dataset source has no image files to read thumbnails from" in page


def test_the_brightness_of_the_images_from_the_per_image_report(dirty, tmp_path):
    _, path, csv = dirty
    stats = prep.load_stats(path)
    page = build_report(path, per_image=[csv])
    assert f'<svg class="chart distribution" viewBox="0 0 640 230" role="img" data-values="{stats.images}">' in page
    assert page.count("mark mark-threshold") == 2 and f"{stats.images} images from dirty.csv" in page
    assert len(read_brightness(csv, 3)) == stats.images
    bad = tmp_path / "bad.csv"
    bad.write_text("index,name\n0,x\n")
    with pytest.raises(PrepError, match=r"bad\.csv: not a prep per-image report of 3-channel data"):
        build_report(path, per_image=[bad])
    bad.write_text("index,name,mean_R,mean_G,mean_B\n0,x,0.1,zero,0.3\n")
    with pytest.raises(PrepError, match=r"bad\.csv: line 2: not a per-image report row"):
        build_report(path, per_image=[bad])
    with pytest.raises(PrepError, match="cannot read the per-image report"):
        build_report(path, per_image=[tmp_path / "none.csv"])


def test_per_class_statistics_only_where_the_stats_hold_them(sample):
    stats = prep.load_stats(sample)
    assert "Per class" not in build_report(stats)
    object.__setattr__(
        stats,
        "per_class",
        {
            "cats": {"mean": [0.4, 0.35, 0.28], "std": [0.2, 0.18, 0.15], "images": 12},
            "dogs": {"mean": [0.3, 0.3, 0.4], "std": "not numbers"},  # left out
        },
    )
    page = build_report(stats)
    assert "Per class" in page and '<th>cats</th><td class="num">12</td>' in page and "dogs" not in page


def test_a_file_measured_with_per_class_has_its_classes_in_the_report(tmp_path):
    from helpers import make_class_folder

    make_class_folder(tmp_path / "pets")
    out = tmp_path / "pets.json"
    with pytest.warns(prep.PrepWarning):
        prep.compute_stats(tmp_path / "pets", per_class=True, workers=0).save(out)
    stats = prep.load_stats(out)
    page = build_report(out)
    assert page.count('<table class="classes">') == 1
    for name, part in stats.per_class.items():
        assert f'<th>{name}</th><td class="num">{part.images}</td>' in page
    assert "<th>zebras</th>" not in page  # a class without a measured image has no row


def test_the_report_is_written_like_every_prep_output(sample, tmp_path):
    out = tmp_path / "r.html"
    assert report(sample, out) == out
    first = out.read_text()
    assert first.startswith("<!DOCTYPE html>") and '<meta name="generator" content="prep report' in first
    report([sample, sample], out)  # its own report is replaced
    assert 'id="compare"' in out.read_text()
    stats_copy = tmp_path / "copy.json"
    stats_copy.write_bytes(sample.read_bytes())
    with pytest.raises(OutputError, match="exists and is not a prep report"):
        report(sample, stats_copy)
    assert stats_copy.read_bytes() == sample.read_bytes()
    with pytest.raises(OutputError, match="is not a regular file"):
        report(sample, tmp_path)
    with pytest.raises(OutputError, match="does not exist"):
        report(sample, tmp_path / "no" / "r.html")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["copy.json", "r.html"]  # no temporary file left
