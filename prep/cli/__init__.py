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

from prep._version import __version__
from prep.errors import PrepError, os_reason, printable
from prep.options import PASS_OPTIONS
from prep.signals import INTERRUPTED, restore_sigint


def _fail(message: str, code: int) -> None:
    click.echo(f"prep: error: {printable(message)}", err=True)
    sys.exit(code)


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn PrepError into one line and its exit code, Ctrl-C into exit 130; warnings into lines."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        def show(message, category, filename, lineno, file=None, line=None):
            click.echo(f"prep: warning: {printable(message)}", err=True)

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


def echo_out(text: str) -> None:
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


def format_flag(help: str) -> Callable[[Any], Any]:
    """``--format text|json`` (``output_format``), with what ``json`` prints said in ``help``."""
    return click.option(
        "--format", "output_format", type=click.Choice(("text", "json")), default="text", show_default=True, help=help
    )


def pass_kwargs(opts: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of :func:`prep.compute_stats` for resolved options ``opts``."""
    from prep.transforms.measurement import measurement_spec

    options = {name: opts[name] for name in PASS_OPTIONS}
    options["progress"] = not opts["quiet"]
    # built by the pass: describing it for the reuse of -o needs no torch
    options["transform"] = measurement_spec(opts["resize"], opts["center_crop"])
    return options


def source_argument(given: dict[str, Any]) -> None:
    """SOURCE given several times (WebDataset shards) as a list, once as a string, never as None."""
    sources = given.pop("source")
    given["source"] = None if not sources else sources[0] if len(sources) == 1 else list(sources)


class _StderrHandler(logging.Handler):
    """Log records from the library as ``prep: message`` lines on the current stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"prep: {printable(record.getMessage())}", err=True)


def log_to_stderr(quiet: bool) -> None:
    logger = logging.getLogger("prep")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def run() -> None:
    """The command line (:func:`main`), with a Ctrl-C at any moment ending in exit 130."""
    restore_sigint()
    try:
        main()
    except KeyboardInterrupt:
        click.echo("prep: interrupted", err=True)
        sys.exit(INTERRUPTED)


# the commands register themselves on `main` when their modules are imported
from prep.cli import inspect, measure, report  # noqa: E402

__all__ = ["inspect", "main", "measure", "report", "run"]
