"""The ``prep`` command line: parse options, call the Python API, report in one line on error.

Only click and the light modules are imported at start-up; a command imports what it needs
(torch among it) when it runs, so ``prep --help`` answers at once.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from ._version import __version__
from .config import DEVICE_CHOICES, PASS_OPTIONS, describe_default, output_for, resolve_options
from .errors import PrepError, os_reason
from .pixels import MODES
from .signals import INTERRUPTED, deferred_sigint, restore_sigint


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


def _print(text: str) -> None:
    """Write ``text`` to stdout; a stdout that cannot take it (a full disk) is a one-line error, a
    reader that went away (``prep show f | head -1``) ends prep quietly with exit 1."""
    try:
        click.echo(text)
        sys.stdout.flush()
    except BrokenPipeError:
        _detach_stdout()
        sys.exit(1)
    except OSError as exc:
        _detach_stdout()
        raise PrepError(f"cannot write to standard output ({os_reason(exc)})") from None


def _detach_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # no real stdout (tests)
        pass


class _OneLineErrors(click.Group):
    """Click's usage errors in prep's one-line form, ``prep: error: <what> (see '<command> --help')``, exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
            message = " ".join(exc.format_message().split())
            click.echo(f"prep: error: {message}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("prep: interrupted", err=True)
            sys.exit(INTERRUPTED)


@click.group(cls=_OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prep")
def main() -> None:
    """Per-channel dataset statistics and the torchvision transforms that use them."""


@main.command("stats")
@click.argument("source", nargs=-1)
@click.option(
    "--config",
    "config_path",
    help="TOML preset (see configs/); command-line options override it.",
)
@click.option("--root", help=f"Where named datasets live, in torchvision's layout.  {describe_default('root')}")
@click.option(
    "--split",
    help="train or test for named datasets; for a folder, its train/val/test subfolder; several as "
    f"train,test or all (one file each: write {{split}} in -o).  {describe_default('split')}",
)
@click.option("-o", "--out", help="Write the stats JSON here; reused when the data has not changed.")
@click.option(
    "--device", type=click.Choice(DEVICE_CHOICES), help=f"Where batches are reduced.  {describe_default('device')}"
)
@click.option(
    "--workers", type=click.IntRange(min=0), help=f"Decoding processes for folders.  {describe_default('workers')}"
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    help=f"Images per batch for idx/CIFAR.  {describe_default('batch_size')}",
)
@click.option(
    "--mode",
    type=click.Choice(MODES),
    help="Pixel conversion: RGB (3 channels) or L (grey).  [default: RGB for folders and CIFAR, L for MNIST-format]",
)
@click.option(
    "--resize",
    help="Measure after v2.Resize(SIZE, antialias=True): N (shorter side) or HxW.  [default: no resize]",
)
@click.option(
    "--center-crop",
    help="Measure after v2.CenterCrop(SIZE) (after --resize): N or HxW.  [default: no crop]",
)
@click.option(
    "--key",
    help="WebDataset shards: the image extension of a sample (jpg, png, ...); .npz: the array to read.",
)
@click.option(
    "--layout",
    type=click.Choice(("NHWC", "NCHW")),
    help="NumPy arrays: the axis order when the shape is ambiguous.",
)
@click.option("--archives", is_flag=True, default=None, help="SOURCE is a directory of tar shards (WebDataset).")
@click.option("--image-key", help="Dict items (hf:NAME): the image field.  [default: image or img]")
@click.option("--force", is_flag=True, default=None, help="Recompute even if --out is up to date.")
@click.option("--download", is_flag=True, default=None, help="Fetch a named dataset through torchvision first.")
@click.option("--strict", is_flag=True, default=None, help="Stop at the first undecodable file (exit 1).")
@click.option(
    "--follow-symlinks/--no-follow-symlinks",
    default=None,
    help="Follow symlinks in folders, as ImageFolder does; --no-follow-symlinks lists them as skipped.  "
    "[default: follow]",
)
@click.option(
    "--checksum",
    is_flag=True,
    default=None,
    help="Reuse -o only if the folder's file contents are unchanged (hashes every file; "
    "default: sizes and modification times).",
)
@click.option("--checkpoint", help="Save progress here every N images ({split} as in -o).")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    help=f"N for --checkpoint.  {describe_default('checkpoint_every')}",
)
@click.option("--resume", is_flag=True, default=None, help="Continue from --checkpoint after an interruption.")
@click.option("-q", "--quiet", is_flag=True, default=None, help="No progress bar; print only the Normalize line.")
@_reports_errors
def stats_command(config_path: str | None, **given: Any) -> None:
    """Measure per-channel count, mean, std, min and max of SOURCE in one pass.

    SOURCE is an image directory, a zip or tar archive, WebDataset tar shards (several
    SOURCEs, a brace pattern 'train-{000000..000127}.tar', or a directory with --archives), an
    .npy/.npz array, an *-idx3-ubyte[.gz] file, or a dataset name: mnist, fashion-mnist,
    kmnist, cifar10, cifar100 (under --root), hf:NAME (Hugging Face cache), or sample
    (shipped with prep).
    Values are in unit scale (what ToTensor / ToDtype(scale=True) gives); std is the pooled
    population std that transforms.Normalize expects.

    \b
    Examples:
      prep stats ./images -o images.stats.json
      prep stats mnist --root ./data --split test -o mnist-test.json
      prep stats ./photos --split all -o 'photos-{split}.json'   (train/, val/, test/ in one run)
      prep stats --config configs/cifar10.toml
      prep stats ./huge --checkpoint ck.json -o huge.json   (then add --resume after a crash)

    Exit codes: 0 done, 1 undecodable image under --strict, 2 bad input, 130 interrupted.
    """
    with deferred_sigint():  # a Ctrl-C inside torch's import would abort in C++; act on it after
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    from .sources.splits import parse_splits

    sources = given.pop("source")
    given["source"] = None if not sources else sources[0] if len(sources) == 1 else list(sources)
    opts = resolve_options(given, config_path)
    _log_to_stderr(quiet=opts["quiet"])
    if opts["source"] is None:
        raise click.UsageError("missing SOURCE (give it as an argument or as 'source' in --config)")
    splits = parse_splits(opts["split"], opts["source"])
    runs = [  # every split's files are checked before any work
        {
            **opts,
            "split": split,
            "out": output_for(opts["out"], split, len(splits)),
            "checkpoint": output_for(opts["checkpoint"], split, len(splits)),
        }
        for split in splits
    ]
    for run_opts in runs:
        _stats_of_split(run_opts, several=len(splits) > 1)


def _stats_of_split(opts: dict[str, Any], several: bool) -> None:
    """One split of ``prep stats``: measure (or reuse ``out``), then print the summary."""
    from .compute import compute_stats, load_or_compute
    from .preprocess import measurement_transform
    from .report import format_summary

    out, quiet = opts["out"], opts["quiet"]
    options = {name: opts[name] for name in PASS_OPTIONS}
    options["progress"] = not quiet
    options["transform"] = measurement_transform(opts["resize"], opts["center_crop"])
    if out:
        result, reused = load_or_compute(out, opts["source"], force=opts["force"], **options)
    else:
        result, reused = compute_stats(opts["source"], **options), False
    if quiet:
        _print(f"{opts['split']}: {result.normalize_line()}" if several else result.normalize_line())
        return
    if several:
        _print(f"== split {opts['split']} ==")
    if reused:
        _print(f"{out} is up to date")
    _print(format_summary(result))
    if out and not reused:
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


@main.command("show")
@click.argument("file")
@_reports_errors
def show_command(file: str) -> None:
    """Pretty-print a stats file (and validate it)."""
    from .report import format_summary
    from .stats import load_stats

    _print(format_summary(load_stats(file), details=True))


def run() -> None:
    """The command line (:func:`main`), with a Ctrl-C at any moment ending in exit 130."""
    restore_sigint()
    try:
        main()
    except KeyboardInterrupt:
        click.echo("prep: interrupted", err=True)
        sys.exit(INTERRUPTED)


if __name__ == "__main__":  # pragma: no cover
    run()
