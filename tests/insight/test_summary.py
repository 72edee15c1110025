"""prep.insight.summary: what prep show prints (provenance, skipped files), and the repr of Stats."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import run
from prep.insight.summary import format_summary


def test_show_prints_provenance_and_skipped_files_and_repr_names_the_numbers(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.full((3, 3, 3), 50, np.uint8)).save(folder / "a.png")
    for i in range(12):
        (folder / f"bad{i:02d}.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "s.json"
    with pytest.warns(prep.PrepWarning):
        stats = prep.compute_stats(folder, workers=0)
    stats.save(out)
    shown = run("show", out).stdout
    assert f"by prep {prep.__version__}" in shown and stats.created in shown
    assert "bad00.jpg: cannot decode" in shown and "bad09.jpg" in shown and "bad10.jpg" not in shown
    assert "... and 2 more" in shown
    assert repr(stats) == (
        f"Stats(source={str(folder)!r}, mode='RGB', images=1, mean=(0.1961, 0.1961, 0.1961), "
        "std=(0.0000, 0.0000, 0.0000))"
    )


# ------------------------------------------------------------------ per class


def _classes_of_levels(levels: dict[str, int]) -> prep.Stats:
    """Stats of classes of one image each: noise (std 60, as natural images) around the given raw levels."""
    from prep.stats.moments import ChannelMoments

    rng = np.random.default_rng(0)
    states = {}
    for name, level in levels.items():
        pixels = np.clip(rng.normal(level, 60, (1, 3, 16, 16)), 0, 255).astype(np.uint8)
        states[name] = ChannelMoments(3).update(torch.from_numpy(pixels))
    whole = ChannelMoments(3)
    for state in states.values():
        whole = whole.merge(state)
    return prep.Stats(
        source={"kind": "folder", "path": "pets", "split": None},
        fingerprint=None,
        mode="RGB",
        state=whole,
        classes=tuple(levels),
        class_states=states,
    )


def test_the_summary_has_a_class_table_and_names_the_much_darker_class(tmp_path):
    from helpers import make_class_folder

    make_class_folder(tmp_path / "pets")
    with pytest.warns(prep.PrepWarning):
        stats = prep.compute_stats(tmp_path / "pets", per_class=True, workers=0)
    text = format_summary(stats)
    assert "classes               5 (ImageFolder's order); per class: images, mean, std" in text
    night = stats.per_class["night"]
    assert f"night                        5{night.mean[0]:>9.4f}" in text
    assert "class 'night' is much darker than the rest: mean 0.08 vs 0.51" in text
    assert "brighter" not in text and "'cats' is much" not in text
    assert "no measured image in 1 class(es): zebras" in text
    assert text.splitlines()[-1].startswith("transforms.Normalize(")
    assert "classes " not in format_summary(prep.compute_stats(tmp_path / "pets", workers=0))


def test_a_thousand_classes_show_only_the_extremes_in_a_few_lines():
    levels = {f"class{i:04d}": 100 + (i % 50) for i in range(1000)}
    levels["class0500"], levels["class0700"] = 5, 250  # one much darker, one much brighter
    text = format_summary(_classes_of_levels(levels))
    lines = text.splitlines()
    assert "classes               1000 (ImageFolder's order)" in text
    assert "  ... 990 classes between the darkest and the brightest" in lines
    table = lines.index("  ... 990 classes between the darkest and the brightest")
    assert lines[table - 5].startswith("class0500") and lines[table + 5].startswith("class0700")
    assert "class 'class0500' is much darker than the rest" in text
    assert "class 'class0700' is much brighter than the rest" in text
    assert len(lines) < 45


def test_classes_alike_are_not_named_and_many_far_ones_are_counted():
    assert "much" not in format_summary(_classes_of_levels({"a": 120, "b": 125, "c": 118}))
    levels = {f"dark{i}": 5 for i in range(5)} | {f"mid{i}": 128 for i in range(40)}
    text = format_summary(_classes_of_levels(levels))
    assert "5 classes are much darker than the rest (mean vs the rest's): 'dark" in text and "; and 2 more" in text
