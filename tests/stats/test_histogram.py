"""Histograms and exact percentiles: numpy.percentile bit for bit, robust min-max, the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import prep
from helpers import make_folder, make_mnist, pil_pixels, run
from prep.errors import StatsFileError
from prep.stats.histogram import DEFAULT_PERCENTILES, ks_statistic, percentile, wasserstein
from prep.stats.moments import ChannelMoments

QS = (0, 0.1, 0.5, 1, 5, 12.5, 33.3333, 50, 66.7, 95, 99, 99.5, 99.9, 100)


def _data(seed, shape, high=256, constant_channel=None):
    x = np.random.default_rng(seed).integers(0, high, shape).astype(np.uint8)
    if constant_channel is not None:
        x[:, constant_channel] = 77
    return x


@pytest.mark.parametrize(
    ("shape", "high", "constant"),
    [((7, 3, 5, 9), 256, None), ((40, 1, 28, 28), 6, None), ((3, 3, 4, 4), 256, 1), ((1, 1, 1, 1), 256, None)],
    ids=["rgb", "ties", "single-valued-channel", "one-pixel"],
)
def test_percentiles_equal_numpy_percentile_bit_for_bit(shape, high, constant):
    images = _data(1, shape, high, constant)
    stats_state = ChannelMoments(shape[1]).update(torch.from_numpy(images))
    pixels = images.transpose(0, 2, 3, 1).reshape(-1, shape[1]) / 255
    for c in range(shape[1]):
        for q in QS:
            assert percentile(stats_state.histogram[c], q) == np.percentile(pixels[:, c], q)


def test_folder_percentiles_and_any_q_from_the_file(tmp_path):
    root = make_folder(tmp_path / "data")
    stats = prep.compute_stats(root, workers=2)
    pixels = np.concatenate([pil_pixels(p) for p in sorted(root.rglob("*")) if p.is_file()]) / 255
    assert stats.percentiles["q"] == list(DEFAULT_PERCENTILES)
    for i, q in enumerate(DEFAULT_PERCENTILES):
        assert [row[i] for row in stats.percentiles["values"]] == list(np.percentile(pixels, q, axis=0))
    stats.save(tmp_path / "s.json")
    loaded = prep.load_stats(tmp_path / "s.json")
    assert loaded.percentile(37.5) == tuple(np.percentile(pixels, 37.5, axis=0))
    np.testing.assert_array_equal(loaded.histogram, stats.histogram)


def test_histograms_merge_by_addition_and_survive_a_split_pass():
    images = _data(2, (30, 3, 6, 7))
    whole = ChannelMoments(3).update(torch.from_numpy(images))
    parts = [ChannelMoments(3).update(torch.from_numpy(images[i : i + 7])) for i in range(0, 30, 7)]
    merged = parts[0]
    for part in parts[1:]:
        merged = merged.merge(part)
    np.testing.assert_array_equal(merged.histogram, whole.histogram)
    np.testing.assert_array_equal(ChannelMoments.from_state_dict(merged.state_dict()).histogram, whole.histogram)
    hist = np.stack([np.bincount(images[:, c].ravel(), minlength=256) for c in range(3)])
    np.testing.assert_array_equal(whole.histogram, hist)


def test_sixteen_bit_images_have_exact_percentiles_from_their_wide_histogram(tmp_path):
    values = np.arange(64, dtype=np.uint16).reshape(8, 8) * 900
    Image.fromarray(values).save(tmp_path / "a.png")
    stats = prep.compute_stats(tmp_path, mode="L", workers=0)
    assert stats.histogram is None  # the 8-bit histogram: none
    q = [0.5, 1, 5, 50, 95, 99, 99.5]
    expected = np.percentile(values.astype(np.float64) / 65535, q)
    assert [stats.percentile(v)[0] for v in q] == expected.tolist()  # bit for bit
    stats.save(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())["percentiles"]["values"] == [
        expected[[0, 1, 2, 3, 4, 5, 6]].tolist()
    ]


def test_data_of_two_kinds_or_units_has_no_histogram_or_percentiles(tmp_path):
    mixed = ChannelMoments(1).update(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    mixed = mixed.merge(ChannelMoments(1).update(torch.ones(1, 1, 2, 2)))
    assert mixed.histogram is None and mixed.wide is None  # float data mixed in: no exact histogram any more
    depths = ChannelMoments(1).update(torch.zeros(1, 1, 2, 2, dtype=torch.uint8))
    depths.update(torch.full((1, 1, 2, 2), 300, dtype=torch.int32))  # 16-bit data: another unit
    assert depths.histogram is None and depths.wide is None and depths.wide_kind == -1
    stats = prep.Stats(source={"kind": "tensor"}, fingerprint=None, mode="L", state=depths)
    assert stats.percentiles is None
    with pytest.raises(StatsFileError, match="percentiles need a histogram"):
        stats.percentile(50)


def test_robust_minmax_maps_the_percentiles_to_the_range_and_clips():
    images = _data(3, (20, 3, 8, 8))
    stats = prep.compute_stats(torch.from_numpy(images))
    low, high = stats.percentile(1), stats.percentile(99)
    out = stats.minmax(percentiles=(1, 99), clip=True)(torch.from_numpy(images))
    assert float(out.min()) == 0.0 and float(out.max()) == 1.0
    x = images.astype(np.float64) / 255
    for c in range(3):
        inside = (x[:, c] > low[c] + 1e-6) & (x[:, c] < high[c] - 1e-6)
        expected = (x[:, c][inside] - low[c]) / (high[c] - low[c])
        np.testing.assert_allclose(out[:, c].numpy()[inside], expected, atol=2e-6)
    unclipped = stats.minmax(percentiles=(1, 99))(torch.from_numpy(images))
    assert float(unclipped.min()) < 0 and float(unclipped.max()) > 1


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d["percentiles"]["values"][0].__setitem__(0, 0.5), "field 'percentiles': does not match"),
        (lambda d: d["percentiles"]["q"].__setitem__(0, 101), "field 'percentiles.q'"),
        (lambda d: d.__setitem__("percentiles", None), "field 'percentiles': must be an object"),
        (lambda d: d["state"]["histogram"][0].__setitem__(3, 10**6), "state.histogram"),
    ],
)
def test_edited_percentiles_and_histograms_are_refused(tmp_path, edit, message):
    prep.compute_stats("sample", workers=0).save(tmp_path / "s.json")
    data = json.loads((tmp_path / "s.json").read_text())
    edit(data)
    (tmp_path / "s.json").write_text(json.dumps(data))
    with pytest.raises(StatsFileError, match=message):
        prep.load_stats(tmp_path / "s.json")


def test_cli_percentiles_are_listed_and_changed_without_a_new_pass(tmp_path, monkeypatch):
    make_mnist(tmp_path)
    out = tmp_path / "m.json"
    assert run("stats", "mnist", "--root", tmp_path, "--percentiles", "0.1,50,99.9", "-o", out).exit_code == 0
    assert json.loads(out.read_text())["percentiles"]["q"] == [0.1, 50.0, 99.9]
    bad = run("stats", "mnist", "--root", tmp_path, "--percentiles", "5,x", "-o", out, "--force")
    assert bad.exit_code == 2 and "percentiles '5,x'" in bad.stderr
    import prep.engine.measure

    monkeypatch.setattr(prep.engine.measure, "_measure", lambda *a: pytest.fail("the histogram is enough"))
    again = run("stats", "mnist", "--root", tmp_path, "--percentiles", "25,75", "-o", out)
    assert again.exit_code == 0 and "is up to date" in again.stdout and "percentile 25" in again.stdout
    assert json.loads(out.read_text())["percentiles"]["q"] == [25.0, 75.0]


def test_wasserstein_and_ks_against_numpy_cdfs():
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 200, 5000), rng.integers(30, 256, 3000)
    ha, hb = np.bincount(a, minlength=256), np.bincount(b, minlength=256)
    cdf_a, cdf_b = np.cumsum(ha) / ha.sum(), np.cumsum(hb) / hb.sum()
    assert wasserstein(ha, hb) == pytest.approx(np.abs(cdf_a - cdf_b)[:-1].sum() / 255, rel=1e-12)
    assert ks_statistic(ha, hb) == pytest.approx(np.abs(cdf_a - cdf_b).max(), rel=1e-12)
    shifted = np.bincount(a + 3, minlength=256)  # every value 3 levels up: W1 is exactly 3/255
    assert wasserstein(ha, shifted) == 3 / 255
    assert wasserstein(ha, ha) == 0 and ks_statistic(ha, ha) == 0
