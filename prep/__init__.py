"""prep: per-channel dataset statistics and the torchvision transforms that use them.

    >>> import prep, tempfile, os
    >>> stats = prep.compute_stats("sample", workers=0)   # measure (nothing written)
    >>> stats.channels, stats.images
    (3, 24)
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     stats.save(os.path.join(tmp, "sample.stats.json"))          # the train/test contract
    ...     transform = prep.load_stats(os.path.join(tmp, "sample.stats.json")).normalize()

Names are imported on first use, so ``import prep`` (and ``prep --help``) does not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any

from prep._version import __version__

_EXPORTS = {
    "ChannelMoments": "stats.moments",
    "ChannelSummary": "stats.moments",
    "CrossMoments": "stats.cross_moments",
    "ShapeMismatchError": "errors",
    "Whitening": "transforms.whitening",
    "compute_whitening": "engine.whiten",
    "compute_cross_moments": "engine.whiten",
    "load_whitening": "transforms.whitening_file",
    "check_stats": "insight.checks",
    "compare_stats": "insight.checks",
    "KNOWN": "insight.known",
    "compute_stats": "engine.measure",
    "load_or_compute": "engine.measure",
    "iter_split_stats": "engine.splits",
    "torchrun_session": "engine.splits",
    "merge_stats": "stats.merge",
    "BadImageError": "errors",
    "ChannelMismatchError": "errors",
    "DegenerateStatsError": "errors",
    "DownloadError": "errors",
    "MismatchError": "errors",
    "OptionError": "errors",
    "OutputError": "errors",
    "PrepError": "errors",
    "PrepWarning": "errors",
    "SourceError": "errors",
    "StaleStatsError": "errors",
    "StatsFileError": "errors",
    "DatasetSource": "sources",
    "resolve_source": "sources",
    "SCHEMA_VERSION": "stats.file",
    "Stats": "stats.file",
    "load_stats": "stats.file",
    "ConvertPixels": "transforms.normalize",
    "denormalize_pipeline": "transforms.normalize",
    "minmax_pipeline": "transforms.normalize",
    "normalize_pipeline": "transforms.normalize",
    "update_preprocessor_config": "insight.exports",
    "measurement_transform": "transforms.measurement",
    "PerImageNormalize": "transforms.per_image",
    "per_image_normalize": "transforms.per_image",
    "plot_stats": "insight.plots",
    "report": "insight.report_page",
}

__all__ = ["__version__", *sorted(_EXPORTS)]  # one list: the names below, imported on first use


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'prep' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
