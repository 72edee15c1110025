"""Hand edits of prep's JSON files (stats files, checkpoints) and the values they are made of."""

from __future__ import annotations

import torch

import prep

SHA = "0123456789abcdef" * 4
LONG = "7" * 5000  # an integer of 5,000 digits

REASONS = [
    "not an image file extension",
    "cannot decode: UnidentifiedImageError: cannot identify image file 'x.jpg'",
    "symlink loop: directory already visited",
    "cannot read: Permission denied",
]


def put(*keys, value):
    """An edit setting ``data[k1][k2]...`` to ``value``."""

    def change(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = value

    return change


def scale(*keys, factor):
    def change(data):
        for key in keys[:-1]:
            data = data[key]
        data[keys[-1]] = [v * factor for v in data[keys[-1]]]

    return change


def rgb_moments() -> prep.ChannelMoments:
    return prep.ChannelMoments(3).update(torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8))


def many_skipped(n: int) -> list[dict[str, str]]:
    return [{"path": f"sys/file{i:06d}", "reason": REASONS[i % len(REASONS)]} for i in range(n)]
