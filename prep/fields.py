"""Checks of the fields of files prep reads back (stats files, checkpoints, whitening files).

JSON is read by :func:`parse_json` and refused by :func:`check_shape` when it nests deeper or
holds longer integers than any file prep writes, before anything else looks at it; then each
field is read by :func:`read_field` and :func:`read_count`. Every refusal is a one-line
:class:`~prep.errors.StatsFileError` naming the field (``skipped.reasons.x``, ``count[0]``) and
showing the value at fault by :func:`short_repr`, never a huge repr.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from prep.errors import StatsFileError

INT64_MAX = 2**63 - 1
LONGEST_INT = 10**30  # no integer prep writes comes near (exact sums of squares of 8-bit data: < 10**24)
MAX_DEPTH = 8  # nesting of JSON objects and lists; prep writes 7 (per_class.NAME.state.wide[c].counts)
_KIND_NAMES = {"dict": "an object", "list": "a list", "str": "a string", "int": "an integer", "float": "a number"}


def is_int(value: Any) -> bool:
    """True for an integer that is not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """True for an integer or a float that is not a bool."""
    return isinstance(value, int | float) and not isinstance(value, bool)


class _LongInteger:
    """What :func:`parse_json` reads an integer of more digits than any prep writes as; the shape
    check reports it, naming the field, before anything else looks at the data."""


_LONG_INTEGER = _LongInteger()


def parse_json(raw: str | bytes) -> Any:
    """JSON text as Python objects, integers longer than :data:`LONGEST_INT` left unconverted
    (raises ``ValueError`` or ``RecursionError`` for text that is not JSON)."""
    return json.loads(raw, parse_int=_parse_int)


def _parse_int(text: str) -> int | _LongInteger:
    return int(text) if len(text.lstrip("-")) <= len(str(LONGEST_INT)) else _LONG_INTEGER


def _too_long(value: Any) -> bool:
    return value is _LONG_INTEGER or (is_int(value) and not -LONGEST_INT < value < LONGEST_INT)


def check_shape(data: Any) -> None:
    """Refuse objects and lists nested deeper than :data:`MAX_DEPTH` and integers longer than any
    prep writes, naming the field; iterative, so no nesting makes it recurse."""
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise StatsFileError(f"field '{where}': nested deeper than any prep file")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(item, dict | list | int | _LongInteger):
                    stack.append((item, field_name(where, key), depth + 1))
        elif _too_long(value):
            raise StatsFileError(f"field '{where}': an integer longer than any prep writes")


def field_name(where: str, key: Any) -> str:
    """The name of ``key`` inside the field ``where``: ``where.key``, ``where[i]`` (a list index),
    or :func:`short_repr` of a key that is long, unprintable or quoted."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    name = key if isinstance(key, str) and key.isprintable() and len(key) <= 40 and "'" not in key else short_repr(key)
    return f"{where}.{name}" if where else name


def short_repr(value: Any) -> str:
    """A short one-line rendering of any value, for messages (no huge repr, no recursion)."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if _too_long(value):
        return "an integer longer than any prep writes"
    text = repr(value) if isinstance(value, str | int | float | bool | type(None)) else type(value).__name__
    return text if len(text) <= 60 else text[:57] + "..."


def read_field(data: Mapping[str, Any], name: str, kinds: type | tuple[type, ...], where: str = "") -> Any:
    """``data[name]``, which must be there and of one of ``kinds`` (a bool only where ``bool`` is)."""
    label = f"{where}.{name}" if where else name
    if name not in data:
        raise StatsFileError(f"missing field '{label}'")
    value = data[name]
    kinds = kinds if isinstance(kinds, tuple) else (kinds,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        got = repr(value) if isinstance(value, bool) else type(value).__name__
        expected = " or ".join(_KIND_NAMES.get(k.__name__, "null" if k is type(None) else k.__name__) for k in kinds)
        raise StatsFileError(f"field '{label}': expected {expected}; got {got}")
    return value


def read_count(data: Mapping[str, Any], name: str, where: str = "") -> int:
    """``data[name]``: a non-negative integer that fits in int64."""
    value = read_field(data, name, int, where)
    if not 0 <= value <= INT64_MAX:
        label = f"{where}.{name}" if where else name
        raise StatsFileError(f"field '{label}': expected an integer from 0 to 2**63-1; got {short_repr(value)}")
    return value


def refuse_unknown_keys(data: Mapping[str, Any], known: Iterable[str], where: str = "") -> None:
    """Refuse a key of ``data`` that is not one of ``known``, naming it."""
    for key in data:
        if key not in known:
            raise StatsFileError(f"field '{field_name(where, key)}': unknown field")
