"""``prep stats``, ``prep merge`` and ``prep whiten``: the commands that run a pass or combine its
results."""

from __future__ import annotations

import json
import os
from typing import Any

import click

from prep.cli import echo_out, format_flag, log_to_stderr, main, pass_kwargs, reports_errors, source_argument
from prep.errors import PrepError
from prep.options import SOURCE_OPTIONS, click_options, output_for, resolve_options
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
@format_flag("json: the stats JSON on standard output instead of the summary table.")
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
    from prep.sources.splits import parse_splits

    source_argument(given)
    opts = resolve_options(given, config_path)
    log_to_stderr(quiet=opts["quiet"])
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
                as_json=output_format == "json",
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


def _stats_of_split(
    opts: dict[str, Any], several: bool, speak: bool = True, distributed: bool = False, as_json: bool = False
) -> None:
    """One split of ``prep stats``: measure (or reuse ``out``), then print the summary (when this
    process ``speak``s for the job: always, but rank 0 alone under torchrun). ``out`` ``-``
    writes the stats JSON on standard output and the summary on standard error."""
    from prep.engine.measure import compute_stats, load_or_compute
    from prep.insight.summary import format_summary

    out, quiet = opts["out"], opts["quiet"]
    to_stdout = out == "-"
    options = {**pass_kwargs(opts), "distributed": distributed}
    if out and not to_stdout:
        result, reused = load_or_compute(out, opts["source"], force=opts["force"], **options)
    else:
        result, reused = compute_stats(opts["source"], **options), False
    if not speak:
        return
    if to_stdout or as_json:
        echo_out(json.dumps(result.to_dict(), indent=2))
        if to_stdout and not quiet:
            click.echo(format_summary(result), err=True)
        elif reused and not quiet:
            click.echo(f"{out} is up to date", err=True)
        return
    if quiet:
        echo_out(f"{opts['split']}: {result.normalize_line()}" if several else result.normalize_line())
        return
    if several:
        echo_out(f"== split {opts['split']} ==")
    if reused:
        echo_out(f"{out} is up to date")
    echo_out(format_summary(result))
    if out and not reused:
        click.echo(f"wrote {out}", err=True)


@main.command("merge")
@click.argument("parts", nargs=-1, required=True)
@click.option("-o", "--out", required=True, help="Write the merged stats JSON here.")
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
    from prep.files import output_target
    from prep.insight.summary import format_summary
    from prep.stats.merge import merge_stats

    target = output_target(out, "stats file")
    for part in parts:
        if os.path.exists(part) and os.path.exists(target) and os.path.samefile(part, target):
            raise PrepError(f"{out}: is also one of the parts; write the merged file elsewhere")
    log_to_stderr(quiet=quiet)
    result = merge_stats(list(parts), partial=partial)
    result.save(out)
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
