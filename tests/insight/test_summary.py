"""prep.insight.summary: what prep show prints (provenance, skipped files), and the repr of Stats."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import prep
from helpers import run


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
