"""prep.sources.named: the named datasets under --root, and a download that fails in one line
and leaves the user's files alone."""

from __future__ import annotations

import numpy as np
import pytest

import prep
from helpers import make_mnist, source_arrays
from prep.sources import resolve_source


@pytest.mark.parametrize("name,folder", [("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_other_mnist_format_names(tmp_path, name, folder):
    images = make_mnist(tmp_path, folder=folder)["test"]
    (array,) = source_arrays(resolve_source(name, root=tmp_path, split="test"))
    np.testing.assert_array_equal(array[:, 0], images)


def test_download_offline_is_a_one_line_error(tmp_path, monkeypatch):
    import urllib.request

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    monkeypatch.setattr(urllib.request.OpenerDirector, "open", offline)
    (tmp_path / "mine.txt").write_text("a file of the user's")
    with pytest.raises(prep.DownloadError, match=f"cannot download mnist into {tmp_path}") as caught:
        prep.compute_stats("mnist", root=tmp_path, download=True)
    assert "Temporary failure in name resolution" in str(caught.value)  # the cause, not just the first line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]  # MNIST/raw/ removed, the rest kept
    with pytest.raises(prep.DownloadError, match="name resolution"):
        prep.compute_stats("cifar10", root=tmp_path / "new", download=True)
    assert not (tmp_path / "new").exists()
