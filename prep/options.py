"""Option resolution for ``prep stats``: command-line flag, then config file, then default.

:data:`DEFAULTS` is the one home of every default: :func:`prep.compute_stats`' signature and
the CLI's help read them from here. Config files are TOML with the long option names as keys
(``batch-size`` or ``batch_size``) and ``source``; see ``configs/``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from typing import Any

from prep.errors import OptionError

DEVICE_CHOICES = ("auto", "cpu", "cuda")
DECODER_CHOICES = ("auto", "pil", "torchvision")  # prep.decode.decoders; the default first
MAX_PERCENTILES = 101  # percentiles a stats file lists at most (any other: Stats.percentile)
DEFAULTS: dict[str, Any] = {
    "source": None,
    "root": "data",
    "split": None,  # train for named datasets; for folders, the whole folder
    "out": None,
    "device": "auto",
    "workers": None,  # the number of CPUs this process may use
    "batch_size": None,  # about 1M pixels per batch on the CPU, 32M on CUDA
    "mode": None,  # the source's native mode
    "resize": None,  # no resize before measuring
    "center_crop": None,  # no crop before measuring
    "follow_symlinks": True,  # as torchvision's ImageFolder
    "checksum": False,  # folder staleness from sizes and modification times, not contents
    "key": None,  # WebDataset: the sample's image extension; .npz: the array
    "layout": None,  # NumPy arrays: NHWC or NCHW when the shape is ambiguous
    "archives": False,  # a directory of tar shards rather than an image folder
    "image_key": None,  # dict items: "image" or "img"
    "percentiles": None,  # prep.stats.histogram.DEFAULT_PERCENTILES
    "shard": None,  # the whole dataset
    "sample": None,  # every image
    "seed": 0,  # of --sample
    "per_image": None,  # no per-image report
    "covariance": None,  # on: the colour covariance and its PCA, where exact (8- and 16-bit data)
    "decoder": None,  # image files: auto (PIL's pixels, by torchvision.io where it gives them)
    "outlier_k": 4.0,  # brightness outliers: beyond this many stds of the images' brightness
    "download": False,
    "strict": False,
    "force": False,
    "quiet": False,
    "checkpoint": None,
    "checkpoint_every": 10_000,
    "resume": False,
}
# the options of prep.compute_stats (the rest of DEFAULTS belongs to the command line)
PASS_OPTIONS = (
    "root",
    "split",
    "device",
    "workers",
    "batch_size",
    "mode",
    "strict",
    "download",
    "follow_symlinks",
    "checksum",
    "key",
    "layout",
    "archives",
    "image_key",
    "percentiles",
    "shard",
    "sample",
    "seed",
    "per_image",
    "outlier_k",
    "covariance",
    "decoder",
    "checkpoint",
    "checkpoint_every",
    "resume",
)
# the options that say what the source is (prep.resolve_source's keyword arguments)
SOURCE_OPTIONS = ("root", "split", "download", "follow_symlinks", "checksum", "key", "layout", "archives", "image_key")
_TYPES: dict[str, tuple[type, ...]] = {
    "source": (str, list),
    "root": (str,),
    "split": (str,),
    "out": (str,),
    "device": (str,),
    "workers": (int,),
    "batch_size": (int,),
    "mode": (str,),
    "resize": (int, str),
    "center_crop": (int, str),
    "follow_symlinks": (bool,),
    "checksum": (bool,),
    "key": (str,),
    "layout": (str,),
    "archives": (bool,),
    "image_key": (str,),
    "percentiles": (str, list),
    "shard": (str,),
    "sample": (int, float, str),
    "seed": (int,),
    "per_image": (str,),
    "covariance": (bool,),
    "decoder": (str,),
    "outlier_k": (int, float),
    "download": (bool,),
    "strict": (bool,),
    "force": (bool,),
    "quiet": (bool,),
    "checkpoint": (str,),
    "checkpoint_every": (int,),
    "resume": (bool,),
}


_CHOICES: dict[str, tuple[str, ...]] = {"device": DEVICE_CHOICES, "decoder": DECODER_CHOICES, "mode": ("RGB", "L")}


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
    """``[default: ...]`` for the CLI's help, read from :data:`DEFAULTS`."""
    value = DEFAULTS[name]
    shown = {
        "split": "train for named datasets, the whole folder for folders",
        "workers": "CPU count",
        "batch_size": "~1M pixels on CPU, 32M on CUDA",
        "decoder": "auto",
    }.get(name, value)
    return f"[default: {shown}]"
