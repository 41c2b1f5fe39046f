"""Segmentation accuracy runs of docs/benchmarks.md §10: each trains through cnnkit.api (as `cnnkit train --task
segment` does), then prints one JSON line with the val and test mIoU, pixel accuracy and the wall time.

    .venv/bin/python benchmarks/segmentation.py plants-unet          # synthetic-plants, U-Net from scratch
    .venv/bin/python benchmarks/segmentation.py peanut-unet peanut-fcn8s   # pretrained EfficientNet-Lite0 encoder
    .venv/bin/python benchmarks/segmentation.py peanut-scratch peanut-from-plants   # synthetic pretraining or not

Peanut (../shared/data/peanut, or $CNNKIT_DATA/peanut) is split by image, seeded: 80 % train, 10 % val (model
selection), 10 % locked test. Images are resized to 256×192 (longer side 256). Runs go to runs/bench-seg/NAME;
peanut-from-plants starts from plants-unet's model.pt (run plants-unet first).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from cnnkit import api
from cnnkit.config import load_config

ROOT = Path("runs/bench-seg")
PEANUT = Path(os.environ.get("CNNKIT_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")) / "peanut"
PLANTS = "synthetic-plants:size=128,count=600,seed=0"
OWN_UNET = {"base": 16}  # the classic U-Net, narrower (16 → 256 channels), 4 poolings
PRETRAINED = "efficientnet_lite0.imagenet"

RUNS = {
    "plants-unet": {"data": PLANTS, "model": "unet", "options": OWN_UNET, "size": 128, "epochs": 8, "batch": 16,
                    "lr": 3e-3},
    "peanut-unet": {"data": PEANUT, "model": "unet", "options": {"backbone": PRETRAINED}, "size": 256, "epochs": 6,
                    "batch": 8, "lr": 1e-3},
    "peanut-fcn8s": {"data": PEANUT, "model": "fcn8s", "options": {"backbone": PRETRAINED}, "size": 256,
                     "epochs": 6, "batch": 8, "lr": 1e-3},
    "peanut-scratch": {"data": PEANUT, "model": "unet", "options": OWN_UNET, "size": 256, "epochs": 6, "batch": 8,
                       "lr": 3e-3},
    "peanut-from-plants": {"data": PEANUT, "model": "unet", "options": OWN_UNET, "size": 256, "epochs": 6,
                           "batch": 8, "lr": 3e-3, "weights": ROOT / "plants-unet" / "model.pt"},
}


def run(name: str) -> dict:
    spec = RUNS[name]
    if spec["data"] == PEANUT and not PEANUT.is_dir():
        return {"run": name, "skipped": f"{PEANUT} not found"}
    cfg = load_config(overrides={
        "task": "segment", "out": str(ROOT / name),
        "data": {"source": str(spec["data"]), "image_size": spec["size"], "val": 0.1, "test": 0.1,
                 "augment": "light"},
        "model": {"name": spec["model"], "options": spec["options"],
                  "weights": str(spec["weights"]) if "weights" in spec else None},
        "train": {"epochs": spec["epochs"], "batch_size": spec["batch"], "lr": spec["lr"], "optimizer": "adamw",
                  "schedule": "cosine", "seed": 0}})
    start = time.perf_counter()
    result = api.train(cfg)
    seconds = time.perf_counter() - start
    test = api.test(result.run_dir)
    return {"run": name, "seconds": round(seconds), "epochs": len(result.history),
            "val_miou": round(result.val["miou"], 4), "test_miou": round(test["miou"], 4),
            "test_pixel_accuracy": round(test["pixel_accuracy"], 4),
            "test_per_class_iou": {k: None if v is None else round(v, 4) for k, v in test["per_class_iou"].items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", choices=sorted(RUNS))
    for name in parser.parse_args().runs:
        print(json.dumps(run(name)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
