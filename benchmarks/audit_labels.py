"""Label noise found by `cnnkit audit` (issue 17's acceptance): flip 5% of the labels in a fixed, seeded
pattern, audit the noisy copy with the CLI, and score the top-ranked 5% of relabel.csv against the flips.

    .venv/bin/python benchmarks/audit_labels.py                  # MNIST uniform and class-conditional, hymenoptera
    .venv/bin/python benchmarks/audit_labels.py mnist-uniform    # one of them

- mnist-uniform: 5% of the 60,000 training labels moved to another class drawn uniformly;
- mnist-pairs: class-conditional: 5% of each class moved to its look-alike (PAIRS, e.g. 4 → 9, 7 → 1);
- hymenoptera: 5% of the photos (train/ and val/) moved to the other class's folder (symlinks).
The audit runs `cnnkit audit DATA --out DIR` as a user would (auto: MNIST from scratch with LeNet-5 over 5
folds, the photos with the EfficientNet-Lite0 probe), timed from outside. Precision and recall are counted over
the audited items (train + val; the locked test split is not audited): of the first 5% of relabel.csv's rows
(5% of the audited items), the share that are flips (precision) and the share of the audited flips they hold
(recall). The real data sets are read from ../shared/data (or $CNNKIT_DATA). Work goes to runs/bench-audit/.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CNNKIT_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "runs" / "bench-audit"
CLI = [sys.executable, "-m", "cnnkit"]
NOISE, SEED = 0.05, 0
PAIRS = {0: 6, 1: 7, 2: 7, 3: 8, 4: 9, 5: 6, 6: 5, 7: 1, 8: 3, 9: 4}  # class-conditional flips to look-alikes
MNIST_FLAGS = ["--model", "lenet5", "--resize", "pad", "--image-size", "32", "--epochs", "4", "--batch-size", "256",
               "--optimizer", "adam", "--lr", "0.003"]


def _flip(labels: np.ndarray, pairs: bool, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped mask): NOISE of the items, seeded; to a look-alike or another class at random."""
    rng = np.random.default_rng(SEED)
    flipped = np.zeros(len(labels), dtype=bool)
    flipped[rng.choice(len(labels), round(NOISE * len(labels)), replace=False)] = True
    other = np.array([PAIRS[int(y)] for y in labels]) if pairs else (labels + rng.integers(1, k, len(labels))) % k
    return np.where(flipped, other, labels), flipped


def noisy_mnist(pairs: bool) -> tuple[str, set[str]]:
    """A copy of MNIST with flipped training labels: (the data string, the ids of the flipped items)."""
    folder = OUT / ("mnist-pairs" if pairs else "mnist-uniform") / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        shutil.copy(DATA / "mnist" / f"{name}.gz", folder / f"{name}.gz")
    with gzip.open(DATA / "mnist" / "train-labels-idx1-ubyte.gz") as f:
        raw = f.read()
    labels = np.frombuffer(raw[8:], dtype=np.uint8).astype(np.int64)
    noisy, flipped = _flip(labels, pairs, 10)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz", "wb") as f:
        f.write(raw[:8] + noisy.astype(np.uint8).tobytes())
    return f"mnist:{folder}", {f"#{i}" for i in np.flatnonzero(flipped)}


def noisy_hymenoptera() -> tuple[str, set[str]]:
    """A copy of hymenoptera (symlinks) with NOISE of its photos in the other class's folder."""
    root = OUT / "hymenoptera" / "data"
    shutil.rmtree(root, ignore_errors=True)
    files = sorted(p for p in (DATA / "hymenoptera").glob("*/*/*") if p.is_file())
    classes = sorted({p.parent.name for p in files})
    labels = np.array([classes.index(p.parent.name) for p in files])
    noisy, flipped = _flip(labels, False, len(classes))
    names = set()
    for path, y, was_flipped in zip(files, noisy, flipped):
        link = root / path.parent.parent.name / classes[y] / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path)
        if was_flipped:
            names.add(str(link))
    return str(root), names


def score(out: Path, flips: set[str]) -> dict:
    """Precision and recall of relabel.csv's first 5% rows against the flipped items that were audited."""
    with (out / "relabel.csv").open() as f:
        rows = list(csv.DictReader(f))
    audited = {r["path"] for r in rows}
    top = [r["path"] for r in rows[: round(NOISE * len(rows))]]
    hits = sum(p in flips for p in top)
    flagged = json.loads((out / "audit.json").read_text())["label_issues"]
    return {"audited": len(rows), "flipped_audited": len(flips & audited), "top": len(top),
            "precision": hits / max(len(top), 1), "recall": hits / max(len(flips & audited), 1),
            "flagged": len(flagged),
            "flagged_precision": sum(r["path"] in flips for r in flagged) / max(len(flagged), 1)}


def run(name: str) -> dict:
    data, flips = noisy_hymenoptera() if name == "hymenoptera" else noisy_mnist(name == "mnist-pairs")
    out = OUT / name / "audit"
    flags = [] if name == "hymenoptera" else MNIST_FLAGS
    start = time.perf_counter()
    subprocess.run(CLI + ["-q", "audit", data, "--out", str(out), *flags], check=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    return {"name": name, "seconds": round(seconds, 1), **score(out, flips)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", default=["mnist-uniform", "mnist-pairs", "hymenoptera"])
    args = parser.parse_args()
    needed = {"hymenoptera": "hymenoptera"}
    results = []
    for name in args.names:
        if not (DATA / needed.get(name, "mnist")).is_dir():
            print(f"skip {name}: {DATA / needed.get(name, 'mnist')} not found (set CNNKIT_DATA)")
            continue
        results.append(run(name))
        print(json.dumps(results[-1]), flush=True)
    print(f"\n{'data':15} {'audited':>8} {'flips':>6} {'top 5%':>7} {'precision':>9} {'recall':>7} {'time':>7}")
    for r in results:
        print(f"{r['name']:15} {r['audited']:8d} {r['flipped_audited']:6d} {r['top']:7d} {r['precision']:9.3f} "
              f"{r['recall']:7.3f} {r['seconds']:6.0f}s")


if __name__ == "__main__":
    main()
