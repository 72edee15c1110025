"""What prep shows a person: the summary table of a stats file and the progress bar of a pass."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .stats import Stats


SKIPPED_SHOWN = 10  # skipped files listed by `prep show`; the count says how many more


def format_summary(stats: Stats, details: bool = False) -> str:
    """A human-readable table of a Stats object, ending with the Normalize line to paste.

    ``details`` adds when and by which prep the file was made, and the skipped files.
    """
    s = stats.summary
    src = stats.source
    names = ["R", "G", "B"] if stats.channels == 3 else ["L"]

    def row(label: str, values, fmt: str = "{:>10.6f}") -> str:
        return f"{label:<22}" + "".join(fmt.format(v) for v in values)

    fp = stats.fingerprint
    lines = [
        f"source                {src.get('kind')} {src.get('path') or ''}".rstrip()
        + (f"  split={src['split']}" if src.get("split") else "")
        + f"  mode={stats.mode}",
        f"images                {s.images}" + (f"  (skipped {len(stats.skipped)} files)" if stats.skipped else ""),
        f"fingerprint           {fp['files']} files, {fp['bytes']} bytes, sha256 {fp['sha256'][:16]}"
        if fp
        else "fingerprint           none (Python dataset)",
        f"raw max               {s.pixel_max:g}  (multiply unit-scale values by it for raw units)",
        row("channel", names, "{:>10}"),
        row("pixels", s.count, "{:>10d}"),
        row("mean", s.mean),
        row("std", s.std),
        row("min", s.min),
        row("max", s.max),
        row("per-image std mean", s.per_image_std_mean) + "   (mean of per-image stds; not for Normalize)",
    ]
    if any(s.nonfinite):
        lines.append(row("NaN/inf left out", s.nonfinite, "{:>10d}"))
    if details:
        lines.insert(1, f"created               {stats.created} by prep {stats.prep_version}")
        for entry in list(stats.skipped)[:SKIPPED_SHOWN]:
            lines.append(f"skipped               {entry['path']}: {entry['reason']}")
        if len(stats.skipped) > SKIPPED_SHOWN:
            lines.append(f"skipped               ... and {len(stats.skipped) - SKIPPED_SHOWN} more (see the file)")
    lines.append(stats.normalize_line())
    return "\n".join(lines)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def progress_bar(progress: bool | Callable[..., Any], total: int | None, label: str):
    """A context-managed bar with ``update(n)``: tqdm on stderr for True, ``progress(...)`` for a
    factory, a bar that shows nothing for False."""
    if not progress:
        return _NullBar()
    factory = progress
    if progress is True:
        from tqdm.auto import tqdm as factory
    return factory(total=total, desc=f"prep stats {label}", unit="img", dynamic_ncols=True)
