"""Magnitude pruning of LeNet-5 on MNIST: accuracy at 0, 50, 80 and 90 % global sparsity, before and after
a 1-epoch fine-tune with the masks kept (pruned weights stay zero).

Trains LeNet-5 with benchmarks/mnist_lenet5.yaml (fewer epochs: --epochs, default 3) through cnnkit.api.train,
then for each target sparsity prunes a copy of the trained model (global L1-magnitude, all Conv/Linear
weights), evaluates it on the run's **val** split (the test split stays locked), fine-tunes one epoch on
the training split (same preprocessed tensors as training: the run's model card and loader), and evaluates
again. Prints a markdown table. MNIST is read from $CNNKIT_DATA/mnist, or ../shared/data/mnist beside the
repository; without it the script prints SKIP and exits 0.

    .venv/bin/python benchmarks/pruning_mnist.py [--epochs 3] [--ft-lr 0.001] [--out /tmp/pruning_mnist]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml
from shared_data import ROOT, mnist_dir  # benchmarks/ is on sys.path when run as a script

from cnnkit import api
from cnnkit.config import config_from_dict, load_config
from cnnkit.data.builtin import open_source
from cnnkit.data.loader import run_loader
from cnnkit.data.split import indices_from_record
from cnnkit.engine import optimizers
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.models.prune import sparsity_table
from cnnkit.runs.folder import load_model, run_file
from cnnkit.tasks.classification import ClassificationTask


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3, help="training epochs (the YAML says 8)")
    ap.add_argument("--ft-lr", type=float, default=1e-3, help="learning rate of the 1-epoch fine-tune (Adam)")
    ap.add_argument("--amounts", type=float, nargs="+", default=[0.0, 0.5, 0.8, 0.9])
    ap.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = ap.parse_args()

    data = mnist_dir()
    if not (data / "train-images-idx3-ubyte.gz").is_file() and not (data / "train-images-idx3-ubyte").is_file():
        print(f"SKIP: no MNIST under {data} (set CNNKIT_DATA)")
        return 0
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="pruning_mnist-")) / "run"

    t0 = time.perf_counter()
    cfg = load_config(path=ROOT / "benchmarks" / "mnist_lenet5.yaml",
                      overrides={"data": {"source": f"mnist:{data}"}, "out": str(out)})
    result = api.train(cfg, epochs=args.epochs)
    print(f"trained {args.epochs} epoch(s) in {time.perf_counter() - t0:.0f} s; val {result.val}", flush=True)

    # the run's data contract, as `cnnkit evaluate` reads it (cnnkit.recipes.runner.open_split)
    model, card = load_model(result.run_dir)
    cfg = config_from_dict(yaml.safe_load(run_file(result.run_dir, "config.yaml").read_text()))
    record = json.loads(run_file(result.run_dir, "split.json").read_text())
    source = open_source(cfg.data.source, cfg.data.max_bad_fraction)
    train_idx = indices_from_record(source, record, "train")
    val_idx = indices_from_record(source, record, "val")
    train_loader = run_loader(source, train_idx, card, cfg, train=True)
    val_loader = run_loader(source, val_idx, card, cfg, train=False)

    def evaluate(m) -> float:
        trainer = Trainer(ClassificationTask(m, cfg.train.loss), None, epochs=1, device=cfg.train.device)
        return trainer.evaluate(val_loader)["accuracy"]

    def fine_tune(m) -> None:
        seed_everything(cfg.train.seed)
        opt = optimizers.get(cfg.train.optimizer, m.parameters(), lr=args.ft_lr)  # weight_orig; the mask stays
        Trainer(ClassificationTask(m, cfg.train.loss), opt, epochs=1, device=cfg.train.device,
                seed=cfg.train.seed).fit(train_loader)

    t1 = time.perf_counter()
    rows = sparsity_table(model, args.amounts, evaluate, fine_tune)
    print(f"pruning + fine-tuning took {time.perf_counter() - t1:.0f} s "
          f"(train {len(train_idx)}, val {len(val_idx)} images)\n")
    print("| target sparsity | achieved sparsity | val accuracy, pruned | val accuracy, after 1-epoch fine-tune |")
    print("|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['sparsity_target']:.0%} | {r['sparsity']:.2%} | {r['accuracy_before_ft']:.2%} "
              f"| {r['accuracy']:.2%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
