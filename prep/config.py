"""Option resolution for ``prep stats``: command-line flag, then config file, then default.

Config files are TOML with the long option names as keys (``batch-size`` or ``batch_size``)
and ``source``; see ``configs/``. Resolution happens here, in one place, and nowhere else.
"""

from __future__ import annotations

import os
import tomllib
from typing import Any, Mapping

from .errors import PrepError, os_reason

DEFAULTS: dict[str, Any] = {
    "source": None,
    "root": "data",
    "split": "train",
    "out": None,
    "device": "auto",
    "workers": None,  # the CPU count
    "batch_size": None,  # about 1M pixels per batch on the CPU
    "mode": None,  # the source's native mode
    "download": False,
    "strict": False,
    "force": False,
    "quiet": False,
    "checkpoint": None,
    "checkpoint_every": 10_000,
    "resume": False,
}
_TYPES: dict[str, tuple[type, ...]] = {
    "source": (str,), "root": (str,), "split": (str,), "out": (str,), "device": (str,), "workers": (int,),
    "batch_size": (int,), "mode": (str,), "download": (bool,), "strict": (bool,), "force": (bool,),
    "quiet": (bool,), "checkpoint": (str,), "checkpoint_every": (int,), "resume": (bool,),
}


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML preset; unknown keys and wrong types are errors naming the key and file."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except OSError as exc:
        raise PrepError(f"{path}: cannot read config ({os_reason(exc)})") from None
    except tomllib.TOMLDecodeError as exc:
        raise PrepError(f"{path}: not valid TOML ({exc})") from None
    config = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in _TYPES:
            raise PrepError(f"{path}: unknown key '{key}' (known: {', '.join(sorted(_TYPES))})")
        if isinstance(value, bool) and bool not in _TYPES[name] or not isinstance(value, _TYPES[name]):
            raise PrepError(f"{path}: key '{key}' must be a {_TYPES[name][0].__name__}; got {value!r}")
        config[name] = value
    return config


def resolve_options(given: Mapping[str, Any], config_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Each option from ``given`` when set (not None), else from the config file, else DEFAULTS."""
    config = load_config(config_path) if config_path else {}
    return {name: given[name] if given.get(name) is not None else config.get(name, default)
            for name, default in DEFAULTS.items()}
