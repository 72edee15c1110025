"""The image files of every kind the decoders tell apart, written once per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.formats import write_kinds


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> dict[str, Path]:
    return write_kinds(tmp_path_factory.mktemp("kinds") / "files")
