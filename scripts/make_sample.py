"""Regenerate prep/sample_data: the small image folder that `prep stats sample` measures.

Deterministic (fixed seed): two classes of smooth, noisy images in the formats users have
(JPEG and PNG, RGB, greyscale and palette), of a few sizes. Run from the repository root:
    python scripts/make_sample.py
"""

from pathlib import Path

import numpy as np
from PIL import Image

OUT = Path(__file__).resolve().parent.parent / "prep" / "sample_data"


def picture(rng: np.random.Generator, height: int, width: int, tint: np.ndarray) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    base = 0.5 + 0.35 * np.sin(2 * np.pi * (x * rng.uniform(1, 3) + y * rng.uniform(1, 3)))[..., None]
    noisy = base * tint + rng.normal(0, 0.06, (height, width, 3))
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def main() -> None:
    rng = np.random.default_rng(2026)
    tints = {"cats": np.array([0.9, 0.7, 0.5]), "dogs": np.array([0.5, 0.6, 0.9])}
    for label, tint in tints.items():
        folder = OUT / label
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(12):
            h, w = [(48, 64), (64, 48), (40, 40)][i % 3]
            img = Image.fromarray(picture(rng, h, w, tint))
            if i % 4 == 0:
                img.save(folder / f"{label}_{i:02d}.png")
            elif i % 4 == 1:
                img.convert("L").save(folder / f"{label}_{i:02d}.png")
            elif i % 4 == 2:
                img.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / f"{label}_{i:02d}.png")
            else:
                img.save(folder / f"{label}_{i:02d}.jpg", quality=90)


if __name__ == "__main__":
    main()
