"""Sampled statistics: a uniformly random subset of a source's images, the same for the same seed.

``--sample N`` (or a fraction such as ``0.05``) with ``--seed S`` picks ``N`` of the source's
``M`` images without replacement (``numpy.random.default_rng(S).choice(M, N, replace=False)``),
so the subset depends only on the seed and the number of images, and reads only those (a folder
decodes 1% of its files for a 1% sample). The statistics of the subset carry 95% confidence
intervals (:func:`prep.stats.intervals.sample_intervals`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.errors import OptionError
from prep.fields import is_int
from prep.sources.base import BatchSource, Source, TaskSource
from prep.sources.shard import ShardedBatchSource, ShardedTaskSource

if TYPE_CHECKING:
    import torch

DEFAULT_SEED = 0
log = logging.getLogger("prep")


def parse_sample(value: Any) -> int | float | None:
    """``"10000"`` -> 10000 images; ``"0.05"`` -> a fraction; None stays None."""
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, str) else value
    except ValueError:
        raise OptionError(f"sample must be a number of images or a fraction in (0, 1]; got {value!r}") from None
    if isinstance(number, bool) or not isinstance(number, int | float) or not number > 0:
        raise OptionError(f"sample must be a number of images or a fraction in (0, 1]; got {value!r}")
    if number <= 1 and not (isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit())):
        return float(number)
    if number != int(number):
        raise OptionError(f"sample must be a whole number of images or a fraction in (0, 1]; got {value!r}")
    return int(number)


def sample_source(source: Source, sample: int | float | None, seed: int = DEFAULT_SEED) -> Source:
    """``source`` itself without ``sample``, else the view of a random subset of its images."""
    if sample is None:
        return source
    if not is_int(seed) or seed < 0:
        raise OptionError(f"seed must be a non-negative integer; got {seed!r}")
    total = source.num_images()
    if total is None:
        source.fingerprint()  # array sources count their images while they hash them
        total = source.num_images()
    if total is None:
        raise OptionError(f"{source.where()}: sampling needs a source whose images can be counted")
    size = min(total, max(1, round(sample * total)) if isinstance(sample, float) else sample)
    if isinstance(sample, int) and sample > total:
        what = "image files" if isinstance(source, TaskSource) else "images"
        log.warning("--sample %d: %s holds %d %s; measuring all of them", sample, source.where(), total, what)
    chosen = np.sort(np.random.default_rng(seed).choice(total, size, replace=False))
    if isinstance(source, TaskSource):
        return SampledTaskSource(source, chosen, total, seed)
    if isinstance(source, BatchSource):
        return SampledBatchSource(source, chosen, total, seed)
    raise OptionError(f"{source.where()}: a {type(source).__name__} cannot be sampled")


def sample_report(source: Source, state: Any) -> dict[str, Any] | None:
    """``{"images", "of", "seed", "ci95": {"mean", "std"}}`` for a sampled pass, else None: the
    images measured, of how many, the seed, and the half-widths of the 95% intervals (unit scale;
    null where they cannot be computed: fewer than 2 images, or float data)."""
    from prep.stats.intervals import sample_intervals

    if not isinstance(source, Sampled):
        return None
    ci95: dict[str, list[float | None]] | None = None
    if state.image_moments is not None:
        intervals = sample_intervals(state.image_moments, state.images, source.total, state.pixel_max)
        ci95 = {k: [v if v == v else None for v in values] for k, values in intervals.items()}  # NaN -> null
    drawn = len(source._chosen)
    if state.images < drawn:  # files drawn that could not be decoded: say what was measured
        log.warning(
            "the sample drew %d of %d %s; %d could not be decoded, so %d images were measured",
            drawn,
            source.total,
            "files" if isinstance(source, TaskSource) else "images",
            drawn - state.images,
            state.images,
        )
    return {"images": state.images, "of": source.total, "seed": source.seed, "ci95": ci95}


class Sampled:
    def __init__(self, inner: Source, chosen: np.ndarray, total: int, seed: int) -> None:
        self.inner = inner
        self.index, self.count = 0, 1  # as a shard: the whole; the subset is in _chosen
        self.kind, self.path, self.split = inner.kind, inner.path, inner.split
        self._chosen = chosen
        self._set = set(chosen.tolist())
        self.total, self.seed = total, seed

    def describe(self) -> dict[str, Any]:
        return {**self.inner.describe(), "sample": f"{len(self._chosen)}/{self.total} seed {self.seed}"}

    def num_images(self) -> int:
        return len(self._chosen)

    def estimated_images(self) -> int:
        return len(self._chosen)

    def listed_skipped(self) -> list[tuple[str, str]]:
        return []  # entries that are not images are not part of a sample of images

    def label(self) -> str:
        return f"{self.inner.label()} sample {len(self._chosen)}/{self.total}"

    def empty_message(self) -> str:
        return "the sample holds no images"

    def _mine(self, position: int) -> bool:
        return position in self._set

    def index_of(self, position: int) -> int:
        return self.inner.index_of(int(self._chosen[position]))

    def _spread(self) -> int:
        return max(1, round(self.total / max(1, len(self._chosen))))


class SampledTaskSource(Sampled, ShardedTaskSource):
    """The chosen files of a :class:`TaskSource`; only they are read."""


class SampledBatchSource(Sampled, ShardedBatchSource):
    """The chosen images of a :class:`BatchSource` (the rest is read and passed over)."""

    def _rows(self, batch: torch.Tensor, position: int) -> torch.Tensor:
        import torch

        low, high = np.searchsorted(self._chosen, [position, position + len(batch)])
        return batch[torch.from_numpy(self._chosen[low:high] - position)]
