"""Issue 8's acceptance on synthetic-plants: the U-Net of docs/segmentation.md reaches val mIoU ≥ 0.85 on a
CPU (its time, about 6 minutes on 2 cores, is measured in docs/benchmarks.md §10, not here). Slow: run with
`make test-slow`; the recipe is benchmarks/segmentation.py's plants-unet."""
from __future__ import annotations

from pathlib import Path

import pytest

from cnnkit import api
from cnnkit.cli.app import main

RECIPE = ["--task", "segment", "--data", "synthetic-plants:size=128,count=600,seed=0", "--image-size", "128",
          "--model", "unet", "--model-option", "base=16", "--optimizer", "adamw", "--lr", "3e-3",
          "--batch-size", "16", "--epochs", "8", "--augment", "light", "--val", "0.1", "--test", "0.1"]


@pytest.mark.slow
def test_unet_reaches_miou_of_0_85_on_synthetic_plants(tmp_path: Path) -> None:
    out = tmp_path / "plants"
    assert main(["-q", "train", *RECIPE, "--out", str(out)]) == 0
    metrics = api.evaluate(out)
    assert metrics["miou"] >= 0.85, metrics
