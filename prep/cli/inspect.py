"""``prep show``, ``prep check``, ``prep compare``, ``prep export`` and ``prep plot``: the commands that
read stats files."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from prep.cli import echo_out, format_flag, log_to_stderr, main, pass_kwargs, reports_errors, source_argument
from prep.errors import PrepError
from prep.insight.exports import TARGETS
from prep.options import click_options, resolve_options


@main.command("show")
@click.argument("file")
@format_flag("json: the stats file (and, with --against, the verdict under 'against') as one JSON object.")
@click.option(
    "--against",
    help="Also compare the file's numbers with a published constant set (mnist, fashion-mnist, cifar10, "
    "cifar10-copied, cifar100, imagenet, inception) or another stats file, without reading data.",
)
@reports_errors
def show_command(file: str, output_format: str, against: str | None) -> None:
    """Pretty-print a stats file (and validate it)."""
    from prep.insight.checks import judge, resolve_reference
    from prep.insight.summary import format_summary
    from prep.stats.file import load_stats

    stats = load_stats(file)
    judged = None
    if against:  # checked before anything is printed
        reference = resolve_reference(against)
        name = getattr(reference, "name", against)
        judged = judge(stats, reference, name, fingerprint="not read (prep show)")
    if output_format == "json":
        data = stats.to_dict()
        echo_out(json.dumps(data if judged is None else {**data, "against": judged.to_dict()}, indent=2))
        return
    verdict = None if judged is None else judged.format()
    echo_out(format_summary(stats, details=True))
    if verdict:
        echo_out("\n" + verdict)


_FORMAT = format_flag("json: one JSON object on stdout, for CI pipelines.")


@main.command("check")
@click.argument("reference")
@click.argument("source", nargs=-1, required=True)
@click_options("check")
@_FORMAT
@reports_errors
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

    source_argument(given)
    opts = resolve_options(given)
    log_to_stderr(quiet=opts["quiet"])
    if isinstance(opts["source"], str) and opts["split"] and "," in opts["split"]:
        raise click.UsageError("prep check measures one split at a time")
    result = check_stats(reference, opts["source"], tol=tol, **pass_kwargs(opts))
    if output_format == "json":
        echo_out(json.dumps(result.to_dict()))
    else:
        echo_out(result.verdict() if opts["quiet"] else result.format())
    sys.exit(0 if result.ok else 1)


@main.command("compare")
@click.argument("a")
@click.argument("b")
@click_options("compare")
@_FORMAT
@reports_errors
def compare_command(a: str, b: str, max_shift: float, max_std_ratio: float, output_format: str) -> None:
    """Does dataset B drift from dataset A? Compares two stats files; exit 0 same, 1 drift.

    Per channel: the mean shift in units of A's std, the ratio of the stds, both ranges, and
    where both files hold 8-bit histograms, the exact Wasserstein-1 distance (unit scale) and the
    largest gap between the two CDFs (Kolmogorov-Smirnov). A or B may be FILE:CLASS, one class
    of a file measured with prep stats --per-class (an unknown class: exit 2).

    \b
    Examples:
      prep compare cifar10-train.json cifar10-test.json --format json
      prep compare pets.json:cats pets.json:dogs
    """
    from prep.insight.checks import compare_stats

    result = compare_stats(a, b, max_shift=max_shift, max_std_ratio=max_std_ratio)
    echo_out(json.dumps(result.to_dict()) if output_format == "json" else result.format())
    sys.exit(0 if result.ok else 1)


# keyword arguments of prep.compute_whitening taken from the resolved options
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
@format_flag('json: {"target", "mean", "std", "units", ...} on stdout, for scripts.')
@click.option(
    "-o", "--out", help="Write it to this file (atomically) instead of stdout ('-': stdout); JSON for --to hf."
)
@click.option(
    "--into",
    type=click.Path(dir_okay=False),
    help="--to hf: update do_rescale, rescale_factor, do_normalize, image_mean and image_std of this existing "
    "preprocessor_config.json, keeping every other key.",
)
@reports_errors
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
    from prep.insight.exports import check_units, export, render, save_export, update_preprocessor_config
    from prep.stats.file import load_stats

    if out == "-":  # standard output, where it goes without -o
        out = None
    check_units(target, units)  # refused where it means nothing, --into included
    if into and target != "hf":
        raise PrepError(f"--into is for --to hf (a preprocessor_config.json); got --to {target}")
    if into and out:
        raise PrepError("--into and -o/--out: give one (--into updates a file in place)")
    if into and output_format != "text":
        raise PrepError("--into updates the file and prints nothing: drop --format")
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
        echo_out(render(exported, output_format))


@main.command("plot")
@click.argument("files", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="The image to write (.png, .pdf or .svg), atomically.")
@click.option("--label", "labels", multiple=True, help="Legend name of each FILE, in order (default: its source).")
@click.option(
    "--log/--linear",
    default=None,
    help="Logarithmic or linear count axis.  [default: log when one level holds most of a channel's pixels]",
)
@reports_errors
def plot_command(files: tuple[str, ...], out: str, labels: tuple[str, ...], log: bool | None) -> None:
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
    plot_stats([load_stats(f) for f in files], out, labels=list(labels) or None, log=log)
    click.echo(f"wrote {out}", err=True)
