"""Test helpers (importable as ``helpers``: pytest puts tests/ on ``sys.path``).

``formats`` writes the real on-disk formats from their specifications, ``reference`` holds the
independent references the numbers are checked against, ``cli`` runs the command line in this
process; the most used of them are re-exported here. ``processes`` runs ``prep`` in other
processes, ``errors`` checks prep's one-line errors, ``stats_files`` edits prep's JSON files,
``tiff_files`` writes multi-band GeoTIFFs as GDAL lays them out (and damaged or hostile ones).
"""

from helpers.cli import run
from helpers.formats import (
    good_images,
    jpeg_bytes,
    make_cifar10,
    make_cifar100,
    make_class_folder,
    make_folder,
    make_mnist,
    mutate,
    split_folder,
    write_cifar_batch,
    write_idx_images,
    write_idx_labels,
    write_kinds,
)
from helpers.reference import (
    assert_close,
    assert_same_stats,
    exact_stats,
    pil_pixels,
    reference_stats,
    source_arrays,
    torchvision_cifar,
)
from helpers.tiff_files import write_float32_nan, write_geotiff, write_int16_negatives, write_sentinel2

__all__ = [
    "assert_close",
    "assert_same_stats",
    "exact_stats",
    "good_images",
    "jpeg_bytes",
    "make_cifar10",
    "make_cifar100",
    "make_class_folder",
    "make_folder",
    "make_mnist",
    "mutate",
    "pil_pixels",
    "reference_stats",
    "run",
    "source_arrays",
    "split_folder",
    "torchvision_cifar",
    "write_cifar_batch",
    "write_float32_nan",
    "write_geotiff",
    "write_idx_images",
    "write_idx_labels",
    "write_int16_negatives",
    "write_kinds",
    "write_sentinel2",
]
