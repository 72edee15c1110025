"""One stats file for every library: the measured constants in each library's own units and names.

:func:`export` turns a :class:`~prep.stats.file.Stats` into the numbers (and the line to paste) that a
library's normalization takes; :func:`render` prints it as text or JSON. Every library applies
the same per-channel map, ``y = (x - mean[c]) / std[c]``; they differ in the units ``x`` has when
it arrives, so each export names its units (``units``):

=================  =========================================================  =====================
target             what it gives                                              units of mean / std
=================  =========================================================  =====================
``torchvision``    ``transforms.Normalize(mean, std)``                        unit scale
``albumentations`` ``A.Normalize(mean, std, max_pixel_value=P)``              unit scale; the input
                                                                              in 0..P is divided by P
``hf``             ``preprocessor_config.json`` keys ``do_rescale``,          unit scale, after
                   ``rescale_factor`` (1/P), ``do_normalize``,                ``rescale_factor``
                   ``image_mean``, ``image_std``
``timm``           ``pretrained_cfg`` fields ``mean``, ``std``                unit scale
``kornia``         ``kornia.enhance.Normalize(mean=tensor, std=tensor)``      unit scale
``monai``          ``NormalizeIntensity(subtrahend, divisor,                  0..P (what ``LoadImage``
                   channel_wise=True)``                                       gives); ``units="unit"``
                                                                              after ``ScaleIntensity``
``dali``           ``fn.crop_mirror_normalize(mean, std)``                    0..P (decoded pixels)
``ffcv``           ``NormalizeImage(mean, std, type=np.float32)``             0..P (decoded pixels)
``keras``          ``keras.layers.Normalization(axis=-1, mean, variance)``,   0..P (what
                   ``variance = std ** 2``                                    ``image_dataset_from_directory``
                                                                              gives); ``units="unit"``
                                                                              after ``Rescaling(1/P)``
``nnunet``         ``foreground_intensity_properties_per_channel`` (max,      0..P (the volumes'
                   mean, median, min, percentile_00_5, percentile_99_5, std)  own values)
``torchio``        ``RescaleIntensity(in_min_max=(p0.5, p99.5))`` and a       0..P
                   z-score ``Lambda``
=================  =========================================================  =====================

Raw-unit statistics (volumes, ``--mode bands``) add MONAI's ``ScaleIntensityRanged(a_min=p0.5,
a_max=p99.5, b_min=0, b_max=1, clip=True)`` to the ``monai`` export.

``P`` is the data's pixel max (255 for 8-bit data, 65535 for 16-bit, 1 for float data), so
raw-unit numbers are ``mean * P`` and ``std * P`` (and ``variance = (std * P) ** 2``), computed
in float64 from the stats file: exact constants instead of an ``adapt()`` pass in float32.
Numbers are printed with ``repr`` (the shortest text that reads back as the same float64).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from prep.errors import OptionError, PrepError, os_reason
from prep.files import read_bytes_bounded, write_json_atomic, write_text_atomic

TARGETS = (
    "torchvision",
    "albumentations",
    "hf",
    "timm",
    "kornia",
    "monai",
    "dali",
    "ffcv",
    "keras",
    "torchgeo",
    "terratorch",
    "stac",
    "nnunet",
    "torchio",
)
RAW = "the data's own values"  # the units of a stats file measured in --mode bands
FORMATS = ("text", "json")
UNIT = "unit scale"
# targets whose input units are the user's choice, and their default; every other target has fixed units
FREE_UNITS = {"monai": "raw", "keras": "raw"}
RAW_TARGETS = ("dali", "ffcv", "nnunet", "torchio")  # targets whose inputs are always the data's own values
HF_KEYS = ("do_rescale", "rescale_factor", "do_normalize", "image_mean", "image_std")


def export(stats: Any, target: str, units: str | None = None) -> dict[str, Any]:
    """The constants of ``stats`` for ``target`` (one of :data:`TARGETS`), as a JSON-able dict.

    Keys: ``target``, ``mode`` (channel order, ``RGB`` or ``L``), ``mean``, ``std`` (lists of
    floats in ``units``), ``units`` (``"unit scale"`` or ``"0..255"``/``"0..65535"``),
    ``snippet`` (the code or JSON to paste) and the target's own fields: ``max_pixel_value``
    (albumentations), ``preprocessor_config`` (hf), ``pretrained_cfg`` (timm),
    ``subtrahend``/``divisor`` (monai), ``variance`` (keras).

    ``units`` (``"raw"`` or ``"unit"``) chooses the input units of ``monai`` and ``keras``, which
    take whatever the pipeline feeds them (default ``"raw"``); other targets have fixed units.
    """
    if target not in TARGETS:
        raise OptionError(f"--to: unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    units = check_units(target, units)
    pixel_max = float(stats.pixel_max)
    own = getattr(stats, "units", "unit") == "raw"  # measured in the data's own values: no scale applies
    scale = pixel_max if units == "raw" and not own else 1.0
    mean = [float(m) * scale for m in stats.mean]
    std = [float(s) * scale for s in stats.std]
    out: dict[str, Any] = {
        "target": target,
        "mode": stats.mode,
        "mean": mean,
        "std": std,
        "units": RAW if own else _units_label(scale),
    }
    if target in _STATS_BUILDERS:
        out.update(_STATS_BUILDERS[target](stats, mean, std))
    else:
        out.update(_BUILDERS[target](mean, std, pixel_max))
    return out


def check_units(target: str, units: str | None) -> str:
    """The input units of ``target`` (``"raw"`` or ``"unit"``) for ``units`` as given (None: the
    target's own); :class:`OptionError` for ``units`` where they are fixed, even when they match."""
    fixed = "raw" if target in RAW_TARGETS else "unit"
    if units is None:
        return FREE_UNITS.get(target, fixed)
    if units not in ("raw", "unit"):
        raise OptionError(f"--units must be 'raw' or 'unit'; got {units!r}")
    if target not in FREE_UNITS:  # its units are fixed: the option means nothing there
        takes = "0..pixel max" if fixed == "raw" else UNIT
        raise OptionError(f"--units is for {' and '.join(FREE_UNITS)} only; {target} takes {takes}")
    return units


def _units_label(scale: float) -> str:
    return UNIT if scale == 1.0 else f"0..{scale:g}"


def _seq(values: Sequence[float]) -> str:
    return "[" + ", ".join(repr(float(v)) for v in values) + "]"


def _tuple(values: Sequence[float]) -> str:
    inner = ", ".join(repr(float(v)) for v in values)
    return f"({inner},)" if len(values) == 1 else f"({inner})"


def _torchvision(mean, std, pixel_max):
    return {"snippet": f"transforms.Normalize(mean={_tuple(mean)}, std={_tuple(std)})"}


def _albumentations(mean, std, pixel_max):
    snippet = f"A.Normalize(mean={_tuple(mean)}, std={_tuple(std)}, max_pixel_value={pixel_max!r})"
    return {"max_pixel_value": pixel_max, "snippet": snippet}


def _hf(mean, std, pixel_max):
    fragment = preprocessor_fragment(mean, std, pixel_max)
    return {"preprocessor_config": fragment, "snippet": json.dumps(fragment, indent=2)}


def preprocessor_fragment(mean: Sequence[float], std: Sequence[float], pixel_max: float) -> dict[str, Any]:
    """The :data:`HF_KEYS` of a Hugging Face ``preprocessor_config.json``: the processor computes
    ``(x * rescale_factor - image_mean) / image_std`` with ``rescale_factor = 1 / pixel_max``
    (no rescaling for float data, already unit scale)."""
    return {
        "do_rescale": pixel_max != 1.0,
        "rescale_factor": 1.0 / pixel_max,
        "do_normalize": True,
        "image_mean": list(mean),
        "image_std": list(std),
    }


def _timm(mean, std, pixel_max):
    cfg = {"mean": _tuple(mean), "std": _tuple(std)}
    snippet = (
        f'model = timm.create_model("MODEL", pretrained_cfg_overlay=dict(mean={cfg["mean"]}, std={cfg["std"]}))\n'
        "config = timm.data.resolve_data_config({}, model=model)  # or resolve_data_config("
        f'{{"mean": {cfg["mean"]}, "std": {cfg["std"]}}})\n'
        "transform = timm.data.create_transform(**config)"
    )
    return {"pretrained_cfg": {"mean": list(mean), "std": list(std)}, "snippet": snippet}


def _kornia(mean, std, pixel_max):
    return {"snippet": f"kornia.enhance.Normalize(mean=torch.tensor({_seq(mean)}), std=torch.tensor({_seq(std)}))"}


def _monai(mean, std, pixel_max):
    snippet = f"NormalizeIntensity(subtrahend={_seq(mean)}, divisor={_seq(std)}, channel_wise=True)"
    return {"subtrahend": list(mean), "divisor": list(std), "channel_wise": True, "snippet": snippet}


def _dali(mean, std, pixel_max):
    return {"snippet": f"fn.crop_mirror_normalize(images, mean={_seq(mean)}, std={_seq(std)})"}


def _ffcv(mean, std, pixel_max):
    return {"snippet": f"NormalizeImage(mean=np.array({_seq(mean)}), std=np.array({_seq(std)}), type=np.float32)"}


def _keras(mean, std, pixel_max):
    variance = [s * s for s in std]
    return {
        "variance": variance,
        "snippet": f"keras.layers.Normalization(axis=-1, mean={_seq(mean)}, variance={_seq(variance)})",
    }


_BUILDERS = {
    "torchvision": _torchvision,
    "albumentations": _albumentations,
    "hf": _hf,
    "timm": _timm,
    "kornia": _kornia,
    "monai": _monai,
    "dali": _dali,
    "ffcv": _ffcv,
    "keras": _keras,
}


def _torchgeo(stats, mean, std):
    """A torchgeo datamodule's ``mean``/``std`` and the kornia ``Normalize`` its ``aug`` applies."""
    snippet = (
        f"self.mean = torch.tensor({_seq(mean)})\n"
        f"self.std = torch.tensor({_seq(std)})\n"
        "self.aug = K.AugmentationSequential(K.Normalize(mean=self.mean, std=self.std), data_keys=None)"
    )
    return {"snippet": snippet, "band_names": _names(stats)}


def _terratorch(stats, mean, std):
    """TerraTorch's datamodule ``means``/``stds`` (YAML ``init_args``)."""
    snippet = f"means: {_seq(mean)}\nstds: {_seq(std)}"
    return {"means": mean, "stds": std, "snippet": snippet, "band_names": _names(stats)}


STAC_BUCKETS = 256  # buckets of a STAC raster:bands histogram


def _stac(stats, mean, std):
    """The STAC raster extension's ``raster:bands``: per band ``nodata`` and ``statistics``
    (minimum, maximum, mean, stddev, valid_percent) and a ``histogram`` (count, min, max, buckets)."""
    bands = []
    histograms = stac_histograms(stats)
    for c in range(stats.channels):
        band: dict[str, Any] = {}
        if stats.nodata is not None:
            band["nodata"] = "nan" if stats.nodata[c] != stats.nodata[c] else stats.nodata[c]
        band["statistics"] = {
            "minimum": float(stats.min[c]) * (stats.pixel_max if stats.units == "unit" else 1),
            "maximum": float(stats.max[c]) * (stats.pixel_max if stats.units == "unit" else 1),
            "mean": mean[c],
            "stddev": std[c],
            "valid_percent": 100.0 * stats.valid_fraction[c],
        }
        if histograms is not None:
            band["histogram"] = histograms[c]
        bands.append(band)
    return {
        "raster:bands": bands,
        "snippet": json.dumps({"raster:bands": bands}, indent=2),
        "band_names": _names(stats),
    }


def stac_histograms(stats) -> list[dict[str, Any]] | None:
    """Per band, a STAC histogram of :data:`STAC_BUCKETS` equal buckets over min..max, from the
    stats file's own histogram (exact counts for 8- and 16-bit data: each value falls in one
    bucket; float data by its bins' midpoints); None without a histogram."""
    import numpy as np

    raw = stats.pixel_max if stats.units == "unit" else 1.0  # STAC's numbers are the data's values
    state = stats.state
    if state.histogram is not None:  # 8-bit data: the levels bucketed over min..max as for 16-bit data
        levels = np.arange(state.histogram.shape[1]) * raw / 255.0
        rows = [(levels, row) for row in state.histogram]
        out = []
        for c, (values, row) in enumerate(rows):
            lo, hi = float(stats.min[c]) * raw, float(stats.max[c]) * raw
            counts, _ = np.histogram(values, bins=STAC_BUCKETS, range=(lo, hi if hi > lo else lo + 1), weights=row)
            out.append({"count": STAC_BUCKETS, "min": lo, "max": hi, "buckets": [int(v) for v in counts]})
        return out
    binned = stats.binned_histogram(STAC_BUCKETS)
    if binned is None:
        return None
    counts, edges = binned
    return [
        {"count": STAC_BUCKETS, "min": float(e[0]) * raw, "max": float(e[-1]) * raw, "buckets": [int(v) for v in row]}
        for row, e in zip(counts, edges)
    ]


def _names(stats) -> list[str]:
    return list(stats.channel_names)


NNUNET_KEYS = ("max", "mean", "median", "min", "percentile_00_5", "percentile_99_5", "std")


def nnunet_properties(stats) -> dict[str, dict[str, float]]:
    """nnU-Net's ``foreground_intensity_properties_per_channel`` (``dataset_fingerprint.json`` and
    ``plans.json``): per channel index as a string, :data:`NNUNET_KEYS` in the data's own values
    (the median is the 50th percentile, as ``np.median``; exact for 16-bit data)."""
    percentiles = [stats.percentile(q) for q in (0.5, 50.0, 99.5)]
    raw = stats.pixel_max if stats.units == "unit" else 1.0
    out = {}
    for c in range(stats.channels):
        low, median, high = (float(p[c]) * raw for p in percentiles)
        out[str(c)] = {
            "max": float(stats.max[c]) * raw,
            "mean": float(stats.mean[c]) * raw,
            "median": median,
            "min": float(stats.min[c]) * raw,
            "percentile_00_5": low,
            "percentile_99_5": high,
            "std": float(stats.std[c]) * raw,
        }
    return out


def _nnunet(stats, mean, std):
    """The block nnU-Net's CT normalization reads, to drop into a plans.json or fingerprint."""
    block = {"foreground_intensity_properties_per_channel": nnunet_properties(stats)}
    return {**block, "snippet": json.dumps(block, indent=2)}


def _ranges(stats) -> list[tuple[float, float]] | None:
    """Per channel, the 0.5th and 99.5th percentiles in the data's own values (None: no histogram)."""
    if stats.histogram is None and stats.state.wide is None:
        return None
    raw = stats.pixel_max if stats.units == "unit" else 1.0
    low, high = stats.percentile(0.5), stats.percentile(99.5)
    return [(float(a) * raw, float(b) * raw) for a, b in zip(low, high)]


def _monai_volumes(stats, mean, std):
    """``monai``, and for raw-unit statistics ``ScaleIntensityRanged`` between the 0.5th and 99.5th
    percentiles (one per channel: its a_min/a_max are one number)."""
    out = _monai(mean, std, float(stats.pixel_max))
    ranges = _ranges(stats) if stats.units == "raw" else None
    if ranges is None:
        return out
    lines = [
        f"ScaleIntensityRanged(keys=['image'], a_min={a!r}, a_max={b!r}, b_min=0.0, b_max=1.0, clip=True)"
        + (f"  # channel {c}" if len(ranges) > 1 else "")
        for c, (a, b) in enumerate(ranges)
    ]
    out["scale_intensity_range"] = [
        {"a_min": a, "a_max": b, "b_min": 0.0, "b_max": 1.0, "clip": True} for a, b in ranges
    ]
    out["snippet"] = "\n".join([out["snippet"], *lines])
    return out


def _torchio(stats, mean, std):
    """torchio: ``Clamp`` to the dataset's 0.5th/99.5th percentiles, then ``RescaleIntensity``
    of that range onto 0..1 (it does not clip by itself; one range for every channel, so per
    channel for several), and a z-score with the dataset's constants (``ZNormalization`` measures
    each image itself, so a ``Lambda``)."""
    ranges = _ranges(stats) or []
    lines = [
        f"tio.Clamp(out_min={a!r}, out_max={b!r}), tio.RescaleIntensity(out_min_max=(0.0, 1.0), "
        f"in_min_max=({a!r}, {b!r}))" + (f"  # channel {c}" if len(ranges) > 1 else "")
        for c, (a, b) in enumerate(ranges)
    ]
    lines.append(
        f"tio.Lambda(lambda x: (x - torch.tensor({_seq(mean)}).view(-1, 1, 1, 1)) / "
        f"torch.tensor({_seq(std)}).view(-1, 1, 1, 1), types_to_apply=[tio.INTENSITY])"
    )
    return {"in_min_max": [list(r) for r in ranges], "snippet": "\n".join(lines)}


_STATS_BUILDERS = {
    "torchgeo": _torchgeo,
    "terratorch": _terratorch,
    "stac": _stac,
    "nnunet": _nnunet,
    "torchio": _torchio,
    "monai": _monai_volumes,
}

_INPUT = {
    "torchvision": "input: float tensor in unit scale, after ToDtype(scale=True) or ToTensor",
    "albumentations": "input: HWC image in 0..{P}, channels {mode}{bgr}",
    "hf": "preprocessor_config.json keys; the processor multiplies by rescale_factor, then normalizes",
    "timm": "input: float tensor in unit scale, as timm's transforms give",
    "kornia": "input: float tensor (B, C, H, W) in unit scale",
    "monai": "input: channel-first image in {units}",
    "dali": "input: decoded pixels in {units}, channels {mode}",
    "ffcv": "input: decoded pixels in {units}, channels {mode}",
    "keras": "input: channels-last float images in {units}; variance = std ** 2",
    "torchgeo": "a datamodule's mean/std in {units}, bands {names}; K is kornia.augmentation",
    "terratorch": "the datamodule's init_args in {units}, bands {names}",
    "stac": "an item's raster:bands statistics in {units}, bands {names}",
    "nnunet": "the plans.json / dataset_fingerprint.json block in {units}, channels {names}",
    "torchio": "input: channel-first ScalarImage in {units}; tio is torchio",
}


def render(exported: dict[str, Any], fmt: str = "text") -> str:
    """``exported`` as text (a comment naming the units, then the snippet) or as JSON."""
    if fmt not in FORMATS:
        raise OptionError(f"--format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    if fmt == "json":
        return json.dumps(exported, indent=2, allow_nan=False)
    target = exported["target"]
    raw_max = exported.get("max_pixel_value", 255.0)
    bgr = "; cv2.imread gives BGR" if exported["mode"] == "RGB" else ""  # a grey image has no channel order
    names = ", ".join(exported.get("band_names") or []) or exported["mode"]
    note = _INPUT[target].format(P=f"{raw_max:g}", units=exported["units"], mode=exported["mode"], bgr=bgr, names=names)
    return f"# {target}: mean/std in {exported['units']} ({note})\n{exported['snippet']}"


def file_text(exported: dict[str, Any], fmt: str = "text") -> str:
    """What ``prep export -o FILE`` writes: the JSON fragment for ``hf`` (a JSON target), else
    :func:`render`'s text, with a final newline."""
    if exported["target"] == "hf" and fmt == "text":
        return json.dumps(exported["preprocessor_config"], indent=2) + "\n"
    return render(exported, fmt) + "\n"


def save_export(exported: dict[str, Any], path: str | os.PathLike, fmt: str = "text") -> None:
    """Write :func:`file_text` to ``path`` atomically."""
    try:
        write_text_atomic(path, file_text(exported, fmt))
    except OSError as exc:
        raise PrepError(f"{os.fspath(path)}: cannot write the export ({os_reason(exc)})") from None


def update_preprocessor_config(path: str | os.PathLike, stats: Any) -> dict[str, Any]:
    """Set the :data:`HF_KEYS` of an existing ``preprocessor_config.json`` from ``stats``, keep
    every other key (and the key order), and write it back atomically; returns the new config."""
    text = os.fspath(path)
    raw = read_bytes_bounded(text, "preprocessor config", error=PrepError)

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    try:
        config = json.loads(raw, parse_constant=refuse)
    except (ValueError, RecursionError) as exc:
        raise PrepError(f"{text}: not valid JSON ({exc})") from None
    if not isinstance(config, dict):
        raise PrepError(f"{text}: not a preprocessor config (expected a JSON object)")
    config.update(export(stats, "hf")["preprocessor_config"])
    try:
        write_json_atomic(text, config)
    except OSError as exc:
        raise PrepError(f"{text}: cannot write the preprocessor config ({os_reason(exc)})") from None
    return config
