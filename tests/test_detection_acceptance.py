"""Issue 7's acceptance on the built-in synthetic detection set: Faster R-CNN and the YOLO-style detector each
reach mAP@0.5 ≥ 0.9 on the val split, on a CPU (their times, 4–8 minutes each on 2 cores, are measured in
docs/benchmarks.md §9, not here). Slow: run with `make test-slow`; the recipes are those of docs/detection.md."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit import api
from cnnkit.cli.app import main

DATA = ["--task", "detect", "--data", "synthetic-shapes:count=3,n=400", "--image-size", "128"]
RECIPES = {
    "faster_rcnn": ["--model", "faster_rcnn", "--optimizer", "adamw", "--lr", "3e-4", "--batch-size", "4",
                    "--epochs", "4"],
    "yolo": ["--model", "yolo", "--model-option", "head=anchor-free", "--optimizer", "adamw", "--lr", "1e-3",
             "--batch-size", "8", "--epochs", "15", "--augment", "light"],
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_detector_reaches_map50_of_0_9_on_synthetic_shapes(name: str, tmp_path: Path) -> None:
    out = tmp_path / name
    assert main(["-q", "train", *DATA, *RECIPES[name], "--out", str(out)]) == 0
    metrics = api.evaluate(out)
    assert metrics["map50"] >= 0.9, metrics
