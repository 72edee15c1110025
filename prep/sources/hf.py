"""``hf:NAME``: a Hugging Face dataset, loaded through the optional ``datasets`` library.

``datasets.load_dataset(NAME, split=SPLIT, download_mode="reuse_cache_if_exists")`` (split
``train`` by default). Without ``download`` the library is put in offline mode for the call
(``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE``), so only the local cache is read and nothing is
fetched; with it, a missing dataset is downloaded. Items are dicts, read by
:class:`~prep.sources.dataset.DatasetSource` (``image_key``, default ``image`` or ``img``). The
dataset's own content fingerprint (``Dataset._fingerprint``) names it, so ``-o`` reuse and
``--resume`` work as for files. Every failure, ``datasets`` not installed included, is a one-line
:class:`~prep.errors.SourceError`.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from prep.errors import SourceError
from prep.sources.dataset import DatasetSource

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


class HuggingFaceSource(DatasetSource):
    """A dataset from ``datasets.load_dataset``, described as ``hf:NAME`` and its split."""

    kind = "huggingface"

    def __init__(self, spec: str, split: str, dataset: Any, image_key: str | None = None) -> None:
        fingerprint = getattr(dataset, "_fingerprint", None)
        dataset_id = f"{spec}:{split}:{fingerprint}" if isinstance(fingerprint, str) and fingerprint else None
        super().__init__(dataset, dataset_id=dataset_id, image_key=image_key)
        self.path = self.name = spec
        self.split = split

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "path": self.path, "split": self.split}


def hf_source(spec: str, split: str | None, download: bool = False, image_key: str | None = None) -> HuggingFaceSource:
    """The :class:`HuggingFaceSource` of ``spec`` (``hf:NAME``), from the local cache unless ``download``."""
    name = spec[len("hf:") :]
    if not name:
        raise SourceError(f"{spec}: no dataset name after 'hf:'")
    split = split or "train"
    try:
        import datasets
    except ImportError:
        raise SourceError(
            f"{spec}: reading Hugging Face datasets needs the 'datasets' library (pip install 'prep[hf]')"
        ) from None
    with _offline(not download):
        try:
            dataset = datasets.load_dataset(name, split=split, download_mode="reuse_cache_if_exists")
        except Exception as exc:  # the library raises many types: missing cache, bad name, network
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            hint = "" if download else " (only the local cache is read; pass --download to fetch it)"
            raise SourceError(f"{spec}: cannot load split {split}: {text}{hint}") from None
    return HuggingFaceSource(spec, split, dataset, image_key=image_key)


@contextlib.contextmanager
def _offline(offline: bool) -> Iterator[None]:
    """The Hugging Face libraries (imported already) in offline mode for the block: their config
    flags and the environment, restored after."""
    if not offline:
        yield
        return
    saved_env = {v: os.environ.get(v) for v in OFFLINE_VARIABLES}
    os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
    saved_flags = []
    flags = (("datasets.config", "HF_DATASETS_OFFLINE"), ("huggingface_hub.constants", "HF_HUB_OFFLINE"))
    for module_name, flag in flags:
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, flag):
            saved_flags.append((module, flag, getattr(module, flag)))
            setattr(module, flag, True)
    try:
        yield
    finally:
        for module, flag, value in saved_flags:
            setattr(module, flag, value)
        for variable, value in saved_env.items():
            if value is None:
                os.environ.pop(variable, None)
            else:
                os.environ[variable] = value
