"""Accuracy parity and end-to-end wall time of `--precision auto` against `--precision fp32` (issue 15, item 2).

    .venv/bin/python benchmarks/parity.py                      # all four runs, fp32 then auto, same seed
    .venv/bin/python benchmarks/parity.py mnist hymenoptera    # some of them
    .venv/bin/python benchmarks/parity.py pennfudan --seeds 0,1,2   # the run-to-run spread: one pair per seed

Each run is the whole `cnnkit train` process (start-up, data, training, the verdict, the report), timed from
outside; then `cnnkit evaluate RUN --json` (not timed) reads the saved model's val metric. Both precisions use
the same seed and the same split. With `--seeds`, one fp32/auto pair per seed (the seed also draws the
split, so the spread across seeds is what a user sees from one run to the next). One JSON line per run,
then a table. The real data sets are read from
../shared/data (or $CNNKIT_DATA); a missing one is skipped with its reason. Runs go to runs/bench-parity/.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CNNKIT_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "runs" / "bench-parity"
CLI = [sys.executable, "-m", "cnnkit"]

# name → (data folder, `cnnkit train` flags, the val metric compared, its scale for "points")
RUNS = {
    "mnist": ("mnist", ["--config", "benchmarks/mnist_lenet5.yaml", "--data", "mnist:{data}"], "accuracy"),
    "hymenoptera": ("hymenoptera", ["--data", "{data}", "--model", "efficientnet_lite0.imagenet",
                                    "--strategy", "fine-tune", "--epochs", "3"], "accuracy"),
    "pennfudan": ("pennfudan", ["--task", "detect", "--data", "{data}", "--image-size", "384", "--val", "0.1",
                                "--test", "0.1", "--batch-size", "4", "--epochs", "6", "--augment", "light",
                                "--model", "faster_rcnn", "--model-option", "backbone=efficientnet_lite0.imagenet",
                                "--optimizer", "adamw", "--lr", "3e-4"], "map50"),
    "peanut": ("peanut", ["--task", "segment", "--data", "{data}", "--model", "unet", "--model-option", "base=16",
                          "--image-size", "256", "--val", "0.1", "--test", "0.1", "--batch-size", "8",
                          "--epochs", "6", "--augment", "light", "--optimizer", "adamw", "--lr", "3e-3"], "miou"),
}


def one(name: str, precision: str, seed: int = 0) -> dict:
    folder, flags, metric = RUNS[name]
    data = DATA / folder
    if not data.is_dir():
        return {"run": name, "precision": precision, "seed": seed, "skipped": f"{data} not found"}
    out = OUT / (f"{name}-{precision}" + (f"-s{seed}" if seed else ""))
    env = {k: v for k, v in os.environ.items() if k != "CNNKIT_PRECISION"}  # auto means the hardware's choice
    args = [a.replace("{data}", str(data)) for a in flags]
    start = time.perf_counter()
    done = subprocess.run(CLI + ["-q", "train", *args, "--precision", precision, "--seed", str(seed),
                                 "--out", str(out)], cwd=ROOT,
                          env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        return {"run": name, "precision": precision, "seed": seed, "failed": done.stderr.strip().splitlines()[-1:]}
    evaluated = subprocess.run(CLI + ["evaluate", str(out), "--json", "--precision", "fp32"], cwd=ROOT, env=env,
                               capture_output=True, text=True, check=True)
    metrics = json.loads(evaluated.stdout)
    config = (out / "config.yaml").read_text()
    resolved = next((line.split(":")[1].strip() for line in config.splitlines() if "precision:" in line), "?")
    return {"run": name, "precision": precision, "seed": seed, "resolved": resolved, "wall_s": round(wall, 1),
            "metric": metric, "val": round(float(metrics[metric]), 4), "val_count": metrics.get("count")}


def measured(name: str, precision: str, seed: int) -> dict:
    """A run already in runs/bench-parity, evaluated again (its wall time is not known: 0)."""
    out = OUT / (f"{name}-{precision}" + (f"-s{seed}" if seed else ""))
    if not (out / "model.pt").is_file():
        return {"run": name, "precision": precision, "seed": seed, "skipped": f"{out} not found"}
    env = {k: v for k, v in os.environ.items() if k != "CNNKIT_PRECISION"}
    evaluated = subprocess.run(CLI + ["evaluate", str(out), "--json", "--precision", "fp32"], cwd=ROOT, env=env,
                               capture_output=True, text=True, check=True)
    metric = RUNS[name][2]
    return {"run": name, "precision": precision, "seed": seed, "resolved": precision, "wall_s": 0.0,
            "metric": metric, "val": round(float(json.loads(evaluated.stdout)[metric]), 4)}


def table(rows: list[dict]) -> str:
    lines = ["| run | seed | metric | fp32 val | auto val | Δ (points) | fp32 wall | auto wall | auto ÷ fp32 |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for name, seed in dict.fromkeys((r["run"], r.get("seed", 0)) for r in rows):
        pair = {r["precision"]: r for r in rows if r["run"] == name and r.get("seed", 0) == seed and "val" in r}
        if len(pair) < 2:
            continue
        a, b = pair["fp32"], pair["auto"]
        lines.append(f"| {name} | {seed} | {a['metric']} | {a['val']:.4f} | {b['val']:.4f} | "
                     f"{100 * (b['val'] - a['val']):+.2f} | {a['wall_s']:.0f} s | "
                     f"{b['wall_s']:.0f} s ({b['resolved']}) | {b['wall_s'] / a['wall_s'] if a['wall_s'] else 0:.2f} |")
    return "\n".join(lines + spread(rows))


def spread(rows: list[dict]) -> list[str]:
    """Per run over several seeds: the range of each precision's val metric and the mean paired Δ."""
    out = []
    for name in dict.fromkeys(r["run"] for r in rows):
        vals = {p: {r.get("seed", 0): r["val"] for r in rows if r["run"] == name and r["precision"] == p and "val" in r}
                for p in ("fp32", "auto")}
        seeds = sorted(set(vals["fp32"]) & set(vals["auto"]))
        if len(seeds) < 2:
            continue
        deltas = [100 * (vals["auto"][s] - vals["fp32"][s]) for s in seeds]
        ranges = {p: 100 * (max(v.values()) - min(v.values())) for p, v in vals.items()}
        out.append(f"\n{name} over seeds {seeds}: fp32 spread {ranges['fp32']:.1f} points, auto spread "
                   f"{ranges['auto']:.1f} points; mean Δ auto − fp32 {sum(deltas) / len(deltas):+.2f} points")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=f"some of {', '.join(RUNS)} (default: all)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one fp32/auto pair each (default 0)")
    parser.add_argument("--precisions", default="fp32,auto",
                        help="which of the pair to (re)run; the other is read from runs/bench-parity")
    args = parser.parse_args()
    names, seeds = args.runs or list(RUNS), [int(s) for s in args.seeds.split(",")]
    unknown = [n for n in names if n not in RUNS]
    if unknown:
        parser.error(f"unknown run {unknown[0]!r}; choose from {', '.join(RUNS)}")
    print(f"load average at start: {os.getloadavg()}", flush=True)
    rows = []
    for name in names:
        for seed in seeds:
            for precision in ("fp32", "auto"):
                rows.append(one(name, precision, seed) if precision in args.precisions.split(",")
                            else measured(name, precision, seed))
                print(json.dumps(rows[-1]), flush=True)
    print(f"load average at end: {os.getloadavg()}")
    print(table(rows))


if __name__ == "__main__":
    main()
