"""How training code consumes a stats file: one small CNN trained twice, raw [0, 1] vs normalized.

Offline and on the CPU in well under a minute:

1. writes an MNIST-format dataset (idx files in torchvision's layout ``DATA/MNIST/raw/``) of
   digit glyphs drawn with PIL: random font size, position, rotation, stroke and background
   noise; 6,000 training and 1,000 test images by default;
2. measures the training split once with prep and saves ``DATA/mnist-train.stats.json``;
3. loads that file, and trains the same CNN (same initial weights, same batches) twice:
   with ``ToDtype(scale=True)`` alone (raw [0, 1] inputs) and with
   ``prep.load_stats(file).normalize()``; the test split is evaluated with the transform built
   from the **same** training stats file (never with statistics of the test split);
4. prints both loss curves and test accuracies, and saves a plot of the curves when matplotlib
   is installed (``pip install 'prep[plot]'``).

    python scripts/train_example.py                      # 300 steps, data in a temporary folder
    python scripts/train_example.py --steps 600 --data ./glyphs --plot curves.png
"""

from __future__ import annotations

import argparse
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image, ImageDraw, ImageFont
from torch import nn
from torchvision.transforms import v2

import prep

SIZE = 28


# ------------------------------------------------------------------ data
def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # a scalable font (Pillow >= 10.1 with FreeType)
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    """One 28x28 uint8 glyph of ``digit``: bright strokes on a dark, slightly noisy background."""
    canvas = Image.new("L", (2 * SIZE, 2 * SIZE), 0)
    draw = ImageDraw.Draw(canvas)
    size = int(rng.integers(26, 38))
    x, y = SIZE + rng.integers(-5, 6), SIZE + rng.integers(-5, 6)
    stroke = int(rng.integers(0, 3))
    draw.text((x, y), str(digit), fill=int(rng.integers(190, 256)), font=_font(size), anchor="mm", stroke_width=stroke)
    canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.BILINEAR)
    glyph = np.asarray(canvas.resize((SIZE, SIZE), Image.BILINEAR), dtype=np.float64)
    glyph += rng.normal(8.0, 6.0, glyph.shape)
    return np.clip(glyph, 0, 255).astype(np.uint8)


def write_mnist(root: Path, n_train: int, n_test: int, seed: int) -> None:
    """idx3/idx1 files (``train-*`` and ``t10k-*``) under ``root/MNIST/raw/``, as torchvision reads them."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = np.stack([draw_digit(int(d), rng) for d in labels])
        header = bytes([0, 0, 8, 3]) + struct.pack(">III", n, SIZE, SIZE)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", n) + labels.tobytes())


# ------------------------------------------------------------------ model and training
def make_model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


def train(transform, root: Path, steps: int, batch_size: int, lr: float, seed: int) -> tuple[list[float], float]:
    """Train from the same initial weights on the same batch order; return per-step losses and
    the test accuracy. ``transform`` is used for the training and the test split alike."""
    train_set = torchvision.datasets.MNIST(root, train=True, transform=transform)
    test_set = torchvision.datasets.MNIST(root, train=False, transform=transform)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed), drop_last=True
    )
    model = make_model(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    losses: list[float] = []
    while len(losses) < steps:
        for images, labels in loader:
            loss = nn.functional.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if len(losses) == steps:
                break
    model.eval()
    correct = 0
    with torch.no_grad():
        for images, labels in torch.utils.data.DataLoader(test_set, batch_size=500):
            correct += int((model(images).argmax(1) == labels).sum())
    return losses, correct / len(test_set)


def smooth(values: list[float], k: int) -> list[float]:
    """Mean of each window of ``k`` steps (the last one may be shorter)."""
    return [float(np.mean(values[i : i + k])) for i in range(0, len(values), k)]


def save_plot(curves: dict[str, list[float]], path: Path) -> bool:
    """The loss curves as a PNG; False when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return False
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for label, losses in curves.items():
        ax.plot(losses, lw=0.8, alpha=0.35)
        k = max(1, len(losses) // 30)
        ax.plot(
            np.arange(len(smooth(losses, k))) * k + (k - 1) / 2,
            smooth(losses, k),
            lw=2,
            label=label,
            color=ax.lines[-1].get_color(),
        )
    ax.set_xlabel("step")
    ax.set_ylabel("training loss (cross entropy)")
    ax.legend()
    fig.savefig(path, dpi=110)
    return True


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300, help="SGD steps per run (default 300)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.02, help="plain SGD learning rate, the same for both runs")
    parser.add_argument("--n-train", type=int, default=6000)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--data", type=Path, help="where to write the dataset and stats file (default: a temporary folder)"
    )
    parser.add_argument(
        "--plot", type=Path, default=Path("train_example.png"), help="loss-curve PNG (needs matplotlib)"
    )
    parser.add_argument("--no-plot", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(4, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or Path(tmp)
        start = time.perf_counter()
        write_mnist(root, args.n_train, args.n_test, args.seed)
        stats_file = root / "mnist-train.stats.json"
        prep.compute_stats("mnist", root=root, split="train", device="cpu").save(stats_file)

        # what training code does: load the training split's stats file, build the transforms
        stats = prep.load_stats(stats_file)
        print(f"{stats_file.name}: {stats.normalize_line()}  ({time.perf_counter() - start:.1f} s to build)")
        runs = {
            "raw [0, 1]": v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)]),
            "prep normalize()": stats.normalize(),  # used for the test split too: the same file
        }
        curves, accuracy = {}, {}
        for label, transform in runs.items():
            t0 = time.perf_counter()
            curves[label], accuracy[label] = train(transform, root, args.steps, args.batch_size, args.lr, args.seed)
            print(f"trained {label!r}: {args.steps} steps in {time.perf_counter() - t0:.1f} s")

    k = max(1, args.steps // 15)
    print(f"\nmean training loss per {k} steps")
    print(f"{'steps':>11}  " + "  ".join(f"{label:>16}" for label in curves))
    smoothed = {label: smooth(losses, k) for label, losses in curves.items()}
    for i in range(len(next(iter(smoothed.values())))):
        span = f"{i * k + 1}-{min((i + 1) * k, args.steps)}"
        print(f"{span:>11}  " + "  ".join(f"{smoothed[label][i]:>16.4f}" for label in curves))
    print(f"{'test acc.':>11}  " + "  ".join(f"{accuracy[label]:>16.1%}" for label in curves))
    if not args.no_plot:
        if save_plot(curves, args.plot):
            print(f"loss curves: {args.plot}")
        else:
            print("matplotlib is not installed: no plot (pip install 'prep[plot]')")
    return 0


if __name__ == "__main__":
    sys.exit(main())
