"""Structured pruning of a ResNet-20 on digits: parameters, FLOPs, measured CPU latency and val accuracy per
sparsity (docs/benchmarks.md §19, issue 19 item 6).

Trains ResNet-20 on the built-in `digits` (1,797 8×8 scans, resized to 32×32) through cnnkit.api.train, then
`cnnkit.api.prune(run, [0.25, 0.5], structured=True, criterion=..., finetune_epochs=..., residual=...)` twice:
`residual=False` (inner: the fraction of each BasicBlock's conv1 filters with the smallest L1 norm is removed)
and `residual=True` (groups: the residual width of each stage too, as one dependency group), each model rebuilt
smaller, fine-tuned with the run's config and saved as a run folder. Latency is the median of 100 forward
passes after 10 warm-up ones (torch.inference_mode, eval mode, BN folded into the convs as `predict` runs it,
CPU), all models timed round-robin in this process, at batch 1 and at `--batch`. Accuracy is on the val split
(the test split stays locked).

    .venv/bin/python benchmarks/structured_pruning.py [--epochs 8] [--finetune-epochs 3] [--criterion l1]
        [--threads 2] [--batch 16] [--out benchmarks/out/structured_pruning]
        [--data synthetic-shapes:n=1200,size=64 --image-size 64]
"""
from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import torch

from cnnkit import api
from cnnkit.config import load_config
from cnnkit.experiments.structured import latencies_ms
from cnnkit.runs.folder import load_model


def _train(out: Path, epochs: int, data: str, size: int) -> Path:
    cfg = load_config(overrides={"data": {"source": data, "image_size": size}, "model": {"name": "resnet20"},
                                 "train": {"epochs": epochs, "batch_size": 64, "lr": 0.003, "schedule": "cosine",
                                           "seed": 0},
                                 "out": str(out)})
    return api.train(cfg).run_dir


def _table(rows: list[dict], batch: int) -> str:
    head = (f"| variant | sparsity | params | MFLOPs | latency b1 (ms) | speed-up b1 | latency b{batch} (ms) "
            f"| speed-up b{batch} | val acc before ft | val acc after ft |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        label = "unpruned" if r is rows[0] else f"{r['sparsity_target']:.2f}"
        lines.append(f"| {r['variant']} | {label} | {r['params']:,} | {r['flops'] / 1e6:.1f} | {r['latency_ms']:.2f} | "
                     f"{r['speedup']:.2f}× | {r['latency_b']:.2f} | {r['speedup_b']:.2f}× | "
                     f"{r['val_accuracy_before_ft']:.4f} | {r['val_accuracy']:.4f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--criterion", choices=("l1", "bn"), default="l1")
    p.add_argument("--sparsity", default="0.25,0.5")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--out", default="benchmarks/out/structured_pruning")
    p.add_argument("--data", default="digits", help="a classification source, e.g. synthetic-shapes:n=1200,size=64")
    p.add_argument("--image-size", type=int, default=32, help="the input size it trains, prunes and is timed at")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    start = time.perf_counter()
    run = _train(Path(a.out) / "resnet20", a.epochs, a.data, a.image_size)
    rows = []
    for variant, residual in (("inner", False), ("groups", True)):
        got = api.prune(run, [float(s) for s in a.sparsity.split(",")], structured=True, criterion=a.criterion,
                        finetune_epochs=a.finetune_epochs, latency_batch=1, residual=residual,
                        out=Path(a.out) / f"pruned_{variant}")
        rows += [dict(r, variant="-" if r is got[0] else variant) for r in (got if not rows else got[1:])]
    channels = load_model(run)[1].input_size[0]
    models = [load_model(r["run"])[0] for r in rows]  # all variants timed together, round-robin
    for batch, key in ((1, "latency_ms"), (a.batch, "latency_b")):
        for r, ms in zip(rows, latencies_ms(models, [batch, channels, a.image_size, a.image_size])):
            r[key] = ms
    for r in rows:
        r["speedup"], r["speedup_b"] = rows[0]["latency_ms"] / r["latency_ms"], rows[0]["latency_b"] / r["latency_b"]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
          f", {time.perf_counter() - start:.0f} s in all")
    print(_table(rows, a.batch))


if __name__ == "__main__":
    main()
