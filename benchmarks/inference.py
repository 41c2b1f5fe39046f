"""Fast inference (issue 15): `cnnkit predict` at --precision fp32 against --precision auto, in one run.

Both sides call `cnnkit.api.predict("efficientnet_lite0.imagenet", paths, top_k=1, precision=...)`, the path of
`cnnkit predict efficientnet_lite0.imagenet IMAGES`: the pretrained weights (package efficientnet-lite0-pytorch-
model) opened, the batch norms folded into the convolutions, the JPEGs decoded by worker processes a batch of 64
at a time with the card's transform (short side to 224, bicubic, centre crop). fp32 runs NCHW in fp32; auto is
what this machine resolves it to (bf16 autocast + channels_last on a CPU with AMX or AVX512-BF16). The images
are the first 256 JPEGs (sorted) of hymenoptera/train and val under $CNNKIT_DATA (default ../shared/data).

One warm-up call of each, then `--rounds` rounds alternating fp32, auto. Printed: the median images/s of each,
the ratio auto / fp32 (acceptance ≥ 2.5) and the share of images whose top-1 class is the same (≥ 99 %), with
the fp32 top-1 and top-2 probabilities of those that differ (near ties or not).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/inference.py [--images 256] [--rounds 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from shared_data import ROOT  # benchmarks/ is on sys.path when run as a script

from cnnkit import api
from cnnkit.engine.precision import Precision
from cnnkit.errors import CnnkitError

WEIGHTS = "efficientnet_lite0.imagenet"


def hymenoptera() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    return (Path(env) if env else ROOT.parent / "shared" / "data") / "hymenoptera"


def timed(paths: list[Path], precision: str, model: str = WEIGHTS) -> tuple[float, list[list[dict]]]:
    """(seconds, each image's top-2 {label, probability}) of one api.predict call."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = api.predict(model, paths, top_k=2, precision=precision)
    return time.perf_counter() - start, [r["predictions"] for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each side, alternated")
    parser.add_argument("--model", default=WEIGHTS, help="weights name or a RUN folder, e.g. a hymenoptera "
                        "fine-tune (runs/bench-parity/hymenoptera-auto from benchmarks/parity.py)")
    args = parser.parse_args()
    model = args.model
    folder = hymenoptera()
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))[:args.images]
    if not paths:
        print(f"SKIP: no JPEGs under {folder}; set CNNKIT_DATA to the folder that holds hymenoptera/")
        return 0
    try:
        timed(paths[:1], "fp32", model)
    except CnnkitError as err:
        print(f"SKIP: {err}")
        return 0
    auto = Precision.resolve("auto", "cuda" if torch.cuda.is_available() else "cpu")
    n = len(paths)
    print(f"{n} images from {folder}; {model}; auto = {auto.name} (channels_last {auto.channels_last}); "
          f"threads={torch.get_num_threads()} cores={os.cpu_count()} torch={torch.__version__} "
          f"load={os.getloadavg()[0]:.2f}")
    warm = {p: timed(paths, p, model) for p in ("fp32", "auto")}  # allocator, kernels, file cache
    differ = [a for a, b in zip(warm["fp32"][1], warm["auto"][1]) if a[0]["label"] != b[0]["label"]]
    same = 1 - len(differ) / n
    print(f"warm-up: fp32 {n / warm['fp32'][0]:.1f} img/s, auto {n / warm['auto'][0]:.1f} img/s")
    rates: dict[str, list[float]] = {"fp32": [], "auto": []}
    for _ in range(args.rounds):
        for precision in rates:
            rates[precision].append(n / timed(paths, precision, model)[0])
    med = {p: statistics.median(r) for p, r in rates.items()}
    for p, r in rates.items():
        print(f"{p:<5} median {med[p]:7.1f} img/s   all rounds {' '.join(f'{x:.1f}' for x in r)}")
    pairs = [a / f for f, a in zip(rates["fp32"], rates["auto"])]
    print(f"speed-up auto / fp32 (medians): {med['auto'] / med['fp32']:.2f}x (acceptance >= 2.5); pair ratios "
          f"{' '.join(f'{x:.2f}' for x in pairs)}")
    print(f"same top-1 at fp32 and auto: {same:.2%} of {n} images (acceptance >= 99 %)")
    if differ:
        gaps = " ".join(f"{a[0]['probability']:.3f}-{a[1]['probability']:.3f}" for a in differ)
        print(f"fp32 top-1 - top-2 probabilities of the {len(differ)} that differ: {gaps}")
    print(f"load average now {os.getloadavg()[0]:.2f} (other processes on the CPU make the numbers noisy)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
