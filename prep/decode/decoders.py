"""Decoders: an image file's bytes -> the pixels to reduce, by :mod:`prep.pixels`' rule.

A decoder is a picklable callable ``decoder(fp, mode)`` (``fp`` a binary file object) that
returns either an :class:`EightBitHistogram` (an 8-bit image already reduced to per-channel
counts, the cheapest exact form) or an :class:`ImageArray` (``(C, H, W)`` values and their
pixel max). Workers take the decoder as torchvision's ``ImageFolder`` takes a ``loader``.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from prep.decode.jpeg_kinds import JpegKind, jpeg_components, scan
from prep.errors import OptionError
from prep.options import DECODER_CHOICES
from prep.pixels import RAW_MAX, convert_channels, is_eight_bit, to_array
from prep.stats import kernels

if TYPE_CHECKING:
    from prep.decode.device import EncodedJpeg
    from prep.stats.moments import ChannelMoments


@dataclass(frozen=True)
class EightBitHistogram:
    """PIL's flat per-channel histogram of an 8-bit image: ``C * 256`` counts, and its size."""

    counts: list[int] | np.ndarray  # PIL's list, or the kernels' int64 array
    size: tuple[int, int] = (0, 0)  # width, height
    # raw sums of x_i * x_j per channel pair (C, C), when asked for: lists, or the kernels' int64 array
    cross: list[list[int]] | np.ndarray | None = None
    # per channel the pixel count, sum and sum of squares (C, 3) int64, where the kernels gave them
    # (prep.stats.kernels.reduce8): the chunk's fold then needs no copy of every histogram
    moments: np.ndarray | None = None

    def __eq__(self, other: object) -> bool:  # the same counts and sums, whether lists or arrays
        return (
            isinstance(other, EightBitHistogram)
            and self.size == other.size
            and _as_lists(self.cross) == _as_lists(other.cross)
            and list(map(int, self.counts)) == list(map(int, other.counts))
        )

    __hash__ = None  # type: ignore[assignment]  # mutable counts


def _as_lists(cross: list[list[int]] | np.ndarray | None) -> list[list[int]] | None:
    return None if cross is None else [[int(v) for v in row] for row in cross]


@dataclass(frozen=True)
class ImageArray:
    """One image ``(C, H, W)`` and the pixel max its values are divided by; ``C`` may be 1 for a
    grey image measured in RGB (the same values in every channel)."""

    array: np.ndarray
    pixel_max: float


class Decoder(Protocol):
    """What a worker decodes files with: bytes and a mode -> an 8-bit image's reduction, an
    array, or (the device path, :mod:`prep.decode.device`) a JPEG passed through encoded."""

    name: str

    def __call__(self, fp: IO[bytes], mode: str) -> EightBitHistogram | ImageArray | EncodedJpeg | ReducedImage: ...


class PILDecoder:
    """``Image.open(fp)``, then ``convert(mode)`` (``ImageFolder``'s loader) for 8-bit images.

    8-bit images are returned as PIL's own ``histogram()`` of the converted image, which is
    exact and costs a fraction of the decode; 16-bit and float images as arrays. With
    ``covariance`` an 8-bit image also carries its raw cross sums, exactly, from PIL as well:
    ``sum(x_i x_j) = (sum(x_i**2) + sum(x_j**2) - sum((x_i - x_j)**2)) / 2``, where the last sum
    comes from the histogram of ``ImageChops.difference`` (``|x_i - x_j|``, 8-bit, exact).
    """

    name = "pil"

    def __init__(self, covariance: bool = False, pixels: bool = False) -> None:
        self.covariance = covariance
        self.pixels = pixels  # every image as an ImageArray of all its channels (prep whiten)

    def __call__(self, fp: IO[bytes], mode: str) -> EightBitHistogram | ImageArray:
        refuse_multiband_tiff(fp, mode)
        with Image.open(fp) as img:
            if self.pixels:
                return ImageArray(*to_array(img, mode))
            if is_eight_bit(img):
                return _reduced(img if img.mode == mode else img.convert(mode), self.covariance)
            return ImageArray(*to_array(img, mode, replicate=False))

    def __repr__(self) -> str:
        return f"PILDecoder(covariance={self.covariance}, pixels={self.pixels})"


def _reduced(img: Image.Image, covariance: bool, replicate: int = 1) -> EightBitHistogram:
    """The histogram (and cross sums) of an 8-bit ``RGB`` or ``L`` image; ``replicate`` 3 reads an
    ``L`` image as the same grey in three channels."""
    if kernels.PER_IMAGE and img.mode in ("RGB", "L"):  # one native call on PIL's packed bytes
        flat, sums, moments = kernels.reduce8(img.tobytes(), len(img.mode), covariance)
        return _replicated(EightBitHistogram(flat, img.size, sums, moments), replicate)
    counts = img.histogram()
    cross = None
    if covariance:
        cross = (
            kernels.cross_interleaved(np.asarray(img), _squares(counts))
            if (kernels.AVAILABLE and img.mode == "RGB")
            else _cross_sums(img, counts)
        )
    return _replicated(EightBitHistogram(counts, img.size, cross), replicate)


def _replicated(reduced: EightBitHistogram, replicate: int) -> EightBitHistogram:
    """A 1-channel reduction as that of ``replicate`` identical channels (grey read as RGB)."""
    if replicate == 1:
        return reduced
    cross = None if reduced.cross is None else [[int(reduced.cross[0][0])] * replicate for _ in range(replicate)]
    counts = reduced.counts
    tiled = np.tile(counts, replicate) if isinstance(counts, np.ndarray) else counts * replicate
    moments = None if reduced.moments is None else np.tile(reduced.moments, (replicate, 1))
    return EightBitHistogram(tiled, reduced.size, cross, moments)


_SQUARES = np.arange(256, dtype=np.int64) ** 2


def _squares(counts: list[int] | np.ndarray) -> list[int]:
    """Per channel, the raw sum of squares of an 8-bit image from its flat histogram."""
    return [int(v) for v in np.asarray(counts, np.int64).reshape(-1, 256) @ _SQUARES]


def _cross_sums(img: Image.Image, counts: list[int]) -> list[list[int]]:
    """Raw ``sum(x_i x_j)`` per channel pair of an 8-bit image, from histograms alone."""
    from PIL import ImageChops

    bands = img.split()
    squares = _squares(counts)
    out = [[0] * len(bands) for _ in bands]
    for i in range(len(bands)):
        out[i][i] = squares[i]
        for j in range(i + 1, len(bands)):
            diff = int(np.asarray(ImageChops.difference(bands[i], bands[j]).histogram(), np.int64) @ _SQUARES)
            out[i][j] = out[j][i] = (squares[i] + squares[j] - diff) // 2
    return out


class TorchvisionDecoder:
    """JPEGs decoded by ``torchvision.io`` (libjpeg-turbo), every other file by
    :class:`PILDecoder`; reduced by the same exact histograms.

    ``verify=True`` is ``--decoder auto``: the first JPEG of each kind (:mod:`prep.decode.jpeg_kinds`:
    frame type, components, their ids and subsampling, Adobe transform) that a process meets is
    decoded both ways, and torchvision.io decodes that kind from then on only if its pixels equal
    PIL's ``convert(mode)`` exactly; otherwise PIL does. ``verify=False`` is ``--decoder
    torchvision``: torchvision.io's pixels for every JPEG it reads (CMYK JPEGs, for one, convert
    to RGB by its own rule). Before torchvision.io sees a file, PIL's ``Image.open`` must accept
    its header (:func:`torchvision_kind`), and a file torchvision.io cannot decode is given to PIL,
    so damaged files are skipped with PIL's reason under every decoder. PNGs always go to PIL:
    torchvision 0.29's ``decode_png`` ends the process (SIGSEGV) on damaged pixel data and reads
    palette images as their indices.

    Pickled (sent to a worker), a decoder arrives as that process's one instance of its
    settings, so each worker checks each kind once, not once per task. With ``pixels`` every
    image comes back as an :class:`ImageArray` of all its channels (``prep whiten``).
    """

    def __init__(self, covariance: bool = False, verify: bool = True, pixels: bool = False) -> None:
        self.covariance = covariance
        self.verify = verify
        self.pixels = pixels
        self.name = "auto" if verify else "torchvision"
        self._pil = PILDecoder(covariance, pixels)
        self._same_as_pil: dict[tuple[JpegKind, str], bool] = {}  # (kind, mode) -> verdict of the check

    def __reduce__(self):
        return _process_decoder, (self.covariance, self.verify, self.pixels)

    def __call__(self, fp: IO[bytes], mode: str) -> EightBitHistogram | ImageArray:
        data = fp.read()
        kind = torchvision_kind(data)
        if kind is None or self._same_as_pil.get((kind, mode)) is False:
            return self._pil(io.BytesIO(data), mode)
        try:
            pixels = torchvision_pixels(data, kind, mode)
        except RuntimeError:  # damaged, or a variant torchvision.io does not read: PIL decides
            return self._pil(io.BytesIO(data), mode)
        if self.verify and (kind, mode) not in self._same_as_pil:
            with Image.open(io.BytesIO(data)) as img:
                expected = to_array(img, mode)[0] if is_eight_bit(img) else None
            same = expected is not None and np.array_equal(expected, pixels.numpy())
            self._same_as_pil[(kind, mode)] = same
            if not same:
                return self._pil(io.BytesIO(data), mode)
        if self.pixels:
            return ImageArray(np.ascontiguousarray(pixels.numpy()), 255.0)
        return reduced_tensor(pixels, self.covariance)

    def __repr__(self) -> str:
        return f"TorchvisionDecoder(covariance={self.covariance}, verify={self.verify}, pixels={self.pixels})"


_PROCESS_DECODERS: dict[tuple[bool, bool, bool], TorchvisionDecoder] = {}


def _process_decoder(covariance: bool, verify: bool, pixels: bool = False) -> TorchvisionDecoder:
    """This process's one :class:`TorchvisionDecoder` of these settings (what unpickling gives)."""
    key = (covariance, verify, pixels)
    if key not in _PROCESS_DECODERS:
        _PROCESS_DECODERS[key] = TorchvisionDecoder(covariance, verify, pixels)
    return _PROCESS_DECODERS[key]


_PIL_MODES = {1: "L", 3: "RGB", 4: "CMYK"}  # what PIL opens a JPEG of so many components as


def torchvision_kind(data: bytes) -> JpegKind | None:
    """The kind (:mod:`prep.decode.jpeg_kinds`) of ``data`` when torchvision.io is to decode it, else None.

    That is a JPEG of a kind :func:`torchvision_decodes`, whose header PIL's ``Image.open`` reads
    as the same image (so a file PIL refuses is refused under every decoder), at most
    ``Image.MAX_IMAGE_PIXELS`` large: larger images go to PIL, whose decompression-bomb check
    torchvision.io does not have.
    """
    header = scan(data)
    if header is None or not torchvision_decodes(header[0]):
        return None
    kind, width, height, plain = header
    limit = Image.MAX_IMAGE_PIXELS
    if not width or not height or (limit is not None and width * height > limit):
        return None
    if plain:  # PIL would open it as its header says: no need to ask (jpeg_kinds.is_plain)
        return kind
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as probe:  # the header only: nothing is decoded
                same = probe.format == "JPEG" and probe.size == (width, height)
                same = same and probe.mode == _PIL_MODES.get(jpeg_components(kind) or 0)
    except Exception:  # PIL refuses it: PIL will say why
        return None
    return kind if same else None


def torchvision_decodes(kind: JpegKind | None) -> bool:
    """True for the kinds torchvision.io is given: 8-bit baseline, extended and progressive JPEGs
    (grey, colour, CMYK)."""
    if kind is None:
        return False
    return kind.marker in (0xC0, 0xC1, 0xC2) and kind.precision == 8 and kind.components in (1, 3, 4)


def torchvision_pixels(data: bytes, kind: JpegKind, mode: str, device: str = "cpu"):
    """The ``(C, H, W)`` uint8 pixels of a JPEG in ``mode`` by torchvision.io, channels converted
    as PIL's ``convert(mode)`` does (:func:`prep.pixels.convert_channels`; CMYK read as RGB)."""
    import torch

    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    read = _READ_RGB if jpeg_components(kind) == 4 else _READ_UNCHANGED
    if device == "cpu":
        return convert_channels(_cpu_jpeg_decoder()(raw, read), mode)
    with warnings.catch_warnings():  # torchvision 0.29 deprecates its decoders in favour of TorchCodec
        warnings.simplefilter("ignore", DeprecationWarning)
        from torchvision.io import ImageReadMode, decode_jpeg

        return convert_channels(decode_jpeg(raw, mode=ImageReadMode(read), device=device), mode)


_READ_UNCHANGED, _READ_RGB = 0, 3  # torchvision.io.ImageReadMode's values
_CPU_JPEG_DECODER: list = []


def _cpu_jpeg_decoder():
    """``decode(raw, read_mode) -> (C, H, W)`` on the CPU: torchvision.io's own operator, which its
    ``decode_jpeg`` calls after checks that cost as much as a small image's decode (a deprecation
    warning on every call, since 0.29); the public function where the operator is not there."""
    if not _CPU_JPEG_DECODER:
        import torch

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg  # loads the operators

        def public(raw, read):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                return decode_jpeg(raw, mode=ImageReadMode(read))

        op: Any = getattr(getattr(getattr(torch.ops, "image", None), "decode_jpeg", None), "default", None)

        def direct(raw, read):
            return op(raw, read, False)

        _CPU_JPEG_DECODER.append(direct if op is not None and _same_decode(direct, public) else public)
    return _CPU_JPEG_DECODER[0]


def _same_decode(direct, public) -> bool:
    """Whether the operator, called as :func:`_cpu_jpeg_decoder` calls it, decodes a small JPEG
    to the public function's pixels (another torchvision may give its operator other arguments)."""
    import torch

    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buf, "JPEG")
    raw = torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)
    try:
        return all(torch.equal(direct(raw, read), public(raw, read)) for read in (_READ_UNCHANGED, _READ_RGB))
    except Exception:  # an operator of other arguments: the public function, slower but the same pixels
        return False


def reduced_tensor(pixels, covariance: bool) -> EightBitHistogram:
    """The histogram (and cross sums) of ``(C, H, W)`` uint8 pixels: by :mod:`prep.stats.kernels` in
    place where they were built, else by PIL's histogram on a view of them (``L``: shared memory;
    ``RGB``: one unpacking copy)."""
    if pixels.shape[0] > 1 and pixels.stride(0) == 0:  # grey read as RGB: reduced once
        return _replicated(reduced_tensor(pixels[:1], covariance), pixels.shape[0])
    channels, height, width = pixels.shape
    if kernels.PER_IMAGE and channels in (1, 3):
        flat, sums, moments = kernels.reduce8(_hwc(pixels), channels, covariance)
        return EightBitHistogram(flat, (width, height), sums, moments)
    if not kernels.AVAILABLE:
        return _reduced(_pil_image(pixels), covariance)
    hwc = _hwc(pixels)
    hist = kernels.histogram_interleaved(hwc)
    cross = None
    if covariance:
        squares = (hist @ _SQUARES).tolist()
        cross = kernels.cross_interleaved(hwc, squares) if channels == 3 else [squares]
    return EightBitHistogram(hist.reshape(-1), (width, height), cross)


def _pil_image(pixels) -> Image.Image:
    channels, height, width = pixels.shape
    hwc = _hwc(pixels)
    mode = "RGB" if channels == 3 else "L"
    return Image.frombuffer(mode, (width, height), hwc, "raw", mode, 0, 1)


def _hwc(pixels) -> np.ndarray:
    """``(C, H, W)`` pixels as a contiguous ``(H, W, C)`` array: torchvision.io's layout, so no copy."""
    return np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())


class TransformedDecoder:
    """PIL's pixels passed through a transform before they are reduced (:mod:`prep.transforms.measurement`):
    arrays, never histograms, since the transform changes the pixels."""

    name = "pil"

    def __init__(self, transform) -> None:
        self.transform = transform

    def __call__(self, fp: IO[bytes], mode: str) -> ImageArray:
        import torch

        from prep.transforms.measurement import apply_transform

        with Image.open(fp) as img:
            array, pixel_max = to_array(img, mode, replicate=False)
        writable = np.require(array, requirements=["C", "W"])  # a transform may write; PIL's bytes are read-only
        return ImageArray(apply_transform(self.transform, torch.from_numpy(writable)).numpy(), pixel_max)

    def __repr__(self) -> str:
        return f"TransformedDecoder({self.transform!r})"


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, either byte order


def is_tiff(fp: IO[bytes]) -> bool:
    """True when the file starts as a TIFF does (the position is kept)."""
    start = fp.tell()
    head = fp.read(4)
    fp.seek(start)
    return head in TIFF_MAGIC


def refuse_multiband_tiff(fp: IO[bytes], mode: str) -> None:
    """In ``RGB`` and ``L`` modes, refuse a TIFF that PIL would read as other pixels than it holds
    (a planar multispectral file opens as its first band alone): one line that says how many
    bands it has and to measure it with ``--mode bands``."""
    info = tiff_info(fp)
    if info is not None and pil_reads_wrong(fp, info):
        raise OptionError(
            f"a TIFF of {info.bands} band(s) of {info.dtype}; mode {mode} would read it wrong: use --mode bands "
            "(every band, in the data's own values)"
        )


def tiff_info(fp: IO[bytes]):
    """The :class:`prep.decode.tiff.TiffInfo` of a TIFF (the position kept), or None for another
    file or a TIFF too damaged to say (PIL then decides, and says why)."""
    if not is_tiff(fp):
        return None
    from prep.decode.tiff import probe

    start = fp.tell()
    try:
        return probe(fp)
    except Exception:
        return None
    finally:
        fp.seek(start)


def pil_reads_wrong(fp: IO[bytes], info) -> bool:
    """True when PIL opens the TIFF ``info`` describes with fewer or other bands than it holds:
    more than one band of anything but 8 bits, or a band count PIL's mode does not have."""
    if info.pil_compatible or info.bands == 1:
        return False
    if info.dtype != np.uint8:
        return True
    start = fp.tell()
    try:
        with Image.open(fp) as img:
            return len(img.getbands()) != info.bands
    except Exception:  # PIL cannot open it at all: it says so when it decodes
        return False
    finally:
        fp.seek(start)


WHOLE_IMAGE_BYTES = 256 << 20  # a TIFF decoding to more is reduced a piece of rows at a time
PIECE_BYTES = 64 << 20  # the rows read at a time from such a TIFF
PIECEWISE_MAX_VALUES = 1 << 34  # the most values a TIFF read a piece at a time may declare (16 G)


@dataclass(frozen=True)
class ReducedImage:
    """One image already reduced, piece by piece (a TIFF too large to hold decoded): its state
    (:meth:`prep.stats.moments.ChannelMoments.as_one_image`) and size (width, height)."""

    state: ChannelMoments
    size: tuple[int, int]


class BandsDecoder:
    """``--mode bands``: every band of a file as stored, in its own dtype and values (pixel max 1).

    TIFFs are read by :mod:`prep.decode.tiff` (tifffile: any band count, planar or interleaved,
    8 to 64-bit integers and floats); other image files by PIL without conversion (``L`` and
    16-bit and float modes are one band, ``LA`` two, ``RGB`` three, ``RGBA`` and ``CMYK`` four;
    palette images as their colours). ``bands`` (0-based indices) selects and orders bands.

    A TIFF whose selected bands decode to more than :data:`WHOLE_IMAGE_BYTES` (a full Sentinel-2
    tile: 3.1 GB) is never held whole: its rows are read :data:`PIECE_BYTES` at a time and
    reduced into a :class:`ReducedImage` (with ``nodata``, ``track_images`` and ``covariance``
    as the pass's state has them), so a worker holds one piece, about 64 MiB, whatever the image.
    """

    name = "bands"

    def __init__(
        self,
        bands: tuple[int, ...] | None = None,
        nodata: tuple[float, ...] | None = None,
        track_images: bool = False,
        covariance: bool = False,
    ) -> None:
        self.bands = bands
        self.nodata = nodata
        self.track_images = track_images
        self.covariance = covariance

    def __call__(self, fp: IO[bytes], mode: str) -> ImageArray | ReducedImage:
        info = tiff_info(fp)
        if info is not None:
            count = info.bands if self.bands is None else len(self.bands)
            if info.height * info.width * count * info.dtype.itemsize > WHOLE_IMAGE_BYTES:
                return self._piecewise(fp, info)
        array, _, _ = read_bands_of(fp, self.bands)
        return ImageArray(array, RAW_MAX)

    def _piecewise(self, fp: IO[bytes], info) -> ReducedImage:
        from prep.decode.tiff import iter_band_rows
        from prep.stats.moments import ChannelMoments

        if self.bands is not None:
            _check_bands(self.bands, info.bands)
        channels = info.bands if self.bands is None else len(self.bands)
        nodata = None if self.nodata is None or len(self.nodata) != channels else self.nodata
        state = ChannelMoments(channels, self.track_images, self.covariance, nodata=nodata)
        for piece in iter_band_rows(fp, self.bands, PIECE_BYTES, PIECEWISE_MAX_VALUES):
            state.update_image(piece, RAW_MAX)
        return ReducedImage(state.as_one_image(), (info.width, info.height))

    def __repr__(self) -> str:
        return f"BandsDecoder(bands={self.bands}, nodata={self.nodata})"


def read_bands_of(fp: IO[bytes], bands: tuple[int, ...] | None = None):
    """``(array (C, H, W) as stored, band names or None, nodata or None)`` of an image file."""
    if is_tiff(fp):
        from prep.decode.tiff import read_bands

        array, info = read_bands(fp, bands)
        names = None
        if info.band_names is not None:  # a band without a description gets GDAL's number
            names = _selected([n or f"B{i + 1}" for i, n in enumerate(info.band_names)], bands)
        return array, names, info.nodata
    with Image.open(fp) as img:
        if img.mode in ("1", "P", "PA", "YCbCr", "LAB", "HSV"):
            array = np.asarray(img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB"))
        else:
            array = np.asarray(img)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    if bands is not None:
        _check_bands(bands, array.shape[0])
        array = array[list(bands)]
    return np.ascontiguousarray(array), None, None


def _check_bands(bands: tuple[int, ...], count: int) -> None:
    wrong = [b + 1 for b in bands if not 0 <= b < count]
    if wrong:
        raise OptionError(f"band {wrong[0]} does not exist: the file has {count} band(s), numbered from 1")


def _selected(names, bands):
    return tuple(names) if bands is None else tuple(names[b] for b in bands)


def make_decoder(name: str, covariance: bool = False, pixels: bool = False) -> Decoder:
    """The decoder ``--decoder name`` asks for (see :data:`DECODER_CHOICES`). ``auto`` is the
    fastest way to PIL's pixels: torchvision.io where it gives them and :mod:`prep.stats.kernels` was
    built to reduce them in place, else PIL alone (torchvision.io's pixels copied into PIL's
    layout cost more than PIL's decode). ``pixels`` returns every image whole (``prep whiten``)."""
    if name == "pil" or (name == "auto" and not kernels.AVAILABLE):
        return PILDecoder(covariance, pixels)
    if name in ("auto", "torchvision"):
        return TorchvisionDecoder(covariance, verify=name == "auto", pixels=pixels)
    raise OptionError(f"decoder must be one of {', '.join(DECODER_CHOICES)}; got {name!r}")
