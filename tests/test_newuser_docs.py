"""What the documentation says prep prints is what it prints."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

import prep

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _printed_after(text: str, call: str) -> list[str]:
    """The ``# ...`` comment lines that follow ``call`` in a code block of ``text``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == call)
    printed = []
    for line in lines[start + 1 :]:
        if not line.startswith("# "):
            break
        printed.append(line[2:])
    return printed


@pytest.fixture(scope="module")
def mnist_like_whitening(tmp_path_factory):
    images = torch.from_numpy(np.random.default_rng(4).integers(0, 256, (40, 1, 28, 28), np.uint8))
    with pytest.warns(prep.PrepWarning, match="rank < D"):
        zca = prep.compute_whitening(images, eps=1e-3)
    path = tmp_path_factory.mktemp("zca") / "mnist-zca.pt"
    zca.save(path)
    return prep.load_whitening(path)


def test_the_zca_example_shows_what_transform_prints(mnist_like_whitening):
    text = (DOCS / "whitening.md").read_text(encoding="utf-8")
    printed = _printed_after(text, "print(tf)")
    assert printed, "docs/whitening.md: no printed transform after print(tf)"
    assert printed == repr(mnist_like_whitening.transform()).splitlines()
    assert "LinearTransformation(Wᵀ, μ)])" not in text  # the old, made-up print


def test_the_whitening_repr_the_docs_quote_has_its_fields(mnist_like_whitening):
    text = (DOCS / "whitening.md").read_text(encoding="utf-8")
    quoted = re.search(r"`(Whitening\(ZCA, .*?\))`", text).group(1)
    pattern = re.escape(quoted).replace(r"\.\.\.", ".*").replace("60000", r"\d+")
    assert re.fullmatch(pattern, repr(mnist_like_whitening)), (quoted, repr(mnist_like_whitening))
    assert "\n" not in repr(mnist_like_whitening)
