"""Which archives a shard pattern names: brace ranges, lists of paths, directories of shards.

WebDataset names its shards with brace ranges, ``shards/train-{000000..000127}.tar``: a numeric
range keeps the zero padding of its bounds, ``{a,b}`` lists alternatives, and several braces
multiply. Every shard must exist; the order is the pattern's (or the list's) order.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

from prep.errors import SourceError
from prep.sources.archive_members import ARCHIVE_SUFFIXES, is_archive_name

MAX_SHARDS = 1_000_000  # a brace pattern naming more is a typo, not a dataset
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"(-?\d+)\.\.(-?\d+)")


def has_braces(text: str) -> bool:
    return _BRACE.search(text) is not None


def expand_braces(text: str) -> list[str]:
    """The strings a brace pattern names, in order.

    >>> expand_braces("s/train-{000..002}.tar")
    ['s/train-000.tar', 's/train-001.tar', 's/train-002.tar']
    >>> expand_braces("{a,b}-{9..10}.tar")
    ['a-9.tar', 'a-10.tar', 'b-9.tar', 'b-10.tar']
    """
    out = [text]
    while any(_BRACE.search(t) for t in out):
        expanded: list[str] = []
        for t in out:
            match = _BRACE.search(t)
            if match is None:
                expanded.append(t)
                continue
            head, tail = t[: match.start()], t[match.end() :]
            expanded.extend(head + part + tail for part in _alternatives(match.group(1), text))
            if len(expanded) > MAX_SHARDS:
                raise SourceError(f"{text}: names more than {MAX_SHARDS} shards")
        out = expanded
    return out


def _alternatives(body: str, text: str) -> list[str]:
    numbers = _RANGE.fullmatch(body)
    if numbers:
        low_text, high_text = numbers.groups()
        low, high = int(low_text), int(high_text)
        if abs(high - low) >= MAX_SHARDS:
            raise SourceError(f"{text}: names more than {MAX_SHARDS} shards")
        padded = any(len(t.lstrip("-")) > 1 and t.lstrip("-").startswith("0") for t in (low_text, high_text))
        width = max(len(low_text), len(high_text)) if padded else 0
        step = 1 if high >= low else -1
        return [str(i).zfill(width) for i in range(low, high + step, step)]
    if "," in body:
        return body.split(",")
    return ["{" + body + "}"]


def shard_paths(paths: Iterable[str | os.PathLike]) -> list[str]:
    """``paths`` as strings, each an existing archive file (else a one-line error naming it)."""
    out = []
    for p in paths:
        text = os.fspath(p)
        if not os.path.exists(text):
            raise SourceError(f"{text}: no such file")
        if not os.path.isfile(text):
            raise SourceError(f"{text}: not a file (several sources must be archives)")
        if not is_archive_name(text):
            suffixes = ", ".join(ARCHIVE_SUFFIXES)
            raise SourceError(f"{text}: not an archive ({suffixes}); several sources must be archives")
        out.append(text)
    if not out:
        raise SourceError("no archives given")
    return out


def shards_in(directory: str | os.PathLike) -> list[str]:
    """The archive files directly inside ``directory``, sorted by name."""
    root = Path(directory)
    found = sorted(p.name for p in root.iterdir() if p.is_file() and is_archive_name(p.name))
    if not found:
        raise SourceError(f"{directory}: no archives ({', '.join(ARCHIVE_SUFFIXES)}) in this directory")
    return [os.path.join(os.fspath(directory), name) for name in found]
