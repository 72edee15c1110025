"""The ``prep`` command line: parse options, call the Python API, report in one line on error."""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from typing import Any, Callable

import click

from ._version import __version__
from .compute import compute_stats
from .config import resolve_options
from .devices import DEVICE_CHOICES
from .errors import PrepError, StatsFileError
from .pixels import MODES
from .sources import SPLITS, Source, resolve_source
from .stats import Stats, load_stats

INTERRUPTED = 130


def _fail(message: str, code: int) -> None:
    click.echo(f"prep: error: {message}", err=True)
    sys.exit(code)


def _reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PrepError into one line and its exit code, Ctrl-C into exit 130; warnings into lines."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def show(message, category, filename, lineno, file=None, line=None):
            click.echo(f"prep: warning: {message}", err=True)

        previous = warnings.showwarning
        warnings.showwarning = show
        try:
            return command(*args, **kwargs)
        except PrepError as exc:
            _fail(str(exc), exc.exit_code)
        except KeyboardInterrupt:
            click.echo("prep: interrupted; no output file was written or changed", err=True)
            sys.exit(INTERRUPTED)
        finally:
            warnings.showwarning = previous

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prep")
def main() -> None:
    """Per-channel dataset statistics and the torchvision transforms that use them."""


@main.command("stats")
@click.argument("source", required=False)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="TOML preset (see configs/); command-line options override it.")
@click.option("--root", help="Where named datasets live, in torchvision's layout.  [default: ./data]")
@click.option("--split", type=click.Choice(SPLITS), help="Split of a named dataset.  [default: train]")
@click.option("-o", "--out", help="Write the stats JSON here; reused when the data has not changed.")
@click.option("--device", type=click.Choice(DEVICE_CHOICES), help="Where batches are reduced.  [default: auto]")
@click.option("--workers", type=click.IntRange(min=0), help="Decoding processes for folders.  [default: CPU count]")
@click.option("--batch-size", type=click.IntRange(min=1),
              help="Images per batch for idx/CIFAR.  [default: ~1M pixels on CPU]")
@click.option("--mode", type=click.Choice(MODES), help="Pixel conversion: RGB (3 channels) or L (grey).  "
              "[default: RGB for folders and CIFAR, L for MNIST-format]")
@click.option("--force", is_flag=True, default=None, help="Recompute even if --out is up to date.")
@click.option("--download", is_flag=True, default=None, help="Fetch a named dataset through torchvision first.")
@click.option("--strict", is_flag=True, default=None, help="Stop at the first undecodable file (exit 1).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), help="Save progress here every N images.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), help="N for --checkpoint.  [default: 10000]")
@click.option("--resume", is_flag=True, default=None, help="Continue from --checkpoint after an interruption.")
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bar; print only the Normalize line.")
@_reports_errors
def stats_command(config_path: str | None, **given: Any) -> None:
    """Measure per-channel count, mean, std, min and max of SOURCE in one pass.

    SOURCE is an image directory, an *-idx3-ubyte[.gz] file, or a dataset name: mnist,
    fashion-mnist, kmnist, cifar10, cifar100 (under --root), or sample (shipped with prep).
    Values are in unit scale (what ToTensor / ToDtype(scale=True) gives); std is the pooled
    population std that transforms.Normalize expects.

    \b
    Examples:
      prep stats ./images -o images.stats.json
      prep stats mnist --root ./data --split test -o mnist-test.json
      prep stats --config configs/cifar10.toml
      prep stats ./huge --checkpoint ck.json -o huge.json   (then add --resume after a crash)

    Exit codes: 0 done, 1 undecodable image under --strict, 2 bad input, 130 interrupted.
    """
    opts = resolve_options(given, config_path)
    _log_to_stderr(quiet=opts["quiet"])
    if opts["source"] is None:
        raise click.UsageError("missing SOURCE (give it as an argument or as 'source' in --config)")
    out = opts["out"]
    source = resolve_source(opts["source"], root=opts["root"], split=opts["split"],
                            download_missing=opts["download"])
    if out and not opts["force"]:
        fresh = _reusable(out, source, opts["mode"] or source.native_mode)
        if fresh is not None:
            if not opts["quiet"]:
                click.echo(f"{out} is up to date")
                click.echo(format_summary(fresh))
            else:
                click.echo(fresh.normalize_line())
            return
    result = compute_stats(
        source, device=opts["device"], workers=opts["workers"], batch_size=opts["batch_size"], mode=opts["mode"],
        strict=opts["strict"], progress=not opts["quiet"], checkpoint=opts["checkpoint"],
        checkpoint_every=opts["checkpoint_every"], resume=opts["resume"],
    )
    if out:
        result.save(out)
    if opts["quiet"]:
        click.echo(result.normalize_line())
        return
    click.echo(format_summary(result))
    if out:
        click.echo(f"wrote {out}", err=True)


class _StderrHandler(logging.Handler):
    """Log records from the library as ``prep: message`` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"prep: {record.getMessage()}", err=True)


def _log_to_stderr(quiet: bool) -> None:
    logger = logging.getLogger("prep")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def _reusable(out: str, source: Source, mode: str) -> Stats | None:
    """The stats in ``out`` when they still describe ``source``; else None, saying why on stderr."""
    if not os.path.exists(out):
        return None
    try:
        existing = load_stats(out)
    except StatsFileError as exc:
        click.echo(f"prep: {exc}; recomputing", err=True)
        return None
    reason = existing.stale_reason(source.describe(), source.fingerprint(), mode)
    if reason:
        click.echo(f"prep: {out} is stale: {reason}; recomputing", err=True)
        return None
    return existing


@main.command("show")
@click.argument("file", type=click.Path(dir_okay=False))
@_reports_errors
def show_command(file: str) -> None:
    """Pretty-print a stats file (and validate it)."""
    click.echo(format_summary(load_stats(file)))


def format_summary(stats: Stats) -> str:
    """A human-readable table of a Stats object, ending with the Normalize line to paste."""
    s = stats.summary
    src = stats.source
    names = ["R", "G", "B"] if stats.channels == 3 else ["L"]
    row = lambda label, values, fmt="{:>10.6f}": f"{label:<22}" + "".join(fmt.format(v) for v in values)
    fp = stats.fingerprint
    lines = [
        f"source                {src.get('kind')} {src.get('path') or ''}".rstrip()
        + (f"  split={src['split']}" if src.get("split") else "") + f"  mode={stats.mode}",
        f"images                {s.images}" + (f"  (skipped {len(stats.skipped)} files)" if stats.skipped else ""),
        f"fingerprint           {fp['files']} files, {fp['bytes']} bytes, sha256 {fp['sha256'][:16]}" if fp
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
    lines.append(stats.normalize_line())
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()
