"""Files a pass passed over, kept bounded: :class:`SkippedFiles`.

A dataset that skips half a million files (a symlink to ``/``) must not write a stats file or a
checkpoint of half a million names: the first :data:`SKIPPED_LISTED` are listed by name, and all
of them are counted, in total and per :func:`reason_category`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prep.errors import StatsFileError
from prep.fields import INT64_MAX, field_name, is_int, read_count, read_field, refuse_unknown_keys, short_repr

SKIPPED_LISTED = 1000  # skipped files a stats file or checkpoint names; its count and per-reason totals cover all


def reason_category(reason: str) -> str:
    """The short category of a skip reason, its text before the first ``:`` (``cannot decode``,
    ``symlink loop``, ``not an image file extension``): what the per-reason totals count."""
    return reason.partition(":")[0]


@dataclass
class SkippedFiles:
    """Files passed over, kept bounded: the first :data:`SKIPPED_LISTED` ``(path, reason)`` pairs in
    the order they came, how many there were in all, and how many per :func:`reason_category`.

    A pass ``extend``s it as it finds them; iterating gives the listed pairs.
    """

    listed: list[tuple[str, str]] = field(default_factory=list)
    count: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def add(self, path: str, reason: str) -> None:
        self.count += 1
        category = reason_category(reason)
        self.reasons[category] = self.reasons.get(category, 0) + 1
        if len(self.listed) < SKIPPED_LISTED:
            self.listed.append((path, reason))

    def extend(self, pairs: Iterable[tuple[str, str]]) -> None:
        for path, reason in pairs:
            self.add(path, reason)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.listed)

    def __bool__(self) -> bool:
        return self.count > 0

    def stats_fields(self) -> dict[str, Any]:
        """``skipped``, ``skipped_count`` and ``skipped_reasons`` of a :class:`~prep.stats.file.Stats`."""
        files = self.to_json()
        return {"skipped": files["files"], "skipped_count": files["count"], "skipped_reasons": files["reasons"]}

    def to_json(self) -> dict[str, Any]:
        """``{"count", "reasons", "files"}``: the total, the total per reason, the listed files."""
        return {
            "count": self.count,
            "reasons": dict(sorted(self.reasons.items())),
            "files": [{"path": p, "reason": r} for p, r in self.listed],
        }

    @classmethod
    def from_json(cls, value: Any, where: str = "skipped") -> SkippedFiles:
        """Validate what :meth:`to_json` wrote; errors name the field (``skipped.count``, ...).

        A file written before the per-reason totals existed (no ``reasons``) lists every file.
        """
        if not isinstance(value, dict):
            raise StatsFileError(f"field '{where}': expected an object; got {short_repr(value)}")
        refuse_unknown_keys(value, ("count", "reasons", "files"), where)
        count = read_count(value, "count", where)
        files = read_field(value, "files", list, where)
        if not all(isinstance(x, dict) and set(x) == {"path", "reason"} for x in files) or not all(
            isinstance(x["path"], str) and isinstance(x["reason"], str) for x in files
        ):
            raise StatsFileError(f"field '{where}.files': expected a list of {{path, reason}} objects")
        listed = cls()
        listed.extend((x["path"], x["reason"]) for x in files)
        if "reasons" not in value:  # written by prep 0.2: every skipped file is listed
            if count != len(files):
                raise StatsFileError(f"missing field '{where}.reasons'")
            return listed
        _check_listing(count, len(files), where)
        reasons = read_field(value, "reasons", dict, where)
        for category, n in reasons.items():
            counted = is_int(n) and 1 <= n <= INT64_MAX
            if not isinstance(category, str) or not counted:
                label = field_name(f"{where}.reasons", category)
                raise StatsFileError(f"field '{label}': expected a positive integer count; got {short_repr(n)}")
        if sum(reasons.values()) != count:
            raise StatsFileError(
                f"field '{where}.reasons': the totals add up to {sum(reasons.values())}; '{where}.count' is {count}"
            )
        for category, n in listed.reasons.items():
            if reasons.get(category, 0) < n:
                raise StatsFileError(
                    f"field '{where}.reasons': {n} listed file(s) skipped for {short_repr(category)}; "
                    f"the total for it is {reasons.get(category, 0)}"
                )
        return cls(listed.listed, count, dict(reasons))


def _check_listing(count: int, listed: int, where: str) -> None:
    """A skipped list names the first :data:`SKIPPED_LISTED` files: all of them when there are no more."""
    if listed > SKIPPED_LISTED:
        raise StatsFileError(f"field '{where}.files': lists {listed} files; at most {SKIPPED_LISTED} are listed")
    if listed != min(count, SKIPPED_LISTED):
        raise StatsFileError(
            f"field '{where}.count': {count} skipped, but {listed} listed "
            f"(prep lists every skipped file up to {SKIPPED_LISTED}, else the first {SKIPPED_LISTED})"
        )


def tally_skipped(skipped: Any, count: int | None, reasons: Mapping[str, int] | None) -> SkippedFiles:
    """What :class:`~prep.stats.file.Stats` keeps of ``skipped``: a :class:`SkippedFiles` as it is; ``{path, reason}``
    entries counted one by one, or, with ``count`` and ``reasons`` given, the first listed only."""
    if (count is None) != (reasons is None):
        raise ValueError("give skipped_count and skipped_reasons together, or neither")
    if isinstance(skipped, SkippedFiles):
        if count is not None:
            raise ValueError("a SkippedFiles carries its own count and reasons")
        return SkippedFiles(list(skipped.listed), skipped.count, dict(skipped.reasons))
    pairs = ((entry["path"], entry["reason"]) for entry in skipped)
    if count is None:
        tally = SkippedFiles()
        tally.extend(pairs)
        return tally
    return SkippedFiles(list(itertools.islice(pairs, SKIPPED_LISTED)), count, dict(reasons or {}))
