"""The ``prep`` command line, run in this process."""

from __future__ import annotations


def run(*args):
    """The ``prep`` command line in this process (click's runner); arguments may be paths or numbers."""
    from click.testing import CliRunner

    from prep.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])
