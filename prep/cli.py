"""The ``prep`` command line: parse options, call the Python API, report in one line on error.

Only click and the light modules are imported at start-up; a command imports what it needs
(torch among it) when it runs, so ``prep --help`` answers at once.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from prep._version import __version__
from prep.errors import PrepError, os_reason
from prep.insight.exports import TARGETS
from prep.options import (
    DECODER_CHOICES,
    DEVICE_CHOICES,
    PASS_OPTIONS,
    SOURCE_OPTIONS,
    describe_default,
    output_for,
    resolve_options,
)
from prep.pixels import MODES
from prep.signals import INTERRUPTED, deferred_sigint, restore_sigint


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


def _options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Apply click option decorators in the order they are listed (as they read in ``--help``)."""

    def apply(command: Any) -> Any:
        for decorator in reversed(decorators):
            command = decorator(command)
        return command

    return apply


# what the source is: shared by `prep stats` and `prep check`
_SOURCE_OPTIONS = _options(
    click.option("--root", help=f"Where named datasets live, in torchvision's layout.  {describe_default('root')}"),
    click.option(
        "--split",
        help="train or test for named datasets; for a folder, its train/val/test subfolder; prep stats "
        f"also takes several, train,test or all (one file each: {{split}} in -o).  {describe_default('split')}",
    ),
    click.option(
        "--key",
        help="WebDataset shards: the image extension of a sample (jpg, png, ...); .npz: the array to read.",
    ),
    click.option(
        "--layout",
        type=click.Choice(("NHWC", "NCHW")),
        help="NumPy arrays: the axis order when the shape is ambiguous.",
    ),
    click.option("--archives", is_flag=True, default=None, help="SOURCE is a directory of tar shards (WebDataset)."),
    click.option("--image-key", help="Dict items (hf:NAME): the image field.  [default: image or img]"),
    click.option("--download", is_flag=True, default=None, help="Fetch a named dataset through torchvision first."),
    click.option(
        "--follow-symlinks/--no-follow-symlinks",
        default=None,
        help="Follow symlinks in folders, as ImageFolder does; --no-follow-symlinks lists them as skipped.  "
        "[default: follow]",
    ),
)
# how the pass runs and what it measures: shared by `prep stats` and `prep check`
_PASS_OPTIONS = _options(
    click.option(
        "--device",
        type=click.Choice(DEVICE_CHOICES),
        help="Where batches are reduced; with --decoder torchvision, --device cuda also decodes JPEGs "
        f"on the GPU (nvjpeg).  {describe_default('device')}",
    ),
    click.option(
        "--workers", type=click.IntRange(min=0), help=f"Decoding processes for folders.  {describe_default('workers')}"
    ),
    click.option(
        "--decoder",
        type=click.Choice(DECODER_CHOICES),
        help="How image files are decoded: auto (PIL's pixels: torchvision.io for each JPEG kind whose "
        "pixels it gives exactly as PIL's, checked on the kind's first file, PIL otherwise); pil (PIL "
        "for every file, as ImageFolder: the same numbers); torchvision (torchvision.io's pixels for "
        "JPEGs, not with --resize; with --device cuda, decoded on the GPU by nvjpeg, whose rounding "
        "may differ). Recorded in the stats file.  [default: auto]",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        help=f"Images per batch for idx/CIFAR.  {describe_default('batch_size')}",
    ),
    click.option(
        "--resize",
        help="Measure after v2.Resize(SIZE, antialias=True): N (shorter side) or HxW.  [default: no resize]",
    ),
    click.option(
        "--center-crop", help="Measure after v2.CenterCrop(SIZE) (after --resize): N or HxW.  [default: no crop]"
    ),
    click.option("--strict", is_flag=True, default=None, help="Stop at the first undecodable file (exit 1)."),
    click.option(
        "-q",
        "--quiet",
        is_flag=True,
        default=None,
        help="No progress bar or info lines; prep stats prints only the Normalize line.",
    ),
)


_MODE_OPTION = click.option(
    "--mode",
    type=click.Choice(MODES),
    help="Pixel conversion: RGB (3 channels) or L (grey).  [default: RGB for folders and CIFAR, L for MNIST-format]",
)


def _pass_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`prep.compute_stats` for resolved options ``opts``."""
    from prep.transforms.measurement import measurement_transform

    options = {name: opts[name] for name in PASS_OPTIONS}
    options["progress"] = not opts["quiet"]
    options["transform"] = measurement_transform(opts["resize"], opts["center_crop"])
    return options


def _source_argument(given: dict[str, Any]) -> None:
    """SOURCE given several times (WebDataset shards) as a list, once as a string, never as None."""
    sources = given.pop("source")
    given["source"] = None if not sources else sources[0] if len(sources) == 1 else list(sources)


@main.command("stats")
@click.argument("source", nargs=-1)
@click.option(
    "--config",
    "config_path",
    help="TOML preset (see configs/); command-line options override it.",
)
@click.option("-o", "--out", help="Write the stats JSON here; reused when the data has not changed.")
@_SOURCE_OPTIONS
@_PASS_OPTIONS
@_MODE_OPTION
@click.option(
    "--percentiles",
    help="Percentiles to list, e.g. 0.1,1,50,99,99.9 (exact, 8-bit data).  [default: 0.5,1,5,50,95,99,99.5]",
)
@click.option(
    "--shard",
    help="Measure only shard I of N (I/N, zero-based; image i is in shard i mod N); "
    "prep merge combines the parts.  [default: all images]",
)
@click.option(
    "--sample",
    help="Measure a uniformly random subset: N images, or a fraction such as 0.05; the stats get 95% "
    "confidence intervals.  [default: every image]",
)
@click.option(
    "--seed", type=click.IntRange(min=0), help="Seed of --sample (the same seed, the same images).  [default: 0]"
)
@click.option(
    "--per-image",
    help="Write a CSV row per image (size, per-channel mean/std/min/max, digest) here, and name "
    "suspicious images (constant, near black/white, brightness outliers, duplicates) in the summary.",
)
@click.option(
    "--outlier-k",
    type=click.FloatRange(min=0, min_open=True),
    help="Brightness outliers lie beyond this many stds of the images' brightness.  [default: 4]",
)
@click.option(
    "--covariance/--no-covariance",
    default=None,
    help="Measure the colour covariance (exact for 8/16-bit data) and its PCA: the constants of "
    "AlexNet-style lighting noise (stats.lighting()). A file made without it is recomputed only "
    "when --covariance is given.  [default: on]",
)
@click.option("--force", is_flag=True, default=None, help="Recompute even if --out is up to date.")
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
    from prep.sources.splits import parse_splits

    _source_argument(given)
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
    if len(splits) > 1:
        _check_splits(opts, splits)
    from prep.engine.distributed import finish, init_from_env, launched_by_torchrun

    distributed = launched_by_torchrun()
    started = init_from_env(opts["device"]) if distributed else False
    try:
        speak = True
        if distributed:
            import torch.distributed as dist

            speak = dist.get_rank() == 0  # rank 0 prints and writes for the job
        for run_opts in runs:
            _stats_of_split(
                {**run_opts, "quiet": run_opts["quiet"] or not speak},
                several=len(splits) > 1,
                speak=speak,
                distributed=distributed,
            )
    finally:
        if started:
            finish()


def _check_splits(opts: dict[str, Any], splits: list[str | None]) -> None:
    """Every split exists and holds images, before the first one is measured (nothing is written
    when one of them cannot be)."""
    from prep.errors import SourceError
    from prep.options import source_options
    from prep.sources import resolve_source

    for split in splits:
        src = resolve_source(opts["source"], **source_options({**opts, "split": split}))
        if src.num_images() == 0:
            raise SourceError(f"{src.where()}: split {split}: {src.empty_message()}")


def _stats_of_split(opts: dict[str, Any], several: bool, speak: bool = True, distributed: bool = False) -> None:
    """One split of ``prep stats``: measure (or reuse ``out``), then print the summary (when this
    process ``speak``s for the job: always, but rank 0 alone under torchrun)."""
    from prep.engine.measure import compute_stats, load_or_compute
    from prep.insight.summary import format_summary

    out, quiet = opts["out"], opts["quiet"]
    options = {**_pass_kwargs(opts), "distributed": distributed}
    if out:
        result, reused = load_or_compute(out, opts["source"], force=opts["force"], **options)
    else:
        result, reused = compute_stats(opts["source"], **options), False
    if not speak:
        return
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


@main.command("merge")
@click.argument("parts", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="Write the merged stats JSON here.")
@click.option("--partial", is_flag=True, help="Merge even if some shards are missing (and say which).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the Normalize line.")
@_reports_errors
def merge_command(parts: tuple[str, ...], out: str, partial: bool, quiet: bool) -> None:
    """Combine the stats files of shards (prep stats --shard I/N) into those of the whole dataset.

    The result equals one pass over the whole dataset: bit for bit for 8-bit data, to about
    1e-12 relative otherwise, in any order of PARTS. Refused (exit 2): parts of other sources,
    splits, data, modes or transforms; a shard given twice; missing shards without --partial.

    \b
    Example:
      prep stats ./imagenet/train --shard 3/8 -o part-3.json     (on 8 machines, I = 0..7)
      prep merge part-*.json -o imagenet-train.json
    """
    from prep.files import output_target
    from prep.insight.summary import format_summary
    from prep.stats.merge import merge_stats

    target = output_target(out, "stats file")
    for part in parts:
        if os.path.exists(part) and os.path.exists(target) and os.path.samefile(part, target):
            raise PrepError(f"{out}: is also one of the parts; write the merged file elsewhere")
    _log_to_stderr(quiet=quiet)
    result = merge_stats(list(parts), partial=partial)
    result.save(out)
    _print(result.normalize_line() if quiet else format_summary(result))
    if not quiet:
        click.echo(f"wrote {out}", err=True)


@main.command("show")
@click.argument("file")
@click.option(
    "--against",
    help="Also compare the file's numbers with a published constant set (mnist, fashion-mnist, cifar10, "
    "cifar10-copied, cifar100, imagenet, inception) or another stats file, without reading data.",
)
@_reports_errors
def show_command(file: str, against: str | None) -> None:
    """Pretty-print a stats file (and validate it)."""
    from prep.insight.checks import judge, resolve_reference
    from prep.insight.summary import format_summary
    from prep.stats.file import load_stats

    stats = load_stats(file)
    verdict = None
    if against:  # checked before anything is printed
        reference = resolve_reference(against)
        name = getattr(reference, "name", against)
        verdict = judge(stats, reference, name, fingerprint="not read (prep show)").format()
    _print(format_summary(stats, details=True))
    if verdict:
        _print("\n" + verdict)


_FORMAT = click.option(
    "--format",
    "output_format",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help="json: one JSON object on stdout, for CI pipelines.",
)


@main.command("check")
@click.argument("reference")
@click.argument("source", nargs=-1, required=True)
@_SOURCE_OPTIONS
@_PASS_OPTIONS
@click.option(
    "--tol",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Largest |normalized mean| and |normalized std - 1| that pass.",
)
@_FORMAT
@_reports_errors
def check_command(reference: str, tol: float, output_format: str, **given: Any) -> None:
    """Do REFERENCE's constants fit SOURCE? Exit 0 if they do, 1 if not, 2 for bad input.

    REFERENCE is a stats file or a published constant set: mnist, fashion-mnist, cifar10,
    cifar10-copied (the widely pasted per-image std), cifar100, imagenet, inception (0.5/0.5).
    SOURCE and its options are those of prep stats; it is read in REFERENCE's mode (grey
    constants read a colour folder as grey). Prints, per channel, the mean and std of the data
    after REFERENCE's Normalize, whether the data is the one the file was made from, and a
    verdict.

    \b
    Examples:
      prep check cifar10-train.json cifar10 --root ./data --split test
      prep check imagenet ./my_photos --resize 256 --center-crop 224
    """
    from prep.insight.checks import check_stats

    _source_argument(given)
    opts = resolve_options(given)
    _log_to_stderr(quiet=opts["quiet"])
    if isinstance(opts["source"], str) and opts["split"] and "," in opts["split"]:
        raise click.UsageError("prep check measures one split at a time")
    result = check_stats(reference, opts["source"], tol=tol, **_pass_kwargs(opts))
    _print(json.dumps(result.to_dict()) if output_format == "json" else result.format())
    sys.exit(0 if result.ok else 1)


@main.command("compare")
@click.argument("a")
@click.argument("b")
@click.option(
    "--max-shift",
    type=click.FloatRange(min=0),
    default=0.1,
    show_default=True,
    help="Largest |mean_B - mean_A| in units of A's std that passes.",
)
@click.option(
    "--max-std-ratio",
    type=click.FloatRange(min=1),
    default=1.1,
    show_default=True,
    help="std_B / std_A must lie in [1/R, R].",
)
@_FORMAT
@_reports_errors
def compare_command(a: str, b: str, max_shift: float, max_std_ratio: float, output_format: str) -> None:
    """Does dataset B drift from dataset A? Compares two stats files; exit 0 same, 1 drift.

    Per channel: the mean shift in units of A's std, the ratio of the stds, both ranges, and
    where both files hold 8-bit histograms, the exact Wasserstein-1 distance (unit scale) and the
    largest gap between the two CDFs (Kolmogorov-Smirnov).

    \b
    Example:
      prep compare cifar10-train.json cifar10-test.json --format json
    """
    from prep.insight.checks import compare_stats

    result = compare_stats(a, b, max_shift=max_shift, max_std_ratio=max_std_ratio)
    _print(json.dumps(result.to_dict()) if output_format == "json" else result.format())
    sys.exit(0 if result.ok else 1)


# keyword arguments of prep.compute_whitening taken from the resolved options
_WHITEN_PASS_OPTIONS = (
    *SOURCE_OPTIONS,
    *("mode", "batch_size", "device", "workers", "strict", "decoder", "sample", "seed"),
    *("checkpoint", "checkpoint_every", "resume"),
)


@main.command("whiten")
@click.argument("source", nargs=-1, required=True)
@click.option("-o", "--out", help="Write the whitening file here (.pt, written atomically).")
@_SOURCE_OPTIONS
@_PASS_OPTIONS
@_MODE_OPTION
@click.option(
    "--eps",
    type=click.FloatRange(min=0),
    default=1e-5,
    show_default=True,
    help="Added to every eigenvalue of the covariance (unit scale squared).",
)
@click.option("--pca-whiten", is_flag=True, help="PCA whitening diag(1/sqrt(lambda+eps)) U^T instead of ZCA.")
@click.option(
    "--sample",
    help="Measure a uniformly random subset: N images, or a fraction such as 0.05.  [default: every image]",
)
@click.option(
    "--seed", type=click.IntRange(min=0), help="Seed of --sample (the same seed, the same images).  [default: 0]"
)
@click.option("--checkpoint", help="Save progress here every N images (a torch file: the sums are D x D).")
@click.option(
    "--checkpoint-every",
    type=click.IntRange(min=1),
    help=f"N for --checkpoint.  {describe_default('checkpoint_every')}",
)
@click.option("--resume", is_flag=True, default=None, help="Continue from --checkpoint after an interruption.")
@_reports_errors
def whiten_command(eps: float, pca_whiten: bool, **given: Any) -> None:
    """Compute the ZCA whitening matrix of SOURCE in one pass.

    SOURCE is what prep stats reads; its images must all have one size (use --resize HxW
    otherwise) with D = C*H*W <= 16384 (MNIST 784, CIFAR 3072). The mean image and the D x D
    covariance come from exact integer sums for 8- and 16-bit data; W = U diag(1/sqrt(lambda +
    eps)) U^T. Load the file with prep.load_whitening(FILE).transform().

    \b
    Examples:
      prep whiten mnist --root ./data -o mnist-zca.pt
      prep whiten cifar10 --root ./data --eps 1e-3 -o cifar10-zca.pt
      prep whiten ./photos --resize 32x32 --pca-whiten -o photos-pca.pt
      prep whiten ./huge --resize 32x32 --checkpoint ck.pt -o zca.pt   (then add --resume)

    Exit codes: 0 done, 1 undecodable image under --strict, 2 bad input, 130 interrupted.
    """
    with deferred_sigint():  # a Ctrl-C inside torch's import would abort in C++; act on it after
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    from prep.engine.whiten import compute_whitening
    from prep.files import output_target
    from prep.transforms.measurement import measurement_transform

    _source_argument(given)
    opts = resolve_options(given)
    _log_to_stderr(quiet=opts["quiet"])
    if opts["split"] and ("," in opts["split"] or opts["split"] == "all"):
        raise click.UsageError("prep whiten measures one split at a time")
    out = opts["out"]
    if out:
        output_target(out, "whitening file")  # refused before the pass, not after it
    result = compute_whitening(
        opts["source"],
        eps=eps,
        pca=pca_whiten,
        transform=measurement_transform(opts["resize"], opts["center_crop"]),
        progress=not opts["quiet"],
        **{name: opts[name] for name in _WHITEN_PASS_OPTIONS},
    )
    if out:
        result.save(out)
    if not opts["quiet"]:
        _print(result.summary())
    if out:
        click.echo(f"wrote {out}", err=True)
        _print(f'transform = prep.load_whitening("{out}").transform()')


@main.command("export")
@click.argument("file")
@click.option(
    "--to",
    "target",
    required=True,
    type=click.Choice(TARGETS),
    help="The library whose units and field names to print.",
)
@click.option(
    "--units",
    type=click.Choice(("raw", "unit")),
    help="monai and keras only: the units of their input, raw (0..255 for 8-bit data; the default) or unit "
    "(after a Rescaling(1/255) / ScaleIntensity step). Other libraries have fixed units.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(("text", "json")),
    default="text",
    show_default=True,
    help='json: {"target", "mean", "std", "units", ...} on stdout, for scripts.',
)
@click.option("-o", "--out", help="Write it to this file (atomically) instead of stdout; JSON for --to hf.")
@click.option(
    "--into",
    type=click.Path(dir_okay=False),
    help="--to hf: update do_rescale, rescale_factor, do_normalize, image_mean and image_std of this existing "
    "preprocessor_config.json, keeping every other key.",
)
@_reports_errors
def export_command(
    file: str, target: str, units: str | None, output_format: str, out: str | None, into: str | None
) -> None:
    """Print a stats file's mean and std in another library's units and field names.

    Each line says its units (unit scale, or 0..255 for 8-bit data): albumentations takes unit
    scale with max_pixel_value=255, DALI and FFCV take 0..255, keras takes variance = std².

    \b
    Examples:
      prep export cifar10.json --to albumentations
      prep export cifar10.json --to hf --into my-model/preprocessor_config.json
      prep export cifar10.json --to dali --format json
    """
    from prep.files import output_target
    from prep.insight.exports import export, render, save_export, update_preprocessor_config
    from prep.stats.file import load_stats

    if into and target != "hf":
        raise PrepError(f"--into is for --to hf (a preprocessor_config.json); got --to {target}")
    if into and out:
        raise PrepError("--into and -o/--out: give one (--into updates a file in place)")
    if out:
        output_target(out, "export")
    stats = load_stats(file)
    if into:
        update_preprocessor_config(into, stats)
        click.echo(f"updated {into}", err=True)
        return
    exported = export(stats, target, units=units)
    if out:
        save_export(exported, out, output_format)
        click.echo(f"wrote {out}", err=True)
    else:
        _print(render(exported, output_format))


@main.command("plot")
@click.argument("files", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="The image to write (.png, .pdf or .svg), atomically.")
@click.option("--label", "labels", multiple=True, help="Legend name of each FILE, in order (default: its source).")
@_reports_errors
def plot_command(files: tuple[str, ...], out: str, labels: tuple[str, ...]) -> None:
    """Per-channel histograms of one or more stats files, overlaid (e.g. train and test).

    Marks each file's mean, mean ± 1 std, stored percentiles and min..max range. 16-bit and
    float data have no stored histogram: their panels show these marks only. Needs matplotlib:
    pip install 'prep[plot]'.

    \b
    Example:
      prep plot cifar10-train.json cifar10-test.json -o shift.png --label train --label test
    """
    from prep.insight.plots import plot_stats
    from prep.stats.file import load_stats

    if labels and len(labels) != len(files):
        raise PrepError(f"--label: give one per FILE ({len(files)}); got {len(labels)}")
    plot_stats([load_stats(f) for f in files], out, labels=list(labels) or None)
    click.echo(f"wrote {out}", err=True)


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
