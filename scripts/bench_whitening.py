"""Benchmark ZCA whitening statistics at CIFAR-10 size (50,000 images x 3,072 values).

Generates its own data (cached under --data, default ./bench-data, which .gitignore excludes): a
CIFAR-10-size set of python pickles (5 x 10,000 x 3 x 32 x 32 uint8, smooth random content).
Runs each method in a fresh process and reports its time and peak resident memory:

  * prep: ``prep.compute_whitening("cifar10")``, streamed (the pass, then the eigen decomposition),
  * kornia: every image loaded into one float32 tensor, then ``kornia.enhance.ZCAWhitening.fit``
    (skipped when kornia is not installed),
  * in-memory: every image as one float64 tensor, ``Xc.T @ Xc / N``, ``torch.linalg.eigh`` (what
    torchvision's ``LinearTransformation`` docstring suggests),

and the largest difference of each method's W from prep's (relative to max |W|).

    python scripts/bench_whitening.py                   # about 3 minutes on 2 cores
    python scripts/bench_whitening.py --only prep --device cuda
"""

from __future__ import annotations

import argparse
import json
import pickle
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
METHODS = ("prep", "kornia", "in-memory")
EPS = 1e-5


def write_cifar(root: Path, per_batch: int = 10_000, seed: int = 0) -> None:
    """CIFAR-10 python pickles of smooth random images (neighbouring pixels correlated)."""
    folder = root / CIFAR10_FOLDER
    if all((folder / name).exists() for name in (*CIFAR10_TRAIN, "batches.meta")):
        return
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in CIFAR10_TRAIN:
        coarse = rng.integers(0, 256, (per_batch, 3, 8, 8)).astype(np.float32)
        images = np.repeat(np.repeat(coarse, 4, axis=2), 4, axis=3)
        images += rng.normal(0, 24, images.shape).astype(np.float32)
        images = images.clip(0, 255).astype(np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.reshape(per_batch, -1), "labels": [0] * per_batch}, f, protocol=4)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def load_all(root: Path) -> np.ndarray:
    """Every training image as one uint8 array (N, 3072), as in-memory methods need."""
    parts = []
    for name in CIFAR10_TRAIN:
        with open(root / CIFAR10_FOLDER / name, "rb") as f:
            parts.append(pickle.load(f, encoding="latin1")["data"])
    return np.concatenate(parts)


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def child(method: str, root: Path, device: str, out: Path) -> None:
    """Run one method in this (fresh) process and write its figures and W to ``out``."""
    import torch

    from prep.engine.whiten import compute_cross_moments
    from prep.transforms.whitening import Whitening

    base = peak_mib()
    timings: dict[str, float] = {}
    start = time.perf_counter()
    if method == "prep":
        state = compute_cross_moments("cifar10", root=str(root), device=device)
        timings["pass"] = time.perf_counter() - start
        mid = time.perf_counter()
        w = Whitening.from_moments(state, eps=EPS, mode="RGB").matrix
        timings["eigh"] = time.perf_counter() - mid
    else:
        x = torch.from_numpy(load_all(root))
        timings["load"] = time.perf_counter() - start
        mid = time.perf_counter()
        if method == "kornia":
            import kornia

            x = x.to(device).float() / 255
            fit = kornia.enhance.ZCAWhitening(eps=EPS, unbiased=False).fit(x)
            w = fit.transform_matrix.double().cpu()
        else:
            x = x.to(device).double() / 255
            xc = x - x.mean(0)
            cov = xc.T @ xc / len(xc)
            values, vectors = torch.linalg.eigh(cov)
            w = (vectors * (values.clamp_min(0) + EPS).rsqrt()) @ vectors.T
            w = w.cpu()
        timings["fit"] = time.perf_counter() - mid
    total = time.perf_counter() - start
    torch.save(w, out.with_suffix(".pt"))
    figures = {"method": method, "seconds": total, "parts": timings, "peak_mib": peak_mib(), "base_mib": base}
    out.write_text(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("bench-data"))
    parser.add_argument("--device", default="cpu", help="cpu or cuda (all methods)")
    parser.add_argument("--only", choices=METHODS, action="append", help="run only these methods")
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.device, args.out)
        return
    write_cifar(args.data)
    methods = args.only or list(METHODS)
    if "kornia" in methods:
        try:
            import kornia  # noqa: F401
        except ImportError:
            print("kornia is not installed: skipping it (pip install kornia)")
            methods.remove("kornia")
    results = []
    for method in methods:
        out = args.data / f"whitening-{method}.json"
        command = [sys.executable, __file__, "--child", method, "--data", str(args.data), "--device", args.device]
        subprocess.run([*command, "--out", str(out)], check=True)
        results.append(json.loads(out.read_text()))
    import torch

    reference = torch.load(args.data / "whitening-prep.pt") if "prep" in methods else None
    print(f"ZCA whitening statistics, 50,000 x 3,072 (CIFAR-10 size), device {args.device}")
    print(f"{'method':<12}{'seconds':>9}{'peak MiB':>10}  {'parts':<34}{'max |dW| / max |W|':>20}")
    for r in results:
        parts = ", ".join(f"{k} {v:.1f}s" for k, v in r["parts"].items())
        diff = ""
        if reference is not None:
            w = torch.load(args.data / f"whitening-{r['method']}.pt")
            diff = f"{float((w - reference).abs().max() / reference.abs().max()):.1e}"
        print(f"{r['method']:<12}{r['seconds']:>9.1f}{r['peak_mib']:>10.0f}  {parts:<34}{diff:>20}")


if __name__ == "__main__":
    main()
