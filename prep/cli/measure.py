"""``prep stats``, ``prep merge`` and ``prep whiten``: the commands that run a pass or combine its
results."""

from __future__ import annotations

import json
from typing import Any

import click

from prep.cli import echo_out, format_flag, log_to_stderr, main, pass_kwargs, reports_errors, source_argument
from prep.options import SOURCE_OPTIONS, click_options, resolve_options
from prep.signals import deferred_sigint


@main.command("stats")
@click.argument("source", nargs=-1)
@click.option(
    "--config",
    "config_path",
    help="TOML preset (see configs/); command-line options override it.",
)
@click.option(
    "-o",
    "--out",
    help="Write the stats JSON here; reused when the data has not changed. '-': the JSON on standard "
    "output (the summary on standard error).",
)
@click_options("stats")
@format_flag(
    "json: the stats JSON on standard output instead of the summary table (several splits: one object, keyed by split)."
)
@reports_errors
def stats_command(config_path: str | None, output_format: str, **given: Any) -> None:
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
    # torch is imported by the pass itself (prep.engine.measure.import_torch): deciding that -o is
    # up to date needs only the file listing and the stats file
    from prep.engine.splits import iter_split_stats, torchrun_session
    from prep.sources.splits import parse_splits

    source_argument(given)
    opts = resolve_options(given, config_path)
    log_to_stderr(quiet=opts["quiet"])
    if opts["source"] is None:
        raise click.UsageError("missing SOURCE (give it as an argument or as 'source' in --config)")
    several = len(parse_splits(opts["split"], opts["source"])) > 1
    with torchrun_session(opts["device"]) as (distributed, speak):  # rank 0 prints and writes for the job
        options = {**pass_kwargs(opts), "distributed": distributed}
        del options["split"]
        to_stdout = opts["out"] == "-"
        as_json = to_stdout or output_format == "json"
        # several splits as JSON: one object, {split: stats}, printed once every split is measured
        collected: dict[str, Any] | None = {} if as_json and several else None
        results = iter_split_stats(
            opts["source"], opts["split"], None if to_stdout else opts["out"], force=opts["force"], **options
        )
        for result in results:
            if speak:
                _print_split(result, opts["quiet"], several, to_stdout, as_json, collected)
        if speak and collected:
            echo_out(json.dumps(collected, indent=2))


def _print_split(
    result: Any, quiet: bool, several: bool, to_stdout: bool, as_json: bool, collected: dict[str, Any] | None = None
) -> None:
    """What ``prep stats`` prints of one split (:class:`~prep.engine.splits.SplitStats`): ``-o -``
    or ``--format json`` the stats JSON on stdout (into ``collected`` under the split's name, with
    several splits), else the summary table (``-q``: the Normalize line)."""
    from prep.insight.summary import format_summary

    stats, out, reused = result.stats, result.out, result.reused
    if as_json:
        if collected is None:
            echo_out(json.dumps(stats.to_dict(), indent=2))
        else:
            collected[str(result.split)] = stats.to_dict()
        heading = f"== split {result.split} ==\n" if several else ""
        if to_stdout and not quiet:
            click.echo(heading + format_summary(stats), err=True)
        elif reused and not quiet:
            click.echo(f"{out} is up to date", err=True)
        return
    if quiet:
        echo_out(f"{result.split}: {stats.normalize_line()}" if several else stats.normalize_line())
        return
    if several:
        echo_out(f"== split {result.split} ==")
    if reused:
        echo_out(f"{out} is up to date")
    echo_out(format_summary(stats))
    if out and not reused:
        click.echo(f"wrote {out}", err=True)


@main.command("merge")
@click.argument("parts", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    required=True,
    help="Write the merged stats JSON here. '-': the JSON on standard output (the summary on standard error).",
)
@click.option("--partial", is_flag=True, help="Merge even if some shards are missing (and say which).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the Normalize line.")
@reports_errors
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
    from prep.insight.summary import format_summary
    from prep.stats.merge import merge_stats

    log_to_stderr(quiet=quiet)
    if out == "-":
        merged = merge_stats(list(parts), partial=partial)
        echo_out(json.dumps(merged.to_dict(), indent=2))
        if not quiet:
            click.echo(format_summary(merged), err=True)
        return
    result = merge_stats(list(parts), partial=partial, out=out)
    echo_out(result.normalize_line() if quiet else format_summary(result))
    if not quiet:
        click.echo(f"wrote {out}", err=True)


_WHITEN_PASS_OPTIONS = (
    *SOURCE_OPTIONS,
    *("mode", "batch_size", "device", "workers", "strict", "decoder", "sample", "seed"),
    *("checkpoint", "checkpoint_every", "resume"),
)


@main.command("whiten")
@click.argument("source", nargs=-1, required=True)
@click.option("-o", "--out", help="Write the whitening file here (.pt, written atomically).")
@click_options("whiten")
@click.option("--pca-whiten", is_flag=True, help="PCA whitening diag(1/sqrt(lambda+eps)) U^T instead of ZCA.")
@reports_errors
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

    source_argument(given)
    opts = resolve_options(given)
    log_to_stderr(quiet=opts["quiet"])
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
        echo_out(result.summary())
    if out:
        click.echo(f"wrote {out}", err=True)
        echo_out(f'transform = prep.load_whitening("{out}").transform()')
