"""The pixel conversion rule: how an image file becomes channel values in unit scale.

prep measures exactly what training code will see, so measuring and transforming share this
one rule. ``mode`` is ``"RGB"`` (3 channels) or ``"L"`` (1 channel).

============================================  ==========================================  =========
PIL mode of the file                           conversion                                  raw max
============================================  ==========================================  =========
1, L, LA, P, PA, RGB, RGBA, CMYK, YCbCr, ...   ``img.convert(mode)``, as torchvision's      255
                                               ``ImageFolder`` loader (palette and alpha
                                               follow PIL: alpha is dropped, not blended)
I;16, I;16L, I;16B, I;16N, I                   values kept, divided by 65535 (not clipped   65535
                                               to 8 bits); ``I`` values must lie in
                                               0..65535; grey replicated for ``RGB``
F                                              values kept as unit-scale floats; NaN and    1.0
                                               inf are counted and left out of the stats;
                                               grey replicated for ``RGB``
============================================  ==========================================  =========

EXIF orientation is not applied (as in ``ImageFolder``); rotating an image does not change its
statistics anyway.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import OptionError

MODES = ("RGB", "L")
CHANNELS = {"RGB": 3, "L": 1}
SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
FLOAT_MODES = frozenset({"F"})
SIXTEEN_BIT_MAX = 65535
EIGHT_BIT_MAX = 255


def check_mode(mode: str) -> str:
    """Return ``mode`` if prep supports it, else raise :class:`OptionError` naming the choices."""
    if mode not in MODES:
        raise OptionError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return mode


def native_mode(img: Image.Image) -> str:
    """The mode that keeps an image's channels: ``L`` for grey, 16-bit and float images, else ``RGB``."""
    grey = img.mode in ("1", "L", "LA") or img.mode in SIXTEEN_BIT_MODES or img.mode in FLOAT_MODES
    return "L" if grey else "RGB"


def is_eight_bit(img: Image.Image) -> bool:
    """True when ``img`` converts to 8-bit ``RGB``/``L`` through PIL (every mode but 16-bit and float)."""
    return img.mode not in SIXTEEN_BIT_MODES and img.mode not in FLOAT_MODES


def eight_bit_histogram(img: Image.Image, mode: str) -> list[int]:
    """PIL's flat per-channel 256-bin histogram of an 8-bit image after ``img.convert(mode)``.

    A list of ``C * 256`` counts; many of them stack with :func:`stack_histograms`.
    """
    return (img if img.mode == mode else img.convert(mode)).histogram()


def stack_histograms(histograms: list[list[int]], mode: str) -> np.ndarray:
    """Flat histograms of several images as one ``(N, C, 256)`` int64 array (one conversion)."""
    return np.array(histograms, dtype=np.int64).reshape(-1, CHANNELS[mode], 256)


def to_array(img: Image.Image, mode: str) -> tuple[np.ndarray, float]:
    """Convert ``img`` by the rule above into a ``(C, H, W)`` array and its raw maximum.

    The array is uint8 (raw max 255), int32 (16-bit data, raw max 65535) or float32 (``F``
    images, already unit scale, raw max 1.0); divide by the raw maximum for unit scale.
    """
    channels = CHANNELS[check_mode(mode)]
    if is_eight_bit(img):
        converted = img if img.mode == mode else img.convert(mode)
        arr = np.asarray(converted, dtype=np.uint8)
        arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
        return np.ascontiguousarray(arr), float(EIGHT_BIT_MAX)
    if img.mode in SIXTEEN_BIT_MODES:
        arr = np.asarray(img).astype(np.int32)
        if arr.size and (arr.min() < 0 or arr.max() > SIXTEEN_BIT_MAX):
            raise ValueError(
                f"mode {img.mode} image has values outside 0..{SIXTEEN_BIT_MAX}; "
                "prep reads integer images as 16-bit"
            )
        raw_max = float(SIXTEEN_BIT_MAX)
    else:
        arr = np.asarray(img, dtype=np.float32)
        raw_max = 1.0
    return np.ascontiguousarray(np.broadcast_to(arr, (channels, *arr.shape))), raw_max
