"""``prep report``: one self-contained HTML page of one or more stats files."""

from __future__ import annotations

import click

from prep.cli import main, reports_errors
from prep.errors import PrepError
from prep.options import click_options


@main.command("report")
@click.argument("files", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="The HTML page to write, atomically (e.g. report.html).")
@click.option(
    "--label", "labels", multiple=True, help="The name of each FILE on the page, in order (default: its source)."
)
@click.option(
    "--thumbnails/--no-thumbnails",
    default=True,
    show_default=True,
    help="Show the suspicious images of a per-image report as thumbnails read from the source (at most 48).",
)
@click.option(
    "--per-image",
    "per_image",
    multiple=True,
    help="The per-image CSV (prep stats --per-image) of each FILE, in order: adds the distribution of the "
    "images' brightness.",
)
@click_options("report")
@reports_errors
def report_command(
    files: tuple[str, ...],
    out: str,
    labels: tuple[str, ...],
    thumbnails: bool,
    per_image: tuple[str, ...],
    max_shift: float,
    max_std_ratio: float,
) -> None:
    """Write one HTML page of FILES (stats files): readable offline, with no network request.

    The source and how it was measured, the skipped files, the per-channel table, the Normalize
    line and the other libraries' exports (with copy buttons), the histograms (linear and log),
    the covariance and PCA, and the suspicious images of a per-image report. With two or more
    FILES, each is compared with the first as prep compare does and the histograms overlay.

    \b
    Examples:
      prep report cifar10-train.json -o report.html
      prep report train.json test.json -o drift.html --label train --label test
      prep stats ./photos -o photos.json --per-image photos.csv
      prep report photos.json --per-image photos.csv -o photos.html
    """
    from prep.insight.report_page import report

    if labels and len(labels) != len(files):
        raise PrepError(f"--label: give one per FILE ({len(files)}); got {len(labels)}")
    if per_image and len(per_image) != len(files):
        raise PrepError(f"--per-image: give one per FILE ({len(files)}); got {len(per_image)}")
    report(
        list(files),
        out,
        labels=list(labels) or None,
        thumbnails=thumbnails,
        per_image=list(per_image) or None,
        max_shift=max_shift,
        max_std_ratio=max_std_ratio,
    )
    click.echo(f"wrote {out}", err=True)
