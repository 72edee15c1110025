"""Every option of prep, declared once: :data:`OPTIONS`.

Each :class:`Option` carries its default, the types a TOML preset may give, its choices or
lower bound, its help and the commands that take it as a flag. From that one table come
:data:`DEFAULTS` (the API's defaults: :func:`prep.compute_stats` and
:func:`prep.compute_whitening` take ``**options`` and fill the rest from here), the TOML preset
keys and their checks (:func:`load_config`), the click options of each command
(:func:`click_options`) and their ``--help``; a new option is one entry. Resolution is visible
and in one place (:func:`resolve_options`): the command-line flag, then the config file
(``configs/``: the long option names as keys, ``batch-size`` or ``batch_size``), then the
default.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from prep.errors import OptionError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DECODER_CHOICES = ("auto", "pil", "torchvision")  # prep.decode.decoders; the default first
MODE_CHOICES = ("RGB", "L", "bands")  # prep.pixels.MODES
MAX_PERCENTILES = 101  # percentiles a stats file lists at most (any other: Stats.percentile)
DEFAULT_PERCENTILES = (0.5, 1.0, 5.0, 50.0, 95.0, 99.0, 99.5)  # what a stats file lists


@dataclass(frozen=True)
class Option:
    """One option: its default, the types a preset may give, and how the command line shows it.

    ``group`` says whose it is: ``source`` (what the source is: :func:`prep.resolve_source`'s
    keyword arguments), ``pass`` (how the pass runs: :func:`prep.compute_stats`'), ``cli`` (the
    command line's own: output, preset-only keys, reporting) or ``command`` (one command's, not a
    preset key). ``commands`` are the CLI commands that take it as a flag.
    """

    name: str
    default: Any
    types: tuple[type, ...]
    help: str
    group: str = "pass"
    commands: tuple[str, ...] = ("stats",)
    choices: tuple[str, ...] | None = None
    minimum: float | None = None  # ints and floats: the smallest value (exclusive with min_open)
    min_open: bool = False
    flag: str | None = None  # the flag(s) when not "--name-with-dashes", e.g. "--covariance/--no-covariance"
    short: str | None = None  # "-q"
    shown: str | None = None  # how --help shows the default (None: the value; "": nothing)

    @property
    def is_flag(self) -> bool:
        return self.types == (bool,)

    @property
    def preset(self) -> bool:
        """May appear in a TOML preset (``--config``)."""
        return self.group != "command"

    def help_text(self) -> str:
        shown = self.default if self.shown is None else self.shown
        return f"{self.help}  [default: {shown}]" if shown not in ("", None) else self.help


_STATS_WHITEN_CHECK = ("stats", "whiten", "check")
_STATS_WHITEN = ("stats", "whiten")
OPTIONS: tuple[Option, ...] = (
    Option("source", None, (str, list), "", group="cli", commands=()),
    Option("out", None, (str,), "", group="cli", commands=()),
    # what the source is
    Option(
        "root", "data", (str,), "Where named datasets live, in torchvision's layout.", "source", _STATS_WHITEN_CHECK
    ),
    Option(
        "split",
        None,
        (str,),
        "train or test for named datasets; for a folder (or a zip/tar of one), its train/val/test subfolder; prep "
        "stats also takes "
        "several, train,test or all (one file each: {split} in -o).",
        "source",
        _STATS_WHITEN_CHECK,
        shown="train for named datasets, the whole folder for folders",
    ),
    Option(
        "key",
        None,
        (str,),
        "WebDataset shards: the image extension of a sample (jpg, png, ...); .npz: the array to read.",
        "source",
        _STATS_WHITEN_CHECK,
    ),
    Option(
        "layout",
        None,
        (str,),
        "NumPy arrays: the axis order when the shape is ambiguous.",
        "source",
        _STATS_WHITEN_CHECK,
        choices=("NHWC", "NCHW"),
        shown="",
    ),
    Option(
        "archives",
        False,
        (bool,),
        "SOURCE is a directory of tar shards (WebDataset).",
        "source",
        _STATS_WHITEN_CHECK,
        shown="",
    ),
    Option(
        "image_key",
        None,
        (str,),
        "Dict items (hf:NAME): the image field.",
        "source",
        _STATS_WHITEN_CHECK,
        shown="image or img",
    ),
    Option(
        "download",
        False,
        (bool,),
        "Fetch a named dataset through torchvision first.",
        "source",
        _STATS_WHITEN_CHECK,
        shown="",
    ),
    Option(
        "follow_symlinks",
        True,
        (bool,),
        "Follow symlinks in folders, as ImageFolder does; --no-follow-symlinks lists them as skipped.",
        "source",
        _STATS_WHITEN_CHECK,
        flag="--follow-symlinks/--no-follow-symlinks",
        shown="follow",
    ),
    Option(
        "checksum",
        False,
        (bool,),
        "Reuse -o only if the folder's file contents are unchanged (hashes every file; default: sizes and "
        "modification times).",
        "source",
        shown="",
    ),
    Option(
        "labels",
        None,
        (str,),
        "NIfTI volumes: the folder of label maps, paired with the images by case name (CASE.nii.gz); default: "
        "nnU-Net's labelsTr beside imagesTr, or a datalist's 'label'.",
        "source",
        shown="",
    ),
    # how the pass runs
    Option(
        "device",
        "auto",
        (str,),
        "Where batches are reduced; with --decoder torchvision, --device cuda also decodes JPEGs on the GPU (nvjpeg).",
        commands=_STATS_WHITEN_CHECK,
        choices=DEVICE_CHOICES,
    ),
    Option(
        "workers",
        None,
        (int,),
        "Decoding processes for folders.",
        commands=_STATS_WHITEN_CHECK,
        minimum=0,
        shown="CPU count",
    ),
    Option(
        "decoder",
        None,
        (str,),
        "How image files are decoded: auto (PIL's pixels: torchvision.io for each JPEG kind whose pixels it "
        "gives exactly as PIL's, checked on the kind's first file, PIL otherwise); pil (PIL for every file, as "
        "ImageFolder: the same numbers for 8-bit images; ImageFolder's default loader clips 16-bit and "
        "truncates float images to 8 bits, prep keeps their values); torchvision (torchvision.io's pixels for "
        "JPEGs, not with --resize; with --device cuda, decoded on the GPU by nvjpeg, whose rounding may "
        "differ). Recorded in the stats file.",
        commands=_STATS_WHITEN_CHECK,
        choices=DECODER_CHOICES,
        shown="auto",
    ),
    Option(
        "batch_size",
        None,
        (int,),
        "Images per batch for arrays, idx and CIFAR files.",
        commands=_STATS_WHITEN_CHECK,
        minimum=1,
        shown="~1M pixels on CPU, 32M on CUDA",
    ),
    Option(
        "resize",
        None,
        (int, str),
        "Measure after v2.Resize(SIZE, antialias=True): N (shorter side) or HxW.",
        "cli",
        _STATS_WHITEN_CHECK,
        shown="no resize",
    ),
    Option(
        "center_crop",
        None,
        (int, str),
        "Measure after v2.CenterCrop(SIZE) (after --resize): N or HxW.",
        "cli",
        _STATS_WHITEN_CHECK,
        shown="no crop",
    ),
    Option(
        "strict", False, (bool,), "Stop at the first undecodable file (exit 1).", commands=_STATS_WHITEN_CHECK, shown=""
    ),
    Option(
        "quiet",
        False,
        (bool,),
        "No progress bar or info lines; prep stats prints only the Normalize line.",
        "cli",
        _STATS_WHITEN_CHECK,
        short="-q",
        shown="",
    ),
    Option(
        "mode",
        None,
        (str,),
        "Pixel conversion: RGB (3 channels), L (grey), or bands (every band as stored, in the data's own values, "
        "any count: multispectral TIFFs and arrays).",
        commands=_STATS_WHITEN,
        choices=MODE_CHOICES,
        shown="bands for multi-band or non-8-bit TIFFs and arrays of other than 1, 3 or 4 channels; L for "
        "MNIST-format; else RGB",
    ),
    Option(
        "bands",
        None,
        (str, list),
        "Measure only these bands, numbered from 1 as GDAL numbers them: 1,2,3 or 2-4,8 (--mode bands).",
        commands=("stats", "check"),
        shown="every band",
    ),
    Option(
        "band_names",
        None,
        (str, list),
        "Name the bands (after --bands), comma-separated: B02,B03,B04,B08; recorded in the stats file.",
        commands=("stats", "check"),
        shown="the file's band descriptions, else B1, B2, ...",
    ),
    Option(
        "nodata",
        None,
        (str, int, float, list),
        "Leave out pixels equal to this value, per band (GDAL's rule): one value, one per band, or none to ignore "
        "a GeoTIFF's own nodata tag. NaN is always left out of float data.",
        commands=("stats", "check"),
        shown="the GeoTIFF's nodata tag, if any",
    ),
    # which voxels of a volume are measured (prep.engine.volumes)
    Option(
        "foreground",
        False,
        (bool,),
        "NIfTI volumes: measure only the foreground, voxels whose label map value is above 0 (nnU-Net's fingerprint).",
        shown="",
    ),
    Option(
        "ignore_label",
        None,
        (int,),
        "NIfTI volumes: leave voxels of this label value out of the foreground (nnU-Net's ignore label).",
        shown="",
    ),
    Option(
        "label_values",
        None,
        (str, list),
        "NIfTI volumes: measure only voxels whose label is one of these values, e.g. 1,2.",
        shown="",
    ),
    Option(
        "per_label",
        False,
        (bool,),
        "NIfTI volumes: also measure each label value (above 0, or of --label-values) in the same pass, stored "
        "under per_class by value.",
        shown="",
    ),
    Option(
        "nonzero",
        False,
        (bool,),
        "Leave out each channel's voxels equal to 0 (MONAI's NormalizeIntensity(nonzero=True)); the same as "
        "--nodata 0.",
        shown="",
    ),
    # what prep stats measures and writes
    Option(
        "percentiles",
        None,
        (str, list),
        "Percentiles to list, e.g. 0.1,1,50,99,99.9 (exact, 8-bit data).",
        shown=",".join(f"{q:g}" for q in DEFAULT_PERCENTILES),
    ),
    Option(
        "exact_percentiles",
        False,
        (bool,),
        "Float data: a second pass that makes the percentiles exact (without it they lie within 2**-7 relative "
        "bounds).",
        shown="",
    ),
    Option(
        "shard",
        None,
        (str,),
        "Measure only shard I of N (I/N, zero-based; image i is in shard i mod N); prep merge combines the parts.",
        shown="all images",
    ),
    Option(
        "sample",
        None,
        (int, float, str),
        "Measure a uniformly random subset: N images, or a fraction such as 0.05; prep stats gives 95% "
        "confidence intervals.",
        commands=_STATS_WHITEN,
        shown="every image",
    ),
    Option("seed", 0, (int,), "Seed of --sample (the same seed, the same images).", commands=_STATS_WHITEN, minimum=0),
    Option(
        "per_image",
        None,
        (str,),
        "Write a CSV row per image (size, per-channel mean/std/min/max, digest) here, and name suspicious images "
        "(constant, near black/white, brightness outliers, duplicates) in the summary.",
        shown="",
    ),
    Option(
        "per_class",
        False,
        (bool,),
        "For a folder in ImageFolder's layout (or a zip/tar of one): also measure each class (first-level "
        "subfolder) in the same pass: its images, pixels, mean, std, min and max under per_class in the file, a "
        "table and the much darker or brighter classes in the summary; prep compare FILE:CLASS FILE:CLASS.",
        shown="",
    ),
    Option(
        "outlier_k",
        4.0,
        (int, float),
        "Brightness outliers lie beyond this many stds of the images' brightness.",
        minimum=0,
        min_open=True,
        shown="4",
    ),
    Option(
        "covariance",
        None,
        (bool,),
        "Measure the colour covariance (exact for 8/16-bit data) and its PCA: the constants of AlexNet-style "
        "lighting noise (stats.lighting()). A file made without it is recomputed only when --covariance is given.",
        flag="--covariance/--no-covariance",
        shown="on",
    ),
    Option("force", False, (bool,), "Recompute even if --out is up to date.", "cli", shown=""),
    Option(
        "checkpoint",
        None,
        (str,),
        "Save progress here every N images ({split} as in -o; prep whiten writes a torch file).",
        commands=_STATS_WHITEN,
        shown="",
    ),
    Option("checkpoint_every", 10_000, (int,), "N for --checkpoint.", commands=_STATS_WHITEN, minimum=1),
    Option(
        "resume", False, (bool,), "Continue from --checkpoint after an interruption.", commands=_STATS_WHITEN, shown=""
    ),
    # one command's own (not preset keys)
    Option(
        "tol",
        0.05,
        (int, float),
        "Largest |mean or std difference| per channel, in unit scale.",
        "command",
        ("check",),
        minimum=0,
    ),
    Option(
        "max_shift",
        0.1,
        (int, float),
        "Largest |mean shift| per channel, in A's std units.",
        "command",
        ("compare", "report"),
        minimum=0,
    ),
    Option(
        "max_std_ratio",
        1.1,
        (int, float),
        "Largest std ratio per channel (B/A or A/B).",
        "command",
        ("compare", "report"),
        minimum=1,
    ),
    Option(
        "eps",
        1e-5,
        (int, float),
        "Added to every eigenvalue of the covariance (unit scale squared).",
        "command",
        ("whiten",),
        minimum=0,
    ),
)
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
DEFAULTS: dict[str, Any] = {o.name: o.default for o in OPTIONS if o.group != "command"}
# the options of prep.compute_stats (the rest of DEFAULTS belongs to the command line)
PASS_OPTIONS = tuple(o.name for o in OPTIONS if o.group in ("source", "pass"))
# the options that say what the source is (prep.resolve_source's keyword arguments)
SOURCE_OPTIONS = tuple(o.name for o in OPTIONS if o.group == "source")
_TYPES: dict[str, tuple[type, ...]] = {o.name: o.types for o in OPTIONS if o.preset}
_CHOICES: dict[str, tuple[str, ...]] = {o.name: o.choices for o in OPTIONS if o.choices}


API_OPTIONS = {"transform": None, "progress": False, "distributed": False}  # the Python API's own


def api_options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The options of a pass (:func:`prep.compute_stats`' ``**options``): ``given``, the rest from
    :data:`DEFAULTS` (and :data:`API_OPTIONS`); an unknown name raises ``TypeError`` as Python
    does for a keyword argument."""
    known = {name: DEFAULTS[name] for name in PASS_OPTIONS} | API_OPTIONS
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
    return known | dict(given)


def click_options(command: str, *, skip: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    """A decorator adding the flags of every option ``command`` takes, in :data:`OPTIONS` order.

    Resolved options default to None on the command line (so that a preset, then
    :data:`DEFAULTS`, fill them: :func:`resolve_options`); a command's own options default to
    their value.
    """
    import click

    def apply(fn: Any) -> Any:
        for o in reversed(OPTIONS):
            if command not in o.commands or o.name in skip:
                continue
            decls = [o.short] if o.short else []
            decls += (o.flag or "--" + o.name.replace("_", "-")).split(" ")
            kwargs: dict[str, Any] = {"help": o.help_text(), "default": None}
            if o.group == "command":
                kwargs |= {"default": o.default, "show_default": True, "help": o.help}
            if o.is_flag and "/" not in decls[-1]:
                kwargs["is_flag"] = True
            elif o.choices:
                kwargs["type"] = click.Choice(o.choices)
            elif o.types == (int,):
                kwargs["type"] = click.IntRange(min=None if o.minimum is None else int(o.minimum))
            elif o.minimum is not None and float in o.types:
                kwargs["type"] = click.FloatRange(min=o.minimum, min_open=o.min_open)
            fn = click.option(*decls, o.name, **kwargs)(fn)
        return fn

    return apply


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML preset; unknown keys and wrong types are errors naming the key and file."""
    path = os.fspath(path)
    from prep.files import read_bytes_bounded

    data = read_bytes_bounded(path, "config", error=OptionError)
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError, and integers of thousands of digits
        raise OptionError(f"{path}: not valid TOML ({exc})") from None
    config = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _TYPES:
            raise OptionError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(_TYPES))})")
        if (
            (isinstance(value, bool) and bool not in _TYPES[name])
            or not isinstance(value, _TYPES[name])
            or (isinstance(value, list) and not all(isinstance(v, str) for v in value))
        ):
            raise OptionError(f"{path}: key '{key}' must be a {_TYPES[name][0].__name__}; got {value!r}")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise OptionError(f"{path}: key '{key}' must be one of {', '.join(_CHOICES[name])}; got {value!r}")
        config[name] = value
    return config


def resolve_options(given: Mapping[str, Any], config_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Each option from ``given`` when set (not None), else from the config file, else DEFAULTS.

    ``out`` keeps its ``{split}`` (see :func:`output_for`). An ``out`` from a config file that
    does not say ``{split}`` is refused for a split other than the file's, so a preset never
    writes test statistics over its training file.
    """
    config = load_config(config_path) if config_path else {}
    opts = {
        name: given[name] if given.get(name) is not None else config.get(name, default)
        for name, default in DEFAULTS.items()
    }
    out = opts["out"]
    if out is not None and given.get("out") is None and "{split}" not in out and opts["split"] != config.get("split"):
        raise OptionError(
            f"{config_path}: its out '{out}' is for split {config.get('split')!r}, not {opts['split']!r}; "
            "give -o, or write '{split}' in the preset's out"
        )
    return opts


def output_for(out: str | None, split: str | None, splits: int = 1) -> str | None:
    """``out`` with ``{split}`` replaced by ``split`` (``all`` when there is none); with several
    ``splits`` an ``out`` without ``{split}`` is refused (every split would write the same file)."""
    if out is None:
        return None
    if splits > 1 and "{split}" not in out:
        raise OptionError(f"{out}: several splits need '{{split}}' in the file name, e.g. 'stats-{{split}}.json'")
    return out.replace("{split}", split or "all")


def source_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`SOURCE_OPTIONS` of ``options`` (missing ones from :data:`DEFAULTS`)."""
    return {name: options.get(name, DEFAULTS[name]) for name in SOURCE_OPTIONS}


def parse_percentiles(value: Any) -> tuple[float, ...] | None:
    """``"0.5,1,99"`` or a list of numbers as a tuple of percentiles in [0, 100] (None: the default)."""
    from prep.stats.histogram import check_percentiles

    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    try:
        numbers = [float(p) if isinstance(p, str) else p for p in parts]
        if not numbers:
            raise ValueError("no percentiles given")
        if len(numbers) > MAX_PERCENTILES:
            raise ValueError(f"at most {MAX_PERCENTILES} percentiles; got {len(numbers)}")
        return check_percentiles(numbers)
    except ValueError as exc:
        raise OptionError(f"percentiles {value!r}: {exc}") from None


def check_options(
    *,
    workers: int | None = None,
    batch_size: int | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    checkpoint: Any = None,
) -> None:
    """Raise :class:`OptionError` naming the first option whose value prep cannot use."""
    for name, value, low in (
        ("workers", workers, 0),
        ("batch_size", batch_size, 1),
        ("checkpoint_every", checkpoint_every, 1),
    ):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise OptionError(f"{name} must be an integer; got {value!r}")
        if value < low:
            raise OptionError(f"{name} must be >= {low}; got {value}")
    if resume and checkpoint is None:
        raise OptionError("resume needs a checkpoint file")


def describe_default(name: str) -> str:
    """``[default: ...]`` for the CLI's help, from the option's declaration."""
    o = BY_NAME[name]
    return f"[default: {o.default if o.shown is None else o.shown}]"


def parse_bands(value: Any) -> tuple[int, ...] | None:
    """``--bands``: ``"1,2,3"``, ``"2-4,8"`` or a list of band numbers, numbered from 1 as GDAL
    numbers bands, as 0-based indices in the order given (None: every band)."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    out: list[int] = []
    try:
        for part in parts:
            if isinstance(part, str) and "-" in part.strip()[1:]:
                first, last = (int(x) for x in part.split("-", 1))
                if last < first:
                    raise ValueError(f"range {part.strip()} runs backwards")
                out.extend(range(first, last + 1))
            elif isinstance(part, bool):
                raise ValueError(f"not a band number: {part!r}")
            else:
                out.append(int(part))
    except ValueError as exc:
        raise OptionError(f"bands {value!r}: {exc}; give band numbers from 1, e.g. 1,2,3 or 2-4,8") from None
    if not out or min(out) < 1:
        raise OptionError(f"bands {value!r}: band numbers start at 1 (GDAL's numbering)")
    if len(set(out)) != len(out):
        raise OptionError(f"bands {value!r}: a band is listed twice")
    return tuple(b - 1 for b in out)


def parse_band_names(value: Any) -> tuple[str, ...] | None:
    """``--band-names``: ``"B02,B03,B04"`` or a list of names (None: the file's, or none)."""
    if value is None:
        return None
    names = [str(n).strip() for n in (value.split(",") if isinstance(value, str) else value)]
    if not names or any(not n for n in names):
        raise OptionError(f"band names {value!r}: expected non-empty, comma-separated names")
    if len(set(names)) != len(names):
        raise OptionError(f"band names {value!r}: a name is given twice")
    return tuple(names)


NODATA_NONE = "none"  # --nodata none: ignore a GeoTIFF's own nodata tag


def parse_nodata(value: Any) -> tuple[float, ...] | str | None:
    """``--nodata``: None (the file's own nodata tag, if any), ``"none"`` (no nodata at all), or
    one value / one value per band (``"0"``, ``"-9999"``, ``"0,0,65535"``, ``"nan"``) as floats."""
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == NODATA_NONE:
        return NODATA_NONE
    parts = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else [value]
    try:
        values = tuple(float(p) for p in parts if not isinstance(p, bool))
    except (TypeError, ValueError):
        raise OptionError(f"nodata {value!r}: expected a number, one per band, or none") from None
    if len(values) != len(parts) or not values:
        raise OptionError(f"nodata {value!r}: expected a number, one per band, or none")
    if any(math.isinf(v) for v in values):
        raise OptionError(f"nodata {value!r}: infinities are left out of float data already")
    return values
