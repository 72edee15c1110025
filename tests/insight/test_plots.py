"""prep.insight.plots: what is drawn is checked against NumPy on the raw pixels (histogram fractions,
mean, std, percentiles, range); files are written atomically; matplotlib is optional. Also a
smoke test of scripts/train_example.py (a few steps)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from prep.errors import MismatchError
from prep.insight.plots import MISSING_MATPLOTLIB, build_figure, plot_stats

RNG = np.random.default_rng(3)
TRAIN = RNG.integers(0, 200, (4, 3, 10, 10), dtype=np.uint8)
TEST = RNG.integers(40, 256, (3, 3, 10, 10), dtype=np.uint8)


def stats_of(pixels):
    return prep.compute_stats([torch.from_numpy(img) for img in pixels], device="cpu")


@pytest.fixture(scope="module")
def two():
    return stats_of(TRAIN), stats_of(TEST)


def artists(ax, gid):
    return [a for a in [*ax.lines, *ax.patches] if a.get_gid() == gid]


def test_missing_matplotlib_is_one_clear_line(monkeypatch, tmp_path, two):
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with pytest.raises(prep.PrepError) as info:
        plot_stats([two[0]], tmp_path / "hist.png")
    assert str(info.value) == MISSING_MATPLOTLIB == "matplotlib is needed for plots: pip install 'prep[plot]'"
    assert not list(tmp_path.iterdir())


def test_drawn_marks_equal_numpy_on_the_raw_pixels(two):
    pytest.importorskip("matplotlib")
    fig = build_figure(two, labels=["train", "test"])
    axes = fig.axes
    assert len(axes) == 3
    for row, pixels in enumerate((TRAIN, TEST)):
        for c, ax in enumerate(axes):
            values = pixels[:, c].ravel()
            unit = values / 255.0
            (stairs,) = artists(ax, f"histogram:{row}")
            heights, edges, _ = stairs.get_data()
            np.testing.assert_allclose(heights, np.bincount(values, minlength=256) / values.size, rtol=1e-15)
            np.testing.assert_allclose((edges[:-1] + edges[1:]) / 2, np.arange(256) / 255, atol=1e-15)
            (mean,) = artists(ax, f"mean:{row}")
            assert mean.get_xdata()[0] == pytest.approx(unit.mean(), rel=1e-12)
            std = sorted(line.get_xdata()[0] for line in artists(ax, f"std:{row}"))
            np.testing.assert_allclose(std, [unit.mean() - unit.std(), unit.mean() + unit.std()], rtol=1e-12)
            marks = [line.get_xdata()[0] for line in artists(ax, f"percentile:{row}")]
            q = two[row].percentiles["q"]
            np.testing.assert_allclose(marks, np.percentile(unit, q), rtol=1e-12)
            (bar,) = artists(ax, f"range:{row}")
            np.testing.assert_allclose(bar.get_xdata(), [unit.min(), unit.max()], rtol=1e-15)
        labels = [t.get_text() for t in axes[0].get_legend().get_texts()]
        assert labels == ["train", "test"]


def test_plot_writes_a_png_atomically_and_replaces_an_old_one(tmp_path, two):
    pytest.importorskip("matplotlib")
    out = tmp_path / "hist.png"
    out.write_bytes(b"old")
    out.chmod(0o640)
    assert plot_stats(two, out) == out
    with Image.open(out) as img:
        assert img.format == "PNG" and img.height > img.width
    assert (out.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["hist.png"]


def test_a_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path, two, monkeypatch):
    matplotlib_figure = pytest.importorskip("matplotlib.figure")
    out = tmp_path / "hist.png"
    out.write_bytes(b"old")

    def broken(self, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(matplotlib_figure.Figure, "savefig", broken)
    with pytest.raises(prep.PrepError, match=r"hist.png: cannot write the plot \(No space left on device\)"):
        plot_stats(two, out)
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["hist.png"]


def test_sixteen_bit_stats_plot_their_histogram_in_buckets_and_exact_percentiles(tmp_path):
    pytest.importorskip("matplotlib")
    wide = RNG.integers(0, 65536, (3, 1, 8, 8)).astype(np.int32)
    stats = stats_of(wide)
    assert stats.histogram is None
    fig = build_figure([stats], labels=["depth"])
    (ax,) = fig.axes
    (bars,) = artists(ax, "histogram:0")
    unit = wide.ravel() / 65535
    expected, _ = np.histogram(unit, bins=256, range=(unit.min(), unit.max()))
    np.testing.assert_allclose(bars.get_data().values, expected / expected.sum(), rtol=1e-12)
    marks = [line.get_xdata()[0] for line in artists(ax, "percentile:0")]
    assert marks == np.percentile(unit, stats.percentiles["q"]).tolist()
    unit = wide.ravel() / 65535
    assert artists(ax, "mean:0")[0].get_xdata()[0] == pytest.approx(unit.mean(), rel=1e-12)
    np.testing.assert_allclose(artists(ax, "range:0")[0].get_xdata(), [unit.min(), unit.max()], rtol=1e-15)
    plot_stats([stats], tmp_path / "depth.svg")
    assert (tmp_path / "depth.svg").read_text().lstrip().startswith("<?xml")


def test_plot_errors_name_the_option(tmp_path, two):
    pytest.importorskip("matplotlib")
    grey = stats_of(RNG.integers(0, 256, (2, 1, 4, 4), dtype=np.uint8))
    with pytest.raises(MismatchError, match=r"different channel counts \(\[1, 3\]\)"):
        plot_stats([two[0], grey], tmp_path / "x.png")
    with pytest.raises(prep.OptionError, match=r"-o/--out: .*x.jpg: the plot's name must end in .png, .pdf or .svg"):
        plot_stats([two[0]], tmp_path / "x.jpg")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(prep.PrepError, match="exists and is not a regular file"):
        plot_stats([two[0]], tmp_path / "dir.png")
    with pytest.raises(prep.OptionError, match="2 labels for 1 stats files"):
        build_figure([two[0]], labels=["a", "b"])


def test_train_example_smoke(tmp_path):
    """scripts/train_example.py end to end with a handful of steps on a tiny generated dataset."""
    script = Path(__file__).resolve().parents[2] / "scripts" / "train_example.py"
    args = ["--steps", "4", "--n-train", "96", "--n-test", "40", "--batch-size", "16", "--data", tmp_path]
    result = subprocess.run(
        [sys.executable, script, *map(str, args), "--plot", tmp_path / "curves.png"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "mnist-train.stats.json: transforms.Normalize(mean=(" in result.stdout
    assert "raw [0, 1]" in result.stdout and "prep normalize()" in result.stdout
    assert "test acc." in result.stdout
    stats = prep.load_stats(tmp_path / "mnist-train.stats.json")
    assert stats.images == 96 and stats.mode == "L"
    if "loss curves:" in result.stdout:  # matplotlib is installed
        with Image.open(tmp_path / "curves.png") as img:
            assert img.format == "PNG"
    else:
        assert "matplotlib is not installed: no plot" in result.stdout


def test_cli_plot_once_wired_in(tmp_path, two):
    from helpers import run

    paths = []
    for name, stats in zip(("train", "test"), two):
        stats.save(tmp_path / f"{name}.json")
        paths.append(tmp_path / f"{name}.json")
    result = run("plot", *paths, "-o", tmp_path / "shift.png", "--label", "train", "--label", "test")
    if "No such command" in result.output:
        pytest.skip("prep plot is not wired in yet")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert result.exit_code == 2 and MISSING_MATPLOTLIB in result.output
        return
    assert result.exit_code == 0, result.output
    with Image.open(tmp_path / "shift.png") as img:
        assert img.format == "PNG"
    bad = run("plot", paths[0], "-o", tmp_path / "x.png", "--label", "a", "--label", "b")
    assert bad.exit_code == 2 and "--label" in bad.output


def test_sparse_data_gets_a_log_axis_by_default_and_says_so(tmp_path):
    pytest.importorskip("matplotlib")
    from helpers import run
    from prep.insight.plots import build_figure

    rng = np.random.default_rng(6)
    digits = np.zeros((20, 1, 28, 28), np.uint8)  # MNIST-like: 80% background
    digits[:, :, 8:20, 10:18] = rng.integers(1, 256, (20, 1, 12, 8))
    sparse = prep.compute_stats(torch.from_numpy(digits))
    dense = prep.compute_stats(torch.from_numpy(rng.integers(0, 256, (20, 1, 28, 28), np.uint8)))
    assert sparse.histogram[0].max() > 0.5 * sparse.histogram[0].sum()
    log_axis = build_figure([sparse]).axes[0]
    assert log_axis.get_yscale() == "log" and "(log)" in log_axis.get_ylabel()
    linear_axis = build_figure([dense]).axes[0]
    assert linear_axis.get_yscale() == "linear" and "(log)" not in linear_axis.get_ylabel()
    assert build_figure([sparse], log=False).axes[0].get_yscale() == "linear"
    assert build_figure([dense], log=True).axes[0].get_yscale() == "log"
    path = tmp_path / "s.json"
    sparse.save(path)
    assert run("plot", path, "-o", tmp_path / "p.png", "--linear").exit_code == 0
    assert (tmp_path / "p.png").stat().st_size > 0


def test_many_bands_are_small_multiples_named_by_band(tmp_path):
    pytest.importorskip("matplotlib")
    images = RNG.integers(0, 3000, (4, 13, 8, 8)).astype(np.uint16)
    stats = prep.compute_stats(torch.from_numpy(images), mode="bands")
    fig = build_figure([stats])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 13 and len(fig.axes) == 16  # a grid of 4 columns, 3 spare panels hidden
    assert [ax.get_title(loc="left") for ax in visible] == [f"channel B{i}" for i in range(1, 14)]
    assert all(artists(ax, "histogram:0") for ax in visible)
