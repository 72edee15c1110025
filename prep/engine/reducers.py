"""The reducers the engine (:func:`prep.engine.loop.run_pass`) feeds: one per statistic.

:class:`MomentsReducer` is ``prep stats``: per-channel moments, histograms and colour cross sums
(:class:`~prep.stats.moments.ChannelMoments`), reduced inside the workers so that only states
cross process boundaries, with the per-image rows of ``--per-image``. :class:`CrossMomentsReducer`
is ``prep whiten``: the mean image and the pixel cross products of flattened images
(:class:`~prep.stats.cross_moments.CrossMoments`), whose GEMMs run on the device, so the workers
decode and return pixels. Either state merges with another of its kind (shards, ranks).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from prep.decode.decoders import BandsDecoder, Decoder, ImageArray, TransformedDecoder, make_decoder
from prep.engine.bands import BandLayout
from prep.engine.checkpoint import moments_loader
from prep.engine.loop import Reducer
from prep.engine.workers import describe_failure, fold_pending, reduce_chunk
from prep.errors import PrepError, SourceError, StatsFileError
from prep.fields import short_repr
from prep.insight.per_image_report import PerImageReport, rows_from_batch
from prep.pixels import BANDS, CHANNELS, RAW_MAX, pixel_max_of
from prep.sources.base import Classes, FileChunk, FirstFolder, Source
from prep.stats.moments import ChannelMoments
from prep.stats.state_codec import check_class_totals

if TYPE_CHECKING:
    from prep.stats.cross_moments import CrossMoments

MAX_DIM = 16_384  # prep.stats.cross_moments.MAX_DIM (importing it imports torch)


@dataclass
class VolumePass:
    """What a pass over volumes (:mod:`prep.engine.volumes`) carries besides the state: the voxel
    mask (None: every voxel), the header scalings met (``(slope, intercept)`` -> channel files)
    and the warnings to give once the pass ends (each said once)."""

    mask: Any = None  # a prep.engine.volumes.VoxelMask
    scaling: dict[tuple[float, float], int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def fold(self, result: Any) -> None:
        for key, n in result.scaling.items():
            self.scaling[key] = self.scaling.get(key, 0) + n
        self.warnings.extend(w for w in result.warnings if w not in self.warnings)

    def describe(self) -> dict[str, Any]:
        """The stats file's ``volume`` field: the voxels measured and the header scalings."""
        from prep.engine.volumes import VoxelMask

        mask = self.mask if self.mask is not None else VoxelMask()
        scaling = [{"slope": k[0], "inter": k[1], "files": n} for k, n in sorted(self.scaling.items())]
        return {**mask.describe(), "scaling": scaling}


class MomentsReducer(Reducer):
    """``prep stats``: a :class:`ChannelMoments` of ``mode``'s channels (and the per-image report).

    Args:
        src: the source (per-image rows of batches are named by ``src.index_of``).
        mode: ``RGB`` or ``L``.
        decoder: what decodes image files in the workers (:mod:`prep.decode.decoders`).
        track_images: keep the per-image products a sample's confidence intervals need.
        covariance: keep the colour cross sums.
        report: the per-image report rows are added to, or None.
        on_device: the torch device that decodes the JPEGs workers pass through (nvjpeg), or None.
        classes: the source's classes (:meth:`~prep.sources.base.Source.classes`) to measure
            each of, or None; ``class_states`` then holds a state per class that has images,
            which merge into ``state`` exactly.
    """

    def __init__(
        self,
        src: Source,
        mode: str,
        decoder: str,
        *,
        track_images: bool = False,
        covariance: bool = False,
        report: PerImageReport | None = None,
        on_device: Any = None,
        classes: Classes | None = None,
        layout: BandLayout | None = None,
        volumes: VolumePass | None = None,
    ) -> None:
        self.src = src
        self.volumes = volumes
        self.mode = mode
        self.decoder = decoder
        self.covariance = covariance
        self.report = report
        self.on_device = on_device
        self.layout = layout or BandLayout(CHANNELS[mode])
        self.state = ChannelMoments(
            self.layout.channels, track_images=track_images, covariance=covariance, nodata=self.layout.nodata
        )
        self.classes = classes
        self.class_states: dict[str, ChannelMoments] | None = None if classes is None else {}

    @property
    def images(self) -> int:
        return self.state.images

    def update(self, pixels: Any, pixel_max: float | None, first: int, name: Callable[[int], str]) -> None:
        if self.classes is not None:  # prep.engine.measure refuses classes of sources read in batches
            raise SourceError(f"{self.src.where()}: classes are measured from image files (folders, archives)")
        if self.mode == BANDS:
            pixels, pixel_max = self._bands(pixels, name), RAW_MAX
        try:
            self.state.update(pixels, pixel_max)
        except (ValueError, TypeError) as exc:  # values the pixel rule cannot read (int64 beyond 16 bits, ...)
            raise SourceError(f"{self.src.where()}: {exc}") from None
        if self.report is not None:
            names = [str(self.src.index_of(first + i)) for i in range(len(pixels))]
            self.report.add(rows_from_batch(pixels, pixel_max or pixel_max_of(pixels.dtype), names))

    def _bands(self, pixels: Any, name: Callable[[int], str]) -> Any:
        """A batch of the bands mode: its selected bands, after checking their count."""
        layout = self.layout
        have = pixels.shape[1] if pixels.ndim == 4 else 0
        if layout.bands is not None:
            if max(layout.bands) >= have:
                raise SourceError(f"{name(0)}: {have} band(s); --bands asks for band {max(layout.bands) + 1}")
            pixels = pixels[:, list(layout.bands)]
        elif have != layout.channels:
            raise SourceError(f"{name(0)}: {have} band(s), but {layout.first} has {layout.channels}")
        return pixels

    def worker_job(self, mode: str, transform: Any, workers: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        track = self.state.image_moments is not None
        if self.volumes is not None:
            from prep.engine.volumes import reduce_volumes

            return reduce_volumes, (self.layout, self.volumes.mask, track, self.covariance)
        return reduce_chunk, (
            mode,
            self.file_decoder(mode, transform),
            track,
            self.report is not None,
            self.covariance,
            self._class_of,
            self.layout,
        )

    def file_decoder(self, mode: str, transform: Any) -> Decoder:
        """What decodes this pass's image files in the workers (a second pass reads them alike)."""
        from prep.decode.device import PassJpegs

        if transform is not None:
            return TransformedDecoder(transform)
        if mode == BANDS:
            track = self.state.image_moments is not None
            return BandsDecoder(self.layout.bands, self.layout.nodata, track, self.covariance)
        if self.on_device is not None:
            return PassJpegs(self.covariance)
        return make_decoder(self.decoder, self.covariance)

    @property
    def _class_of(self) -> FirstFolder | None:
        return None if self.classes is None else self.classes.of

    def fold(self, chunk: FileChunk, result: Any) -> None:
        if self.on_device is not None:
            fold_pending(result, list(chunk.names), self.mode, self.on_device, self.covariance, self._class_of)
        if self.report is not None:
            self.report.add(result.rows)
        if self.volumes is not None:
            self.volumes.fold(result)
        self.state = self.state.merge(result.state)
        if self.class_states is not None:
            for name, part in result.classes.items():
                mine = self.class_states.get(name)
                self.class_states[name] = part if mine is None else mine.merge(part)

    def state_dict(self) -> dict[str, Any]:
        """The state; with classes, ``{"overall": state, "classes": {name: state}}``."""
        if self.class_states is None:
            return self.state.state_dict()
        return {
            "overall": self.state.state_dict(),
            "classes": {name: state.state_dict() for name, state in self.class_states.items()},
        }

    def load_state_dict(self, state: Any, where: str) -> None:
        load = moments_loader(self.layout.channels, self.covariance)
        if self.class_states is None:
            self.state, _ = load(state, where)
            self.state.nodata = self.layout.nodata
            return
        if (
            not isinstance(state, dict)
            or set(state) != {"overall", "classes"}
            or not isinstance(state["classes"], dict)
        ):
            raise StatsFileError(f'field \'{where}\': expected {{"overall", "classes"}} (a pass with classes)')
        overall, _ = load(state["overall"], f"{where}.overall")
        class_states = {}
        for name, raw in state["classes"].items():
            if self.classes is not None and name not in self.classes.names:
                raise StatsFileError(f"field '{where}.classes': {short_repr(name)} is not a class of the source")
            class_states[name], _ = load(raw, f"{where}.classes.{name}")
            class_states[name].nodata = self.layout.nodata
        check_class_totals(overall, class_states, f"{where}.classes", images=self.volumes is None)
        overall.nodata = self.layout.nodata
        self.state, self.class_states = overall, class_states


# ------------------------------------------------------------------ prep whiten


class CrossMomentsReducer(Reducer):
    """``prep whiten``: a :class:`CrossMoments` of images of one shape, made at the first image.

    Workers decode (with the decoder asked for, as whole images) and return the pixels; this
    process checks each image's shape and kind in the source's order and adds them in batches of
    about ``batch_pixels`` values on ``device`` (one float64 GEMM each).
    """

    checkpoint_format = "torch"

    def __init__(self, src: Source, mode: str, device: Any, decoder: str = "auto", batch_size: int | None = None):
        from prep.engine.devices import pixels_per_batch

        self.src = src
        self.mode = mode
        self.device = device
        self.decoder = decoder
        self.batch_size = batch_size
        self.limit = pixels_per_batch(device)
        self.state: CrossMoments | None = None
        self.shape: tuple[int, ...] | None = None  # of the first image
        self.pixel_max: float | None = None  # of the first image
        self.first = ""  # how messages name the first image
        self._pending: list[np.ndarray] = []

    @property
    def images(self) -> int:
        return 0 if self.state is None else self.state.count

    def check(self, shape: tuple[int, ...], pixel_max: float, where: str) -> None:
        """Refuse an image (named ``where``) whose shape or pixel max differs from the first image's."""
        if self.shape is None:
            check_dim(shape, where)
            self.shape, self.pixel_max, self.first = shape, pixel_max, where
        elif shape != self.shape:
            raise SourceError(mismatch_message(where, shape, self.first, self.shape))
        elif pixel_max != self.pixel_max:
            raise SourceError(
                f"{where}: pixel max {pixel_max:g}, but {self.first} has {self.pixel_max:g}; whitening needs one "
                "kind of data (8-bit, 16-bit or float images, not a mix)"
            )

    def update(self, pixels: Any, pixel_max: float | None, first: int, name: Callable[[int], str]) -> None:
        if self.mode == BANDS:
            pixel_max = RAW_MAX  # the bands mode: the data's own values
        self.check(tuple(pixels.shape[1:]), pixel_max_of(pixels.dtype) if pixel_max is None else pixel_max, name(0))
        if self.state is None:
            from prep.stats.cross_moments import CrossMoments

            assert self.shape is not None  # set by check() above
            self.state = CrossMoments(list(self.shape), device=self.device)
        try:
            self.state.update(pixels, pixel_max)
        except ValueError as exc:
            raise SourceError(f"{name(0)}: {exc}") from None

    def worker_job(self, mode: str, transform: Any, workers: int) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        decoder: Decoder
        if transform is not None:
            decoder = TransformedDecoder(transform)
        elif mode == BANDS:
            decoder = BandsDecoder()  # every band as stored (prep.pixels' bands mode)
        else:
            decoder = make_decoder(self.decoder, pixels=True)
        return decode_chunk, (mode, decoder, transform is None and mode != BANDS)

    def fold(self, chunk: FileChunk, result: Any) -> None:
        for where, array, pixel_max in result.images:
            self.check(tuple(array.shape), pixel_max, where)
            self._pending.append(array)
            if len(self._pending) * array.size >= self.limit or len(self._pending) == self.batch_size:
                self._flush()

    def finish(self) -> None:
        self._flush()

    def _flush(self) -> None:
        if self._pending:
            import torch

            batch = torch.from_numpy(np.stack(self._pending))
            self._pending.clear()
            self.update(batch, self.pixel_max, 0, lambda i: self.first)

    def state_dict(self) -> dict[str, Any]:
        self._flush()  # a checkpoint holds every image counted so far
        if self.state is None:
            return {}
        return {**self.state.state_dict(), "first": self.first}

    def load_state_dict(self, state: Any, where: str) -> None:
        if state == {}:
            return
        if not isinstance(state, dict):
            raise StatsFileError(f"field '{where}' must be a dict")
        first = state.get("first")
        from prep.stats.cross_moments import CrossMoments

        try:
            self.state = CrossMoments.from_state_dict(
                {k: v for k, v in state.items() if k != "first"}, device=self.device
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise StatsFileError(f"field '{where}': {exc}") from None
        self.shape, self.pixel_max = tuple(self.state.shape), self.state.pixel_max
        self.first = first if isinstance(first, str) else "the first image"


def check_dim(shape: tuple[int, ...], where: str) -> None:
    """Refuse images whose ``C * H * W`` exceeds :data:`~prep.stats.cross_moments.MAX_DIM`, naming ``where``."""
    dim = math.prod(shape)
    if dim > MAX_DIM:
        raise SourceError(
            f"{where}: images of {'x'.join(map(str, shape))} have D = {dim} values; whitening is limited to "
            f"D <= {MAX_DIM} (a {MAX_DIM}x{MAX_DIM} float64 covariance is 2 GiB); resize them (--resize)"
        )


def mismatch_message(where: str, shape: tuple, first: str, first_shape: tuple) -> str:
    fmt = "x".join
    return (
        f"{where}: image of {fmt(map(str, shape))} (C x H x W), but {first} is {fmt(map(str, first_shape))}; "
        "whitening needs images of one size (give them one with --resize HxW)"
    )


@dataclass
class DecodedChunk:
    """What a ``prep whiten`` worker returns: ``(name, pixels (C, H, W), pixel max)`` of each
    decoded image, and ``(name, reason)`` of the files it could not decode."""

    images: list[tuple[str, np.ndarray, float]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)


def decode_chunk(chunk: FileChunk, mode: str, decoder: Decoder, check_header: bool = True) -> DecodedChunk:
    """Decode the files of ``chunk`` whole with ``decoder``; runs inside a worker or in-process.

    The pixels come back, not D x D partial sums: a chunk of 32 CIFAR images is 100 KB where its
    cross-product matrix would be 75 MB to send through a pipe, and the GEMMs belong on the
    device. An image whose ``D`` exceeds the limit raises :class:`~prep.errors.SourceError`
    naming it, checked from the header before decoding when ``check_header`` (no transform).
    """
    from PIL import Image

    channels = CHANNELS.get(mode)  # None: the bands mode, the file's own
    out = DecodedChunk()
    for name in chunk.names:
        where = chunk.reader.display(name)
        try:
            with chunk.reader.open(name) as fp:
                data = fp.read()
            if check_header:
                with Image.open(io.BytesIO(data)) as img:  # the header only: nothing is decoded
                    width, height = img.size
                check_dim((channels or 1, height, width), where)
            pixels = decoder(io.BytesIO(data), mode)
        except PrepError:
            raise
        except Exception as exc:  # decoders raise many types for bad files; all mean "not decodable"
            out.skipped.append((name, describe_failure(exc)))
            continue
        assert isinstance(pixels, ImageArray)
        array = pixels.array
        if channels is not None and array.shape[0] != channels:  # grey 16-bit or float read as RGB: thrice
            array = np.repeat(array, channels, axis=0)
        check_dim(array.shape, where)
        out.images.append((where, array, pixels.pixel_max))
    return out
