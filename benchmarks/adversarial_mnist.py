"""Adversarial training of LeNet-5 on MNIST: clean, FGSM and PGD robust accuracy of a plain and an
adversarially trained model of the same architecture (docs/benchmarks.md §6).

For each `--variant` (LeNet-5 `classic`: tanh + average pooling, or `modern`: ReLU + max pooling) the script
trains two models with benchmarks/mnist_lenet5.yaml (Adam 0.003, cosine, batch 256, 8 epochs, no
augmentation) through cnnkit.api.train, on the same seeded split:

* plain: the YAML recipe as it is;
* adversarial: the same recipe with `--adversarial fgsm|pgd --adv-eps ε_train` (loss ½·L(x) + ½·L(x_adv),
  Goodfellow et al. 2015; PGD is Madry et al. 2018 with `--adv-steps` steps of 2.5·ε/steps);

then evaluates both on the run's **val** split (9,000 images; the test split stays locked) with
cnnkit.api.evaluate: clean accuracy, FGSM and 7-step PGD robust accuracy, ε = `--eps` (0.1) in pixel units,
adversarial images clamped to the valid pixel range. Prints a markdown table and the FGSM gain.

MNIST is read from $CNNKIT_DATA/mnist, or ../shared/data/mnist beside the repository; without it the script
prints SKIP and exits 0.

    .venv/bin/python benchmarks/adversarial_mnist.py [--variant classic modern] [--adversarial fgsm]
        [--adv-eps 0.1] [--epochs 8] [--out benchmarks/out/adversarial_mnist] [--reuse]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from shared_data import ROOT, mnist_dir  # benchmarks/ is on sys.path when run as a script

from cnnkit import api
from cnnkit.config import load_config


def has_mnist(data: Path) -> bool:
    names = ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte")
    return any((d / n).is_file() for d in (data, data / "MNIST" / "raw") for n in names)


def train(out: Path, data: Path, variant: str, args, adversarial: str | None) -> float | None:
    """Train one model into `out`; the training time in seconds, or None when --reuse finds it there."""
    if args.reuse and (out / "model.pt").is_file():
        return None
    train_cfg = {"epochs": args.epochs, "seed": args.seed, "adversarial": adversarial}
    if adversarial:
        train_cfg.update(adv_eps=args.adv_eps, adv_steps=args.adv_steps)
    cfg = load_config(path=ROOT / "benchmarks" / "mnist_lenet5.yaml",
                      overrides={"data": {"source": f"mnist:{data}"}, "model": {"options": {"variant": variant}},
                                 "train": train_cfg, "out": str(out)})
    t0 = time.perf_counter()
    api.train(cfg)
    return time.perf_counter() - t0


def measure(run: Path, eps: float, seed: int) -> dict:
    """Clean and robust accuracy of RUN on its val split, through cnnkit.api.evaluate (as `cnnkit evaluate`)."""
    row = {}
    for attack in ("fgsm", "pgd"):
        torch.manual_seed(seed)  # PGD's random start: the same draws on every run of the script
        m = api.evaluate(run, split="val", attack=attack, eps=eps)
        row.update(count=m["count"], clean=m["accuracy"], **{attack: m["robust_accuracy"]})
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", nargs="+", choices=("classic", "modern"), default=["classic"],
                    help="LeNet-5 variant(s); each is compared with itself (default: classic)")
    ap.add_argument("--adversarial", choices=("fgsm", "pgd"), default="fgsm", help="training attack")
    ap.add_argument("--adv-eps", type=float, default=0.1, help="training budget in pixel units (default 0.1)")
    ap.add_argument("--adv-steps", type=int, default=7, help="PGD steps in training (default 7)")
    ap.add_argument("--eps", type=float, default=0.1, help="evaluation budget in pixel units (default 0.1)")
    ap.add_argument("--epochs", type=int, default=8, help="training epochs of both models (the YAML says 8)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the split, the initialisation and the order")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "adversarial_mnist"),
                    help="folder of the run folders")
    ap.add_argument("--reuse", action="store_true", help="evaluate run folders already in --out, train the rest")
    ap.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = ap.parse_args()

    data = mnist_dir()
    if not has_mnist(data):
        print(f"SKIP: no MNIST under {data} (set CNNKIT_DATA)")
        return 0
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    how = f"{args.adversarial.upper()} ε={args.adv_eps:g}" + \
        (f", {args.adv_steps} steps" if args.adversarial == "pgd" else "")
    rows = []
    for variant in args.variant:
        for adversarial in (None, args.adversarial):
            name = f"{variant}-" + (f"{adversarial}{args.adv_eps:g}" if adversarial else "plain")
            seconds = train(out / name, data, variant, args, adversarial)
            row = {"model": f"{variant}, " + (f"adversarial ({how})" if adversarial else "plain"),
                   "variant": variant, "adversarial": adversarial, "run": str(out / name), "train_s": seconds,
                   **measure(out / name, args.eps, args.seed)}
            rows.append(row)
            took = "reused" if seconds is None else f"trained in {seconds:.0f} s"
            print(f"{row['model']}: clean {row['clean']:.2%}, FGSM {row['fgsm']:.2%}, PGD {row['pgd']:.2%}, {took}",
                  flush=True)

    n = rows[0]["count"]
    print(f"\nLeNet-5 on MNIST, val split ({n} images), {args.epochs} epochs, seed {args.seed}; "
          f"attacks at ε = {args.eps:g} in pixel units (PGD: 7 steps of 2.5ε/7, random start)\n")
    print(f"| model | clean acc | FGSM ε={args.eps:g} | PGD ε={args.eps:g} | training time |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        t = "reused" if r["train_s"] is None else f"{r['train_s']:.0f} s"
        print(f"| {r['model']} | {r['clean']:.2%} | {r['fgsm']:.2%} | {r['pgd']:.2%} | {t} |")
    print()
    for plain, adv in zip(rows[::2], rows[1::2]):
        print(f"{plain['variant']}: FGSM gain {100 * (adv['fgsm'] - plain['fgsm']):+.1f} points, "
              f"PGD gain {100 * (adv['pgd'] - plain['pgd']):+.1f} points")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
