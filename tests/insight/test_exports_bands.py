"""Exports of multispectral statistics: torchgeo, TerraTorch and STAC, in the data's own values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import prep
from helpers import run
from helpers.tiff_files import write_sentinel2


@pytest.fixture(scope="module")
def s2(tmp_path_factory):
    folder = tmp_path_factory.mktemp("s2")
    arrays = [write_sentinel2(folder / f"t{i}.tif", seed=i) for i in range(2)]
    return prep.compute_stats(folder, workers=0), arrays


def test_torchgeo_normalize_matches_prep_own_transform(s2):
    stats, arrays = s2
    kornia = pytest.importorskip("kornia")
    exported = stats.export("torchgeo")
    assert exported["units"] == "the data's own values" and exported["band_names"] == list(stats.band_names)
    assert exported["mean"] == list(stats.mean) and exported["std"] == list(stats.std)
    namespace = {"torch": torch, "K": kornia.augmentation}

    class DataModule:
        def __init__(self) -> None:
            exec(exported["snippet"], namespace, {"self": self})

    module = DataModule()
    image = torch.from_numpy(arrays[0].astype(np.float32))
    theirs = module.aug({"image": image[None]})["image"][0]
    ours = stats.normalize()(torch.from_numpy(arrays[0].astype(np.int64)))
    torch.testing.assert_close(theirs, ours, rtol=1e-5, atol=1e-5)


def test_terratorch_lists_means_and_stds(s2):
    stats, _ = s2
    exported = stats.export("terratorch")
    assert exported["means"] == list(stats.mean) and exported["stds"] == list(stats.std)
    assert exported["snippet"].startswith("means: [")


def test_stac_raster_bands_hold_statistics_and_a_histogram_of_the_valid_pixels(s2):
    stats, arrays = s2
    bands = stats.export("stac")["raster:bands"]
    assert len(bands) == 13
    for c, band in enumerate(bands):
        values = np.concatenate([a[c].ravel() for a in arrays]).astype(np.float64)
        values = values[values != 0]
        assert band["nodata"] == 0.0
        st = band["statistics"]
        assert (st["minimum"], st["maximum"]) == (values.min(), values.max())
        assert st["mean"] == pytest.approx(values.mean(), rel=1e-15)
        assert st["valid_percent"] == pytest.approx(100 * values.size / sum(a[c].size for a in arrays))
        hist = band["histogram"]
        expected, _ = np.histogram(values, bins=hist["count"], range=(hist["min"], hist["max"]))
        assert hist["buckets"] == expected.tolist()


def test_the_cli_exports_stac_as_json(s2, tmp_path):
    stats, _ = s2
    stats.save(tmp_path / "s.json")
    result = run("export", str(tmp_path / "s.json"), "--to", "stac", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["raster:bands"][0]["statistics"]["valid_percent"] > 0


def test_pystac_reads_the_raster_bands_and_an_item_carries_them(s2):
    pystac = pytest.importorskip("pystac")
    from pystac.extensions.raster import RasterBand, RasterExtension

    stats, _ = s2
    bands = stats.export("stac")["raster:bands"]
    item = pystac.Item("tile", None, None, __import__("datetime").datetime(2026, 1, 1), {})
    asset = pystac.Asset("t0.tif", media_type=pystac.MediaType.COG)
    item.add_asset("data", asset)
    raster = RasterExtension.ext(asset, add_if_missing=True)
    raster.bands = [RasterBand(dict(band)) for band in bands]
    again = RasterExtension.ext(pystac.Item.from_dict(item.to_dict()).assets["data"]).bands
    assert again is not None and len(again) == 13
    for band, ours, mean, std in zip(again, bands, stats.mean, stats.std):
        assert band.nodata == 0.0 and (band.statistics.mean, band.statistics.stddev) == (mean, std)
        assert band.statistics.valid_percent == ours["statistics"]["valid_percent"]
        assert band.histogram.buckets == ours["histogram"]["buckets"] and band.histogram.count == 256
