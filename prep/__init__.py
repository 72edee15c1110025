"""prep: per-channel dataset statistics and the torchvision transforms that use them.

    >>> import prep
    >>> stats = prep.compute_stats("sample")           # measure (nothing written)
    >>> stats.save("sample-stats.json")                  # the train/test contract
    >>> transform = prep.load_stats("sample-stats.json").normalize()
"""

from ._version import __version__
from .accumulator import ChannelMoments, ChannelSummary
from .compute import PrepWarning, compute_stats
from .errors import (
    BadImageError,
    ChannelMismatchError,
    DegenerateStatsError,
    DownloadError,
    OptionError,
    PrepError,
    SourceError,
    StaleStatsError,
    StatsFileError,
)
from .sources import resolve_source
from .stats import SCHEMA_VERSION, Stats, load_stats
from .transforms import ConvertPixels, denormalize_pipeline, minmax_pipeline, normalize_pipeline

__all__ = [
    "BadImageError", "ChannelMismatchError", "ChannelMoments", "ChannelSummary", "ConvertPixels",
    "DegenerateStatsError", "DownloadError", "OptionError", "PrepError", "PrepWarning", "SCHEMA_VERSION", "SourceError",
    "StaleStatsError", "Stats", "StatsFileError", "__version__", "compute_stats", "denormalize_pipeline",
    "load_stats", "minmax_pipeline", "normalize_pipeline", "resolve_source",
]
