"""prep.sources.shard_patterns: brace ranges in shard names."""

from __future__ import annotations

import pytest

from prep.errors import SourceError
from prep.sources.shard_patterns import expand_braces


def test_brace_expansion_keeps_padding():
    assert expand_braces("s-{000008..000010}.tar") == ["s-000008.tar", "s-000009.tar", "s-000010.tar"]
    assert expand_braces("{a,b}{1..2}") == ["a1", "a2", "b1", "b2"]
    assert expand_braces("{2..0}") == ["2", "1", "0"]
    with pytest.raises(SourceError, match="more than"):
        expand_braces("{0..99999999}")
