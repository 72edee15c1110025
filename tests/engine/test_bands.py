"""The bands mode end to end: multispectral GeoTIFFs, 16-bit and float data, nodata, N-channel arrays.

Every number is checked against an independent reference over exactly the valid pixels: exact
``Fraction`` arithmetic for integers, NumPy float64 and ``numpy.percentile`` (bit for bit for
integer data, within the reported bounds for floats).
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import torch

import prep
from helpers import run
from helpers.tiff_files import write_float32_nan, write_geotiff, write_int16_negatives, write_sentinel2
from prep.errors import OptionError, SourceError

Q = [0.5, 1.0, 5.0, 50.0, 95.0, 99.0, 99.5]


def _folder(tmp_path, write, count=3, **kwargs):
    folder = tmp_path / "tiles"
    folder.mkdir()
    arrays = [write(folder / f"t{i}.tif", seed=i, **kwargs) for i in range(count)]
    return folder, arrays


def _valid(arrays, nodata):
    """Per band, every valid value of the images, pooled (float64)."""
    bands = arrays[0].shape[0]
    out = []
    for c in range(bands):
        values = np.concatenate([a[c].ravel() for a in arrays]).astype(np.float64)
        keep = ~np.isnan(values)
        if nodata is not None and not math.isnan(nodata):
            keep &= values != nodata
        out.append(values[keep])
    return out


def _exact_mean_std(values: np.ndarray) -> tuple[float, float]:
    ints = [int(v) for v in values]
    n, s, q = len(ints), sum(ints), sum(v * v for v in ints)
    return float(Fraction(s, n)), math.sqrt(Fraction(n * q - s * s, n * n))


def test_a_folder_of_sentinel2_tiles_is_measured_per_band_over_valid_pixels(tmp_path):
    folder, arrays = _folder(tmp_path, write_sentinel2)
    stats = prep.compute_stats(folder, workers=2)
    assert stats.mode == "bands" and stats.units == "raw" and stats.channels == 13
    assert stats.band_names[:3] == ("B01", "B02", "B03") and stats.nodata == (0.0,) * 13
    for c, values in enumerate(_valid(arrays, 0)):
        mean, std = _exact_mean_std(values)
        assert stats.mean[c] == mean and stats.std[c] == pytest.approx(std, rel=1e-15)
        assert (stats.min[c], stats.max[c]) == (values.min(), values.max())
        assert stats.count[c] == values.size
        total = sum(a[c].size for a in arrays)
        assert stats.valid_fraction[c] == values.size / total and stats.nodata_count[c] == total - values.size
        assert [stats.percentile(q)[c] for q in Q] == np.percentile(values, Q).tolist()  # bit for bit


def test_int16_with_negative_values_and_interleaved_bands(tmp_path):
    folder, arrays = _folder(tmp_path, write_int16_negatives)
    stats = prep.compute_stats(folder, workers=0)
    assert stats.nodata == (-9999.0,) * 4 and stats.channels == 4
    for c, values in enumerate(_valid(arrays, -9999)):
        mean, std = _exact_mean_std(values)
        assert stats.mean[c] == mean and stats.std[c] == pytest.approx(std, rel=1e-15)
        assert stats.min[c] == values.min() < 0
        assert [stats.percentile(q)[c] for q in Q] == np.percentile(values, Q).tolist()


def test_float32_with_nan_has_bounded_percentiles(tmp_path):
    folder, arrays = _folder(tmp_path, write_float32_nan)
    stats = prep.compute_stats(folder, workers=0)
    assert stats.nodata is None  # a NaN nodata tag: NaN is left out of float data anyway
    for c, values in enumerate(_valid(arrays, None)):
        assert stats.mean[c] == pytest.approx(values.mean(), rel=1e-12)
        assert stats.std[c] == pytest.approx(values.std(), rel=1e-9)
        assert stats.summary.nonfinite[c] == sum(int(np.isnan(a[c]).sum()) for a in arrays)
        for q, truth in zip(Q, np.percentile(values, Q)):
            low, high = stats.percentile_bounds(q)[c]
            assert low <= truth <= high and high - low <= 2**-6 * abs(truth)


def test_nodata_given_on_the_command_line_and_bands_selected_from_one(tmp_path):
    folder, arrays = _folder(tmp_path, write_sentinel2, count=2)
    stats = prep.compute_stats(folder, workers=0, bands="4,3,2", nodata="none", band_names="red,green,blue")
    assert stats.channels == 3 and stats.band_names == ("red", "green", "blue") and stats.nodata is None
    assert stats.bands == (3, 2, 1) and stats.options["bands"] == [4, 3, 2]
    for c, band in enumerate((3, 2, 1)):
        values = np.concatenate([a[band].ravel() for a in arrays]).astype(np.float64)  # zeros count: no nodata
        assert stats.mean[c] == pytest.approx(values.mean(), rel=1e-15)
    with pytest.raises(OptionError, match=r"--bands 14: .* has 13 band"):
        prep.compute_stats(folder, workers=0, bands="14")
    with pytest.raises(OptionError, match="band numbers start at 1"):
        prep.compute_stats(folder, workers=0, bands="0,1")


def test_the_normalize_transform_standardizes_what_a_loader_gives(tmp_path):
    import tifffile

    folder, _ = _folder(tmp_path, write_int16_negatives, count=2)
    stats = prep.compute_stats(folder, workers=0, nodata="none")
    transform = stats.normalize()
    loaded = [torch.from_numpy(tifffile.imread(folder / f"t{i}.tif")).permute(2, 0, 1) for i in range(2)]
    out = torch.stack([transform(x) for x in loaded]).double()  # as a loader gives them: (C, H, W) int16
    pooled = out.transpose(0, 1).reshape(4, -1)
    assert torch.allclose(pooled.mean(1), torch.zeros(4, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(pooled.std(1, unbiased=False), torch.ones(4, dtype=torch.float64), atol=1e-5)
    assert "ToDtype(scale=False)" in repr(transform).replace(" ", "").replace("dtype=torch.float32,", "")


@pytest.mark.parametrize(("channels", "layout"), [(2, None), (13, None), (200, "NCHW")])
def test_arrays_of_any_channel_count_are_measured_in_their_values(tmp_path, channels, layout):
    rng = np.random.default_rng(channels)
    images = rng.integers(0, 4000, (6, channels, 16, 20)).astype(np.uint16)
    np.save(tmp_path / "x.npy", images)
    stats = prep.compute_stats(tmp_path / "x.npy", layout=layout)
    assert stats.mode == "bands" and stats.channels == channels
    flat = images.transpose(1, 0, 2, 3).reshape(channels, -1).astype(np.float64)
    np.testing.assert_allclose(stats.mean, flat.mean(1), rtol=1e-15)
    np.testing.assert_allclose(stats.std, flat.std(1), rtol=1e-12)
    out = stats.normalize()(torch.from_numpy(images.astype(np.int64)))
    pooled = out.transpose(0, 1).reshape(channels, -1).double()
    assert pooled.mean(1).abs().max() < 1e-5 and (pooled.std(1, unbiased=False) - 1).abs().max() < 1e-5
    if channels <= 64:
        assert stats.covariance is not None and len(stats.covariance) == channels
        np.testing.assert_allclose(np.diag(stats.covariance), flat.var(1), rtol=1e-9)


def test_shards_merge_to_the_whole_bit_for_bit(tmp_path):
    folder, _ = _folder(tmp_path, write_sentinel2, count=4)
    whole = prep.compute_stats(folder, workers=0)
    parts = [prep.compute_stats(folder, workers=0, shard=f"{i}/3") for i in range(3)]
    merged = prep.merge_stats(parts)
    assert merged.mean == whole.mean and merged.std == whole.std and merged.percentiles == whole.percentiles
    assert np.array_equal(merged.state.wide, whole.state.wide) and merged.count == whole.count
    whole.save(tmp_path / "s.json")
    again = prep.load_stats(tmp_path / "s.json")
    assert again.state == whole.state and again.band_names == whole.band_names and again.nodata == whole.nodata


def test_files_of_other_band_counts_are_refused_naming_both(tmp_path):
    folder, _ = _folder(tmp_path, write_sentinel2, count=1)
    write_geotiff(folder / "t9.tif", np.ones((12, 8, 8), np.uint16))
    with pytest.raises(SourceError, match=r"t9\.tif: 12 band\(s\), but .*t0\.tif has 13"):
        prep.compute_stats(folder, workers=0)


def test_an_all_nodata_file_is_skipped_with_its_reason(tmp_path):
    folder, arrays = _folder(tmp_path, write_sentinel2, count=2)
    write_geotiff(folder / "t9.tif", np.zeros((13, 8, 8), np.uint16), nodata=0)
    with pytest.warns(prep.PrepWarning, match="every pixel is nodata"):
        stats = prep.compute_stats(folder, workers=0)
    assert stats.skipped_count == 1 and stats.skipped[0]["reason"] == "every pixel is nodata"
    assert stats.mean[0] == _exact_mean_std(_valid(arrays, 0)[0])[0]


def test_a_nodata_value_the_dtype_cannot_hold_is_one_line(tmp_path):
    folder, _ = _folder(tmp_path, write_sentinel2, count=1)
    result = run("stats", str(folder), "--nodata", "-5", "-o", str(tmp_path / "s.json"))
    assert result.exit_code == 2 and "nodata -5 does not fit uint16 data" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "s.json").exists()


def test_a_tiff_pil_reads_wrong_is_refused_in_rgb_mode(tmp_path):
    folder, _ = _folder(tmp_path, write_sentinel2, count=1)
    with pytest.raises(OptionError, match=r"a TIFF of 13 band.*use --mode bands"):
        prep.compute_stats(folder, workers=0, mode="RGB")


def test_the_cli_prints_a_table_per_band_and_writes_the_units(tmp_path):
    folder, _ = _folder(tmp_path, write_sentinel2, count=2)
    out = tmp_path / "s.json"
    result = run("stats", str(folder), "-o", str(out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["units"] == "raw" and "B8A" in data["band_names"] and data["options"]["nodata"] == [0.0] * 13
    assert "B8A" in result.output and "raw" in result.output


def test_per_image_rows_leave_out_nodata(tmp_path):
    import csv

    folder, arrays = _folder(tmp_path, write_sentinel2, count=2)
    prep.compute_stats(folder, workers=0, per_image=tmp_path / "rows.csv")
    with open(tmp_path / "rows.csv", newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    band = arrays[1][4].astype(np.float64)
    assert float(rows["t1.tif"]["mean_B5"]) == pytest.approx(band[band != 0].mean(), rel=1e-6)
    assert float(rows["t1.tif"]["min_B5"]) == band[band != 0].min()


def test_python_datasets_of_tensors_and_pil_images_are_measured_in_bands():
    from PIL import Image

    tensors = [torch.randint(-500, 5000, (13, 16, 16), dtype=torch.int16) for _ in range(3)]
    stats = prep.compute_stats(tensors)
    assert stats.mode == "bands" and stats.channels == 13
    flat = torch.stack(tensors).transpose(0, 1).reshape(13, -1).double()
    np.testing.assert_allclose(stats.mean, flat.mean(1).numpy(), rtol=1e-15)
    images = [Image.fromarray(np.full((4, 5), 1000 * (i + 1), np.uint16)) for i in range(2)]
    grey = prep.compute_stats(images, mode="bands")
    assert grey.channels == 1 and grey.mean == (1500.0,) and grey.units == "raw"


def test_a_tiff_too_large_to_hold_is_reduced_a_piece_at_a_time(tmp_path, monkeypatch):
    from prep.decode import decoders

    folder, _ = _folder(tmp_path, write_sentinel2, count=2)
    whole = prep.compute_stats(folder, workers=0, per_image=tmp_path / "whole.csv")
    monkeypatch.setattr(decoders, "WHOLE_IMAGE_BYTES", 1000)  # every tile goes piece by piece
    monkeypatch.setattr(decoders, "PIECE_BYTES", 13 * 52 * 2 * 16)  # 16 rows a piece: 3 pieces a tile
    from prep.decode import tiff

    read = []
    real = tiff.iter_band_rows
    monkeypatch.setattr(tiff, "iter_band_rows", lambda *a, **k: (read.append(p) or p for p in real(*a, **k)))
    pieces = prep.compute_stats(folder, workers=0, per_image=tmp_path / "pieces.csv")
    assert [p.shape[1] for p in read] == [16, 16, 8] * 2  # 40 rows of each tile in three pieces
    assert pieces.images == whole.images == 2
    assert (pieces.mean, pieces.std, pieces.count) == (whole.mean, whole.std, whole.count)
    assert pieces.percentiles == whole.percentiles and pieces.covariance is None  # nodata: no covariance
    np.testing.assert_allclose(pieces.per_image_std_mean, whole.per_image_std_mean, rtol=1e-12)
    assert (tmp_path / "pieces.csv").read_text().splitlines()[1].split(",")[:4] == (
        (tmp_path / "whole.csv").read_text().splitlines()[1].split(",")[:4]
    )


@pytest.mark.parametrize("workers", [0, 2])
def test_exact_percentiles_of_float_data_equal_numpy_bit_for_bit(tmp_path, workers):
    folder, arrays = _folder(tmp_path, write_float32_nan)
    stats = prep.compute_stats(folder, workers=workers, exact_percentiles=True)
    assert stats.percentiles["exact"] is True
    for c, values in enumerate(_valid(arrays, None)):
        assert [stats.percentile(q)[c] for q in Q] == np.percentile(values, Q).tolist()
    stats.save(tmp_path / "s.json")
    again = prep.load_stats(tmp_path / "s.json")
    assert again.percentiles == stats.percentiles
    data = json.loads((tmp_path / "s.json").read_text())
    data["percentiles"]["values"][0][3] += 1.0  # outside its bin
    (tmp_path / "edited.json").write_text(json.dumps(data))
    with pytest.raises(prep.StatsFileError, match="lies outside its bin"):
        prep.load_stats(tmp_path / "edited.json")


def test_exact_percentiles_of_float_arrays():
    rng = np.random.default_rng(3)
    images = rng.normal(100, 30, (7, 2, 9, 8))  # float64
    stats = prep.compute_stats(torch.from_numpy(images), mode="bands", exact_percentiles=True)
    flat = images.transpose(1, 0, 2, 3).reshape(2, -1)
    for c in range(2):
        assert [stats.percentile(q)[c] for q in Q] == np.percentile(flat[c], Q).tolist()


def test_an_up_to_date_file_is_measured_again_for_other_bands_or_nodata(tmp_path):
    folder, _ = _folder(tmp_path, write_sentinel2, count=1)
    out = str(tmp_path / "s.json")
    _, reused = prep.load_or_compute(out, folder, workers=0)
    assert not reused
    _, reused = prep.load_or_compute(out, folder, workers=0)
    assert reused  # up to date
    again, reused = prep.load_or_compute(out, folder, workers=0, nodata="none")
    assert not reused and again.nodata is None
    again, reused = prep.load_or_compute(out, folder, workers=0, bands="1,2")
    assert not reused and again.channels == 2
    _, reused = prep.load_or_compute(out, folder, workers=0, bands="1,2")
    assert reused


def test_whitening_a_folder_of_multiband_tiffs_equals_whitening_their_array(tmp_path):
    folder = tmp_path / "tiles"
    folder.mkdir()
    rng = np.random.default_rng(4)
    tiles = [rng.integers(0, 3000, (5, 6, 7)).astype(np.uint16) for _ in range(4)]
    for i, tile in enumerate(tiles):
        write_geotiff(folder / f"t{i}.tif", tile)
    np.save(tmp_path / "tiles.npy", np.stack(tiles))
    from_files = prep.compute_cross_moments(folder, workers=0)
    from_array = prep.compute_cross_moments(tmp_path / "tiles.npy")
    assert from_files.count == from_array.count == 4
    torch.testing.assert_close(from_files.mean(), from_array.mean())
    torch.testing.assert_close(from_files.covariance(), from_array.covariance())
    result = run("whiten", str(folder), "--resize", "4", "-o", str(tmp_path / "w.pt"))
    assert result.exit_code == 2 and "not --mode bands" in result.output and "Traceback" not in result.output
