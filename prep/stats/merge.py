"""``prep merge``: statistics of shards combined into those of the whole dataset.

Each part is a stats file written by ``prep stats SOURCE --shard I/N`` (or a :class:`Stats`).
The accumulator states merge exactly (integer sums for 8-bit data, Chan's formula otherwise;
see :mod:`prep.stats.moments`), so the result equals one pass over the whole dataset: bit for bit
for 8-bit data, to about 1e-12 relative otherwise, in any order of the parts. Parts must come
from the same source (kind, path, split), the same data (fingerprint), mode, transform and
pixels (decoder; ``pil`` and ``auto`` agree), and cover each of the N shards exactly once;
``partial=True`` accepts missing shards and says which.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

from prep.errors import MismatchError, OptionError, StatsFileError
from prep.sources.shard import parse_shard
from prep.stats.file import Stats, load_stats, same_pixels
from prep.stats.skipped import SkippedFiles, reason_category

log = logging.getLogger("prep")


def merge_stats(
    parts: Sequence[Stats | str | os.PathLike], *, partial: bool = False, out: str | os.PathLike | None = None
) -> Stats:
    """The statistics of the whole dataset from its shards' statistics (paths or Stats); with
    ``out``, also saved there (refused before any work when ``out`` is one of the parts)."""
    if not parts:
        raise OptionError("nothing to merge")
    if out is not None:
        from prep.errors import OutputError
        from prep.files import output_target

        target = output_target(out, "stats file")
        for part in parts:
            if isinstance(part, Stats):
                continue
            if os.path.exists(part) and target.exists() and os.path.samefile(part, target):
                raise OutputError(f"{os.fspath(out)}: is also one of the parts; write the merged file elsewhere")
        merged = merge_stats(parts, partial=partial)
        merged.save(out)
        return merged
    loaded = [(p if isinstance(p, Stats) else load_stats(p), _name(p)) for p in parts]
    shards = [_shard_of(stats, name) for stats, name in loaded]
    first, first_name = loaded[0]
    count = shards[0][1]
    for (stats, name), (index, n) in zip(loaded[1:], shards[1:]):
        if n != count:
            raise MismatchError(f"{name}: shard {index}/{n} is of {n} shards, {first_name} of {count}")
        _check_same(first, first_name, stats, name)
    seen: dict[int, str] = {}
    for (_, name), (index, _) in zip(loaded, shards):
        if index in seen:
            raise MismatchError(f"{name}: shard {index}/{count} is also in {seen[index]}")
        seen[index] = name
    missing = [i for i in range(count) if i not in seen]
    if missing and not partial:
        which = ", ".join(map(str, missing))
        verb = f"shard {which} of {count} is" if len(missing) == 1 else f"shards {which} of {count} are"
        raise MismatchError(f"{verb} missing; pass --partial to merge the rest")
    if missing:
        log.warning("merged %d of %d shards; missing %s", len(seen), count, ", ".join(map(str, missing)))
    order = sorted(range(len(loaded)), key=lambda k: shards[k][0])
    state = loaded[order[0]][0].state.copy()
    skipped = SkippedFiles()
    for k in order:
        stats = loaded[k][0]
        if k != order[0]:
            state = state.merge(stats.state)
        _add_skipped(skipped, stats)
    classes, class_states = _merged_classes([loaded[k] for k in order])
    _warn_dropped(loaded)
    source = {key: value for key, value in first.source.items() if key != "shard"}
    if missing:
        source["shard"] = f"{','.join(str(i) for i in sorted(seen))}/{count}"
    return Stats(
        source=source,
        fingerprint=first.fingerprint,
        mode=first.mode,
        state=state,
        **skipped.stats_fields(),
        transform=first.transform,
        decoder=first.decoder if len({s.decoder for s, _ in loaded}) == 1 else "pil",  # else: pil and auto
        percentiles_q=tuple(sorted({q for stats, _ in loaded for q in stats.percentiles_q})),
        classes=classes,
        class_states=class_states,
        volume=_merged_volume([loaded[k] for k in order]),
        band_names=first.band_names,
        bands=first.bands,
    )


def _merged_volume(parts: list[tuple[Stats, str]]) -> dict | None:
    """The ``volume`` field of the whole: the parts' voxel rule (the same in each, else refused)
    and their header scalings, counted together."""
    first, first_name = parts[0]
    if first.volume is None:
        return None
    rule = {k: v for k, v in first.volume.items() if k != "scaling"}
    counts: dict[tuple[float, float], int] = {}
    for stats, name in parts:
        volume = stats.volume or {}
        if {k: v for k, v in volume.items() if k != "scaling"} != rule:
            raise MismatchError(f"{name}: measured other voxels than {first_name} ({volume.get('voxels')})")
        for entry in volume.get("scaling", []):
            key = (entry["slope"], entry["inter"])
            counts[key] = counts.get(key, 0) + entry["files"]
    scaling = [{"slope": k[0], "inter": k[1], "files": n} for k, n in sorted(counts.items())]
    return {**rule, "scaling": scaling}


def _merged_classes(parts: list[tuple[Stats, str]]) -> tuple[tuple[str, ...] | None, dict | None]:
    """The classes and the class states of the whole, each class's states merged by name in the
    parts' order; none when a part was measured without ``per_class`` (said), refused when the
    parts list other classes."""
    with_classes = [(stats, name) for stats, name in parts if stats.classes is not None]
    if len(with_classes) < len(parts):
        if with_classes:
            lacking = ", ".join(name for stats, name in parts if stats.classes is None)
            log.warning("merged without per-class statistics: %s made without --per-class", lacking)
        return None, None
    first, first_name = with_classes[0]
    states: dict = {}
    if first.per_label:  # label values: each part lists those its volumes hold
        for stats, _ in with_classes:
            for value, part in (stats.class_states or {}).items():
                states[value] = part.copy() if value not in states else states[value].merge(part)
        return tuple(sorted(states, key=int)), states
    for stats, name in with_classes:
        if stats.classes != first.classes:
            raise MismatchError(f"{name}: its classes differ from {first_name}'s (other class folders)")
        for klass, part in (stats.class_states or {}).items():
            states[klass] = part.copy() if klass not in states else states[klass].merge(part)
    return tuple(first.classes or ()), states


def _warn_dropped(loaded: list[tuple[Stats, str]]) -> None:
    """Say what a merge cannot carry over: a covariance some parts lack, the parts' outliers."""
    lacking = [name for stats, name in loaded if stats.state.cross is None]
    if lacking and len(lacking) < len(loaded):
        log.warning("merged without covariance: %s made without --covariance", ", ".join(lacking))
    if any(stats.outliers for stats, _ in loaded):
        log.warning("the parts' per-image outliers are not merged (they name images of each part alone)")


def _name(part: Any) -> str:
    return repr(part) if isinstance(part, Stats) else os.fspath(part)


def _shard_of(stats: Stats, name: str) -> tuple[int, int]:
    shard = stats.source.get("shard")
    if shard is None:
        raise MismatchError(f"{name}: not the statistics of a shard (made without --shard I/N)")
    try:
        parsed = parse_shard(shard)
    except OptionError:
        parsed = None
    if parsed is None:
        raise StatsFileError(f"{name}: field 'source.shard' is not I/N: {shard!r}")
    return parsed


def _check_same(a: Stats, a_name: str, b: Stats, b_name: str) -> None:
    """Refuse parts of different datasets or measurements, naming the first difference."""
    keys = ("kind", "split") if a.fingerprint else ("kind", "path", "split")  # the same data, from any cwd
    for key in keys:
        if a.source.get(key) != b.source.get(key):
            raise MismatchError(
                f"{b_name}: source {key} {b.source.get(key)!r} differs from {a_name}'s {a.source.get(key)!r}"
            )
    if dict(a.fingerprint or {}) != dict(b.fingerprint or {}):
        raise MismatchError(f"{b_name}: made from other data than {a_name} (fingerprints differ)")
    if a.mode != b.mode:
        raise MismatchError(f"{b_name}: mode {b.mode} differs from {a_name}'s {a.mode}")
    if a.transform != b.transform:
        raise MismatchError(f"{b_name}: measured after another transform than {a_name}")
    if not same_pixels(a.decoder, b.decoder):
        raise MismatchError(f"{b_name}: decoded by {b.decoder} where {a_name} was decoded by {a.decoder}")


def _add_skipped(total: SkippedFiles, stats: Stats) -> None:
    """Add a part's skipped files: its listed ones, and the counts of those it only counted."""
    part = stats.skipped_files()
    total.extend(part.listed)
    unlisted = dict(part.reasons)
    for _, reason in part.listed:
        unlisted[reason_category(reason)] -= 1
    for category, n in unlisted.items():
        total.count += n
        total.reasons[category] = total.reasons.get(category, 0) + n
