"""prep.errors: every error prep reports is a PrepError."""

from __future__ import annotations

import prep
from prep.errors import SourceError, StatsFileError


def test_source_errors_are_prep_errors():
    assert issubclass(SourceError, prep.PrepError) and issubclass(StatsFileError, prep.PrepError)
