"""Validation of a stats file's JSON: every field checked, naming the field at fault in one line.

The state (``state``, a :class:`~prep.stats.moments.ChannelMoments`) is the single source of
truth: :class:`~prep.stats.file.Stats` derives every number from it. :func:`stats_fields` checks
the fields that describe the data and the measurement and reads the state (with what
:func:`check_state` adds to its own checks); :func:`check_derived` then derives the summary
fields from the state and refuses a file whose ``count``, ``mean``, ``std``, ..., ``percentiles``,
``covariance`` and ``pca`` differ from them, so a hand edit never passes for a measurement.
Every refusal is a :class:`~prep.errors.StatsFileError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from prep._version import __version__
from prep.errors import StatsFileError
from prep.fields import (
    INT64_MAX,
    check_shape,
    field_name,
    is_int,
    is_number,
    read_count,
    read_field,
    refuse_unknown_keys,
    short_repr,
)
from prep.options import MAX_PERCENTILES
from prep.pixels import CHANNELS, EIGHT_BIT_MAX, MODES
from prep.stats.exact import exact_moments
from prep.stats.histogram import DEFAULT_PERCENTILES, check_percentiles
from prep.stats.intervals import sample_intervals
from prep.stats.moments import MAX_CHANNELS, ChannelMoments
from prep.stats.skipped import SkippedFiles
from prep.stats.state_codec import IMAGE_STD_SCALE, check_class_totals

if TYPE_CHECKING:
    from prep.stats.file import Stats

SCHEMA_VERSION = 1
DECODERS_RECORDED = ("pil", "auto", "torchvision", "torchvision-cuda", "bands")  # options.decoder: prep.decode.decoders
FILE_SOURCE_KINDS = ("folder", "sample", "archive", "webdataset")  # sources of image files, which a decoder reads
REL_TOL = 1e-9  # summary numbers, and float64 moments next to exact sums, must agree with the state this closely
# the fields derived from the state, in the order Stats.to_dict writes them: (name, relative
# tolerance (None: equal) and absolute tolerance, what the message says they do not match (None:
# the stored state, both values shown)); the eigenvectors to 1e-9: LAPACK builds differ in the last bits
DERIVED_FIELDS = (
    ("source.images", None, 0.0, None),
    ("pixel_max", None, 0.0, None),
    ("count", None, 0.0, None),
    ("mean", REL_TOL, 1e-15, None),
    ("std", REL_TOL, 1e-15, None),
    ("min", REL_TOL, 1e-15, None),
    ("max", REL_TOL, 1e-15, None),
    ("per_image_std_mean", REL_TOL, 1e-15, None),
    ("nonfinite", None, 0.0, None),
    ("percentiles", None, 0.0, "state.histogram"),
    ("covariance", None, 0.0, "state.cross"),
    ("pca", REL_TOL, 1e-12, "the eigen decomposition of the covariance"),
)
# what a fingerprint holds, by key, and the shapes prep writes (required keys, optional keys):
# folders hash their listing and idx/CIFAR files their decoded images ({files, bytes, sha256}; a
# folder measured with checksum=True adds "checksum", a SHA-256 of the files' contents); a Python
# dataset given a dataset_id is fingerprinted by it and its length (null for an iterable without one)
FINGERPRINT_FIELDS = {
    "files": "count",
    "bytes": "count",
    "sha256": "sha256",
    "checksum": "sha256",
    "dataset_id": "text",
    "images": "count or null",
}
FINGERPRINT_SHAPES = (
    (("files", "bytes", "sha256"), ("checksum",)),
    (("dataset_id", "images"), ()),
)
ADDED_FIELDS = ("units", "nodata_count", "valid_fraction")  # derived fields of prep 0.4 (band_names: read)
OUTLIER_KINDS = ("constant", "near_black", "near_white", "brightness", "duplicates")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def stats_fields(data: Any) -> dict[str, Any]:
    """The arguments of :class:`~prep.stats.file.Stats` from a stats file's JSON ``data``, each field
    checked; the summary fields are checked for type here and against the state by
    :func:`check_derived`."""
    if not isinstance(data, dict):
        raise StatsFileError("expected a JSON object at the top level")
    check_shape(data)
    version = read_field(data, "schema_version", int)
    if version != SCHEMA_VERSION:
        raise StatsFileError(
            f"field 'schema_version': unknown schema version {short_repr(version)} "
            f"(this prep {__version__} reads version {SCHEMA_VERSION})"
        )
    prep_version = read_field(data, "prep_version", str)
    created = _created(data)
    source = _source(data)
    mode = source["mode"]
    fingerprint = _fingerprint(data)
    transform, decoder, bands, nodata = _options(data, mode)
    channels = read_field(data, "channels", int)
    if mode in CHANNELS and channels != CHANNELS[mode]:
        raise StatsFileError(f"field 'channels': mode {mode} has {CHANNELS[mode]} channels; got {short_repr(channels)}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise StatsFileError(f"field 'channels': expected 1 to {MAX_CHANNELS}; got {short_repr(channels)}")
    if bands is not None and len(bands) != channels:
        raise StatsFileError(f"field 'options.bands': {len(bands)} band(s) for {channels} channel(s)")
    if nodata is not None and len(nodata) != channels:
        raise StatsFileError(f"field 'options.nodata': {len(nodata)} value(s) for {channels} channel(s)")
    band_names = _band_names(data, channels)
    for name in ("mean", "std", "min", "max", "per_image_std_mean"):
        _vector(data, name, channels)
    if any(v < 0 for v in data["std"]):
        raise StatsFileError(f"field 'std': must be non-negative; got {data['std']}")
    for name in ("count", "nonfinite"):
        _vector(data, name, channels, integers=True)
    read_field(data, "pixel_max", (int, float))
    skipped = SkippedFiles.from_json(read_field(data, "skipped", dict))
    state = _state(data, channels)
    return {
        "source": {k: v for k, v in source.items() if k not in ("mode", "images")},
        "fingerprint": fingerprint,
        "mode": mode,
        "state": state,
        "skipped": skipped,
        "created": created,
        "prep_version": prep_version,
        "transform": transform,
        "decoder": decoder,
        "percentiles_q": _percentiles_q(data, state),
        "exact_percentiles": _exact_percentiles(data, state),
        "sample": _sample(data, state),
        "outliers": _outliers(data),
        "band_names": band_names,
        "bands": bands,
        "nodata": nodata,
        **_classes(data, state),
        **_volume(data),
    }


VOLUME_FIELDS = ("voxels", "foreground", "ignore_label", "label_values", "per_label", "scaling")


def _volume(data: Mapping[str, Any]) -> dict[str, Any]:
    """``volume`` (files of NIfTI volumes): the voxels measured and the header scalings."""
    if "volume" not in data:
        return {}
    volume = read_field(data, "volume", dict)
    refuse_unknown_keys(volume, VOLUME_FIELDS, "volume")
    for key in VOLUME_FIELDS:
        if key not in volume:
            raise StatsFileError(f"missing field 'volume.{key}'")
    if not isinstance(volume["voxels"], str):
        raise StatsFileError("field 'volume.voxels': expected a string")
    for key in ("foreground", "per_label"):
        if not isinstance(volume[key], bool):
            raise StatsFileError(f"field 'volume.{key}': expected true or false")
    if volume["ignore_label"] is not None and not is_int(volume["ignore_label"]):
        raise StatsFileError("field 'volume.ignore_label': expected an integer or null")
    values = volume["label_values"]
    if values is not None and not (isinstance(values, list) and all(is_int(v) for v in values)):
        raise StatsFileError("field 'volume.label_values': expected a list of integers or null")
    scaling = volume["scaling"]
    if not isinstance(scaling, list) or not all(
        isinstance(e, dict)
        and set(e) == {"slope", "inter", "files"}
        and is_number(e["slope"])
        and is_number(e["inter"])
        and is_int(e["files"])
        for e in scaling
    ):
        raise StatsFileError("field 'volume.scaling': expected a list of {slope, inter, files}")
    return {"volume": volume}


def check_derived(data: Mapping[str, Any], stats: Stats) -> None:
    """Refuse ``data`` (checked by :func:`stats_fields`) unless it holds the fields that ``stats``,
    read from it, writes (:meth:`~prep.stats.file.Stats.to_dict`) and no other, with those of
    :data:`DERIVED_FIELDS` what it derives from its state."""
    derived = stats.to_dict()
    refuse_unknown_keys(data, derived)
    for name in ADDED_FIELDS:  # absent from the files of earlier versions; checked where present
        if name in data and data[name] != derived[name]:
            raise StatsFileError(f"field '{name}': {data[name]} does not match the stored state; was the file edited?")
    for name, rel, abs_tol, origin in DERIVED_FIELDS:
        value, want = _at(data, name), _at(derived, name)
        same = value == want if rel is None else _close(value, want, rel, abs_tol)
        if same:
            continue
        if origin is None:
            raise StatsFileError(
                f"field '{name}': {value} does not match the stored state ({want}); was the file edited?"
            )
        raise StatsFileError(f"field '{name}': does not match {origin}; was the file edited?")
    _check_class_fields(data, derived)
    check_covariance(stats)


CLASS_FIELDS = ("images", "count", "mean", "std", "min", "max", "state")  # of each per_class entry


def _classes(data: Mapping[str, Any], state: ChannelMoments) -> dict[str, Any]:
    """``classes`` and ``per_class`` (both or neither; absent from files of passes without
    ``per_class``): the class names, unique strings, and by class name an object whose ``state``
    is read as :func:`_state` reads the whole one; the classes' states must add up to the whole
    state exactly (:func:`~prep.stats.state_codec.check_class_totals`)."""
    if "classes" not in data and "per_class" not in data:
        return {}
    names = read_field(data, "classes", list)
    if not all(isinstance(n, str) and n and "/" not in n for n in names) or len(set(names)) != len(names):
        raise StatsFileError("field 'classes': expected unique folder names (non-empty strings without '/')")
    per_class = read_field(data, "per_class", dict)
    states = {}
    for name, entry in per_class.items():
        where = field_name("per_class", name)
        if name not in names:
            raise StatsFileError(f"field '{where}': not one of 'classes'")
        if not isinstance(entry, dict):
            raise StatsFileError(f"field '{where}': expected an object")
        refuse_unknown_keys(entry, CLASS_FIELDS, where)
        for key in CLASS_FIELDS:
            if key not in entry:
                raise StatsFileError(f"missing field '{where}.{key}'")
        states[name] = _state(entry, state.channels, where)
    volume = data.get("volume")
    per_label = isinstance(volume, dict) and volume.get("per_label") is True
    check_class_totals(state, states, "per_class", images=not per_label)
    return {"classes": names, "class_states": states}


def _check_class_fields(data: Mapping[str, Any], derived: Mapping[str, Any]) -> None:
    """Each ``per_class`` entry's numbers are those its state gives (as :data:`DERIVED_FIELDS`)."""
    for name, entry in (data.get("per_class") or {}).items():
        want = derived["per_class"][name]
        for key in CLASS_FIELDS[:-1]:
            exact = key in ("images", "count")
            same = entry[key] == want[key] if exact else _close(entry[key], want[key], REL_TOL, 1e-15)
            if not same:
                raise StatsFileError(
                    f"field '{field_name(field_name('per_class', name), key)}': does not match its state; "
                    "was the file edited?"
                )


COVARIANCE_TOL = 1e-9  # of E[x**2]: the covariance from float64 raw sums (16-bit data) has this much cancellation


def check_covariance(stats: Stats) -> None:
    """A covariance must be one: its diagonal the variances (``std**2``, within
    :data:`COVARIANCE_TOL` of ``E[x**2]``) and its eigenvalues non-negative (positive
    semi-definite, within the same tolerance). A state whose cross sums mixed units (prep 0.3
    added 8-bit and 16-bit products as they were) fails this, so its file is never trusted."""
    cov = stats.covariance
    if cov is None:
        return
    summary = stats.summary
    scale = [COVARIANCE_TOL * (m * m + s * s) + 1e-15 for m, s in zip(summary.mean, summary.std)]
    for i, (row, std, tol) in enumerate(zip(cov, summary.std, scale)):
        if abs(row[i] - std * std) > tol:
            raise StatsFileError(
                f"field 'covariance': its diagonal ({row[i]:.6g} in channel {i}) must equal std**2 "
                f"({std * std:.6g}); was the state edited, or written by a prep that mixed 8- and 16-bit sums?"
            )
    if float(np.linalg.eigvalsh(np.asarray(cov, dtype=np.float64)).min()) < -sum(scale):
        raise StatsFileError("field 'covariance': not positive semi-definite (a negative eigenvalue)")


def _at(data: Mapping[str, Any], name: str) -> Any:
    for key in name.split("."):
        data = data[key]
    return data


def _close(value: Any, want: Any, rel: float, abs_tol: float) -> bool:
    """``value`` has the shape of ``want`` (objects, lists, numbers) and its numbers are close."""
    if isinstance(want, dict):
        same_shape = isinstance(value, dict) and value.keys() == want.keys()
        pairs = [(value[k], want[k]) for k in want] if same_shape else []
    elif isinstance(want, list):
        same_shape = isinstance(value, list) and len(value) == len(want)
        pairs = list(zip(value, want)) if same_shape else []
    elif want is None:
        return value is None
    else:
        return is_number(value) and math.isclose(value, want, rel_tol=rel, abs_tol=abs_tol)
    return same_shape and all(_close(v, w, rel, abs_tol) for v, w in pairs)


def _vector(data: Mapping[str, Any], name: str, channels: int, integers: bool = False) -> None:
    """``data[name]``: a list of one finite number (or count) per channel."""
    values = read_field(data, name, list)
    if len(values) != channels:
        raise StatsFileError(f"field '{name}': expected {channels} values (one per channel); got {len(values)}")
    for v in values:
        if integers and not (is_int(v) and 0 <= v <= INT64_MAX):
            raise StatsFileError(f"field '{name}': expected integers from 0 to 2**63-1; got {short_repr(v)}")
        if not integers and not (is_number(v) and math.isfinite(v)):
            raise StatsFileError(f"field '{name}': expected finite numbers; got {short_repr(v)}")


def _source(data: Mapping[str, Any]) -> dict[str, Any]:
    """``source``: ``kind`` and ``mode`` strings, ``path`` and ``split`` strings or null, the
    ``images`` count; any other key a source describes itself with must hold a plain value."""
    source = read_field(data, "source", dict)
    for key in ("kind", "mode"):
        if not isinstance(source.get(key), str) or not source[key]:
            raise StatsFileError(f"field 'source.{key}': expected a non-empty string")
    if source["mode"] not in MODES:
        raise StatsFileError(
            f"field 'source.mode': expected one of {', '.join(MODES)}; got {short_repr(source['mode'])}"
        )
    for key in ("path", "split"):
        read_field(source, key, (str, type(None)), "source")
    read_count(source, "images", "source")
    for key, value in source.items():
        plain = isinstance(value, str | bool | type(None)) or (
            isinstance(value, int | float) and math.isfinite(value) and abs(value) <= INT64_MAX
        )
        if not plain:
            raise StatsFileError(f"field '{field_name('source', key)}': expected a string, number or null")
    return source


def _fingerprint(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """``fingerprint``: null, or an object of one of the shapes prep writes (:data:`FINGERPRINT_SHAPES`)."""
    fingerprint = read_field(data, "fingerprint", (dict, type(None)))
    if fingerprint is None:
        return None
    refuse_unknown_keys(fingerprint, FINGERPRINT_FIELDS, "fingerprint")
    shape = next((req for req, opt in FINGERPRINT_SHAPES if set(fingerprint) <= {*req, *opt}), None)
    if shape is None:
        raise StatsFileError(
            f"field 'fingerprint': mixes the keys of different fingerprints ({', '.join(fingerprint)})"
        )
    for key in shape:
        if key not in fingerprint:
            raise StatsFileError(f"missing field 'fingerprint.{key}'")
    for key, value in fingerprint.items():
        kind = FINGERPRINT_FIELDS[key]
        if kind == "count" or (kind == "count or null" and value is not None):
            read_count(fingerprint, key, "fingerprint")
        elif kind == "sha256" and not (isinstance(value, str) and _SHA256.fullmatch(value)):
            raise StatsFileError(
                f"field 'fingerprint.{key}': expected a SHA-256 (64 lowercase hex digits); got {short_repr(value)}"
            )
        elif kind == "text" and not (isinstance(value, str) and value):
            raise StatsFileError(f"field 'fingerprint.{key}': expected a non-empty string; got {short_repr(value)}")
    return fingerprint


def _band_names(data: Mapping[str, Any], channels: int) -> tuple[str, ...] | None:
    """``band_names``: absent or null, or one non-empty string per channel."""
    names = data.get("band_names")
    if names is None:
        return None
    if not isinstance(names, list) or len(names) != channels or not all(isinstance(n, str) and n for n in names):
        raise StatsFileError(f"field 'band_names': expected null or {channels} non-empty strings")
    return tuple(names)


def _options(
    data: Mapping[str, Any], mode: str
) -> tuple[str | None, str | None, tuple[int, ...] | None, tuple[float, ...] | None]:
    """``options``: ``mode`` (as ``source.mode``), ``transform`` (a description, or null) and
    ``decoder`` (one of :data:`DECODERS_RECORDED`, or null); returns the transform and the
    decoder. ``mode`` and ``transform`` are required: a file without its transform could be
    reused for data measured without one. ``decoder`` is absent from files of prep 0.2.0 and
    earlier, when PIL decoded every image file: read as ``pil`` for sources of image files."""
    options = read_field(data, "options", dict)
    transform = read_field(options, "transform", (str, type(None)), "options")
    refuse_unknown_keys(options, ("mode", "transform", "decoder", "bands", "nodata"), "options")
    decoder = options.get("decoder")
    if "decoder" not in options and data["source"].get("kind") in FILE_SOURCE_KINDS:
        decoder = "pil"
    if decoder is not None and decoder not in DECODERS_RECORDED:
        raise StatsFileError(
            f"field 'options.decoder': expected one of {', '.join(DECODERS_RECORDED)} or null; "
            f"got {short_repr(decoder)}"
        )
    if options.get("mode") != mode:
        raise StatsFileError(
            f"field 'options.mode': expected {mode!r} (as source.mode); got {short_repr(options.get('mode'))}"
        )
    bands = options.get("bands")
    if bands is not None:
        if not isinstance(bands, list) or not bands or not all(is_int(b) and b >= 1 for b in bands):
            raise StatsFileError("field 'options.bands': expected band numbers from 1")
        bands = tuple(b - 1 for b in bands)
    nodata = options.get("nodata")
    if nodata is not None:
        if not isinstance(nodata, list) or not all(v is None or (is_number(v) and math.isfinite(v)) for v in nodata):
            raise StatsFileError("field 'options.nodata': expected a number (or null for NaN) per channel")
        nodata = tuple(math.nan if v is None else float(v) for v in nodata)
    return transform, decoder, bands, nodata


def _created(data: Mapping[str, Any]) -> str:
    created = read_field(data, "created", str)
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise StatsFileError(f"field 'created': expected an ISO 8601 time; got {short_repr(created)}") from None
    return created


def _state(data: Mapping[str, Any], channels: int, where: str = "") -> ChannelMoments:
    """``state`` (of ``data``, the field ``where``): the accumulator, checked by
    :meth:`ChannelMoments.from_state_dict` and :func:`check_state`, with a pixel in every channel
    and the file's channel count."""
    name = field_name(where, "state")
    try:
        state = ChannelMoments.from_state_dict(read_field(data, "state", dict, where), where=name)
    except ValueError as exc:  # its messages repr values: an int of over 4300 digits (check_shape refuses those)
        raise StatsFileError(f"field '{name}': cannot be read ({type(exc).__name__})") from None
    if state.channels != channels:
        raise StatsFileError(f"field '{name}.channels': expected {channels}; got {state.channels}")
    check_state(state, name)
    if min(state.count) == 0:
        raise StatsFileError(f"field '{name}.count': every channel needs at least one pixel")
    if state.pixel_max <= 0:
        raise StatsFileError(f"field '{name}.pixel_max': must be positive; got {state.pixel_max}")
    return state


def check_state(state: ChannelMoments, where: str = "state") -> None:
    """What :meth:`ChannelMoments.from_state_dict` cannot check alone (stats files and checkpoints):
    no more per-image stds than images, and with exact 8-bit sums kept, ``pixel_max`` 255 and
    float64 ``mean``/``m2`` that agree with the sums (Chan's float64 merges drift from them by
    about 1e-12 relative after millions of merges; :data:`REL_TOL` allows 1e-9)."""
    if max(state.image_std_count) > state.images:
        raise StatsFileError(f"field '{where}.images': {state.images} is fewer than state.image_std_count")
    if (
        not any(state.nonfinite)
        and not any(state.nodata_count)
        and any(n != state.images for n in state.image_std_count)
    ):
        # every image has every channel's pixels (no NaN left any out): one std per image and channel
        raise StatsFileError(
            f"field '{where}.image_std_count': {[int(n) for n in state.image_std_count]} must equal state.images "
            f"({state.images}) in every channel"
        )
    for c, (total, n) in enumerate(zip(state.image_std_sum, state.image_std_count)):
        if state.count[c] == 0:
            continue  # a channel without pixels is refused where the summary is derived
        # a std is at most half the range of its values: (max - min) / 2 per image, each rounded up once
        half_range = (float(state.max[c]) - float(state.min[c])) / 2
        if total > n * (half_range * IMAGE_STD_SCALE + 1):
            raise StatsFileError(
                f"field '{where}.image_std_sum': channel {c} holds more than {n} stds of at most "
                f"{half_range:.6g} (half of state.max - state.min) can add up to"
            )
    present = state.count > 0
    slack = 1e-12 * np.maximum(1.0, np.abs(state.mean))
    if np.any(present & ((state.mean < state.min - slack) | (state.mean > state.max + slack))):
        raise StatsFileError(f"field '{where}.mean': outside state.min..state.max")
    if state.exact_sum is not None and np.any(present & ((state.min < 0) | (state.max > 1))):
        raise StatsFileError(f"field '{where}.min': 8-bit data lies in 0..1 in unit scale")
    if state.exact_sum is None:
        return
    if max(state.count) > 0 and state.pixel_max != EIGHT_BIT_MAX:
        raise StatsFileError(
            f"field '{where}.pixel_max': exact 8-bit sums are kept, so it must be {EIGHT_BIT_MAX}; "
            f"got {state.pixel_max}"
        )
    _, means, m2s = exact_moments(state.count.tolist(), state.exact_sum, state.exact_sumsq, EIGHT_BIT_MAX)
    for name, stored, exact in (("mean", state.mean, means), ("m2", state.m2, m2s)):
        if not all(math.isclose(a, b, rel_tol=REL_TOL, abs_tol=0.0) for a, b in zip(stored, exact)):
            raise StatsFileError(
                f"field '{where}.{name}': {stored.tolist()} does not match state.exact_sum and state.exact_sumsq "
                f"({exact.tolist()}); was the file edited?"
            )


def _sample(data: Mapping[str, Any], state: ChannelMoments) -> dict[str, Any] | None:
    """``sample``: null, or ``{"images", "of", "seed", "ci95"}`` whose intervals are those the
    state's ``image_moments`` give (recomputed, so an edit is refused)."""
    sample = read_field(data, "sample", (dict, type(None))) if "sample" in data else None
    if sample is None:
        return None
    refuse_unknown_keys(sample, ("images", "of", "seed", "ci95"), "sample")
    images, total, seed = (read_count(sample, key, "sample") for key in ("images", "of", "seed"))
    if images != state.images or images > total:
        raise StatsFileError(f"field 'sample.images': {images} is not state.images ({state.images}) or exceeds 'of'")
    ci95 = sample.get("ci95")
    expected: dict[str, list[float | None]] | None = None
    if state.image_moments is not None:
        intervals = sample_intervals(state.image_moments, images, total, state.pixel_max)
        expected = {k: [v if v == v else None for v in values] for k, values in intervals.items()}
    if ci95 != expected:
        raise StatsFileError("field 'sample.ci95': does not match state.image_moments; was the file edited?")
    return {"images": images, "of": total, "seed": seed, "ci95": ci95}


def _outliers(data: Mapping[str, Any]) -> dict[str, Any] | None:
    """``outliers``: null, or per kind ``{"count", "images"}`` (``brightness`` also ``k``;
    ``duplicates`` names pairs), with at most 10 images named and no more named than counted."""
    outliers = read_field(data, "outliers", (dict, type(None))) if "outliers" in data else None
    if outliers is None:
        return None
    refuse_unknown_keys(outliers, OUTLIER_KINDS, "outliers")
    for kind in OUTLIER_KINDS:
        entry = read_field(outliers, kind, dict, "outliers")
        where = f"outliers.{kind}"
        refuse_unknown_keys(entry, ("count", "images", "k"), where)
        count = read_count(entry, "count", where)
        images = read_field(entry, "images", list, where)
        pair = kind == "duplicates"
        if len(images) > min(count, 10) or not all(
            (isinstance(x, list) and len(x) == 2 and all(isinstance(y, str) for y in x)) if pair else isinstance(x, str)
            for x in images
        ):
            raise StatsFileError(
                f"field '{where}.images': expected at most min(count, 10) "
                + ("[name, first] pairs" if pair else "names")
            )
        if kind == "brightness":
            k = read_field(entry, "k", (int, float), where)
            if not (math.isfinite(k) and k > 0):
                raise StatsFileError(f"field '{where}.k': expected a positive number; got {short_repr(k)}")
    return dict(outliers)


def _exact_percentiles(data: Mapping[str, Any], state: ChannelMoments) -> tuple[tuple[float, ...], ...] | None:
    """``percentiles.exact``: true where a second pass resolved float percentiles; each value must
    then lie within the bounds the state's histogram gives (:func:`~prep.stats.file.state_percentiles`)."""
    from prep.stats.file import state_percentiles

    percentiles = data.get("percentiles")
    if not isinstance(percentiles, dict) or "exact" not in percentiles:
        return None
    if percentiles["exact"] is not True:
        raise StatsFileError("field 'percentiles.exact': expected true (or no such field)")
    q = check_percentiles(read_field(percentiles, "q", list, "percentiles"))
    values = read_field(percentiles, "values", list, "percentiles")
    found = state_percentiles(state, q)
    if found is None or found[1] is None:
        raise StatsFileError("field 'percentiles.exact': only float data's percentiles are made exact")
    bounds = found[1]
    if len(values) != state.channels or any(not isinstance(row, list) or len(row) != len(q) for row in values):
        raise StatsFileError(f"field 'percentiles.values': expected {state.channels} rows of {len(q)} numbers")
    for c, row in enumerate(values):
        for v, (low, high) in zip(row, bounds[c]):
            if not is_number(v) or not (low <= v <= high or (math.isnan(low) and v is None)):
                raise StatsFileError(
                    f"field 'percentiles.values': {short_repr(v)} lies outside its bin [{low}, {high}]; "
                    "was the file edited?"
                )
    return tuple(tuple(float(v) for v in row) for row in values)


def _percentiles_q(data: Mapping[str, Any], state: ChannelMoments) -> tuple[float, ...]:
    """``percentiles``: null exactly when the state has no histogram, else ``{"q": [...], "values":
    [...]}`` with up to :data:`MAX_PERCENTILES` values of q in [0, 100]; returns q (the values are
    checked against the histogram by :func:`check_derived`)."""
    percentiles = read_field(data, "percentiles", (dict, type(None)))
    has_histogram = state.histogram is not None or state.wide is not None
    if (percentiles is None) != (not has_histogram):
        raise StatsFileError(
            "field 'percentiles': must be "
            + ("null without a histogram" if not has_histogram else "an object when the state has a histogram")
        )
    if percentiles is None:
        return DEFAULT_PERCENTILES
    refuse_unknown_keys(percentiles, ("q", "values", "bounds", "exact"), "percentiles")
    q = read_field(percentiles, "q", list, "percentiles")
    read_field(percentiles, "values", list, "percentiles")
    if len(q) > MAX_PERCENTILES:
        raise StatsFileError(f"field 'percentiles.q': at most {MAX_PERCENTILES} values; got {len(q)}")
    try:
        return check_percentiles(q)
    except ValueError as exc:
        raise StatsFileError(f"field 'percentiles.q': {exc}") from None
