"""prep's one-line errors: each starts with the file it is about and holds no line break."""

from __future__ import annotations

import pytest

import prep
from prep.errors import SourceError, StatsFileError


def source_error(fn, path) -> str:
    """The message of the ``SourceError`` that ``fn(path)`` raises, checked to be one line naming ``path``."""
    with pytest.raises(SourceError) as info:
        fn(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert "\n" not in message and "\r" not in message, message
    return message


def refused(path, message: str, load=prep.load_stats) -> str:
    """``load(path)`` raises one StatsFileError line that starts with the path and matches ``message``."""
    with pytest.raises(StatsFileError, match=message) as info:
        load(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text and len(text) < 400, text
    return text
