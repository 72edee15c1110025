"""The exceptions prep raises.

Every error a user can cause derives from :class:`PrepError`, so the CLI catches one class
and prints one line. Each error carries the exit code the CLI uses for it.
"""

from __future__ import annotations


class PrepError(Exception):
    """Base class of prep's errors: a one-line message naming the file or field at fault."""

    exit_code = 2


class OptionError(PrepError, ValueError):
    """An option has a value prep does not accept (mode, device, workers, batch size, eps, config keys)."""


class SourceError(PrepError):
    """A dataset source cannot be found, listed or parsed (bad path, wrong header, missing key)."""


class BadImageError(PrepError):
    """An image file cannot be decoded; raised instead of skipping it under ``strict=True``."""

    exit_code = 1


class DownloadError(SourceError):
    """A named dataset could not be downloaded (offline, server error)."""


class StatsFileError(PrepError):
    """A stats or checkpoint file is missing, malformed, or fails validation; names the field."""


class StaleStatsError(StatsFileError):
    """A stats file's fingerprint or options no longer match the data it claims to describe."""


class MismatchError(PrepError, ValueError):
    """Inputs that must agree do not: parts of a merge from other data or measurements, or
    statistics (and constants) of different channel counts compared or overlaid."""


class ChannelMismatchError(PrepError, ValueError):
    """An image's channel count differs from the channel count of the statistics."""


class ShapeMismatchError(PrepError, ValueError):
    """An image's ``(C, H, W)`` differs from the shape a whitening matrix was computed for."""


class SmallImageError(OptionError):
    """An image smaller than the center crop it is given to."""


class DegenerateStatsError(PrepError, ValueError):
    """A transform would divide by zero: a channel has zero std or zero range."""


def printable(text: object) -> str:
    """``str(text)`` safe to show on a terminal, on one line: every character that is not
    printable (escape sequences such as ``\x1b]0;...\x07``, newlines, C1 controls, bidirectional
    overrides, the surrogates of undecodable bytes in a file name) is written as its Python
    escape (``\x1b``, ``\n``, ``\u202e``, ``\udcff``); printable text, non-ASCII included, is kept.

    File names, archive members and fields of edited stats files are untrusted: prep passes
    them through this before it prints them."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def os_reason(exc: BaseException) -> str:
    """The short reason of an OS-level failure (``strerror`` when there is one)."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


class PrepWarning(UserWarning):
    """Something the user should know about the numbers (skipped files, zero variance, NaN)."""


class OutputError(PrepError):
    """An output path (stats file, checkpoint) cannot be written safely; checked before any work."""
