"""The label audit: how the out-of-fold model is chosen, flipped labels ranked first by both methods, the
multilabel path, and regression refused in one line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnkit.audit.labels import choose_method, item_name, label_audit, longest_side
from cnnkit.config import Config
from cnnkit.data.builtin import open_source
from cnnkit.data.sources import from_folder
from cnnkit.errors import CnnkitError
from cnnkit.recipes import recipe_for


def _flip(source, fraction: float, seed: int = 0) -> np.ndarray:
    """Move `fraction` of the labels to another class; the mask of the moved ones."""
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(source)) < fraction
    k = len(source.classes)
    source.labels = np.where(flipped, (source.labels + rng.integers(1, k, len(source))) % k, source.labels)
    return flipped


def test_the_method_follows_the_image_size(tmp_path: Path) -> None:
    digits = open_source("digits")
    assert longest_side(digits) == 8 and choose_method(digits, "auto") == "scratch"
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (120, 90), (10, 200, 30)).save(tmp_path / cls / "x.png")
    photos = from_folder(tmp_path)
    assert longest_side(photos) == 120 and choose_method(photos, "auto") == "probe"
    assert choose_method(photos, "scratch") == "scratch"
    assert item_name(photos, 0).endswith("x.png") and item_name(digits, 5) == "#5"
    with pytest.raises(CnnkitError, match="audit method"):
        choose_method(photos, "forest")


def test_scratch_ranks_flipped_digits_first(tmp_path: Path) -> None:
    cfg = Config()
    cfg.train.epochs, cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size = 4, "adam", 0.003, 32
    recipe = recipe_for("auto")
    source = recipe.open_source(cfg)
    flipped = _flip(source, 0.08)
    split, _ = recipe.new_split(cfg, source)
    result = label_audit(recipe, cfg, source, split, folds=3, method="scratch", work=tmp_path)
    pool = np.concatenate([split["train"], split["val"]])
    top = [row["index"] for row in result.rows[: flipped[pool].sum()]]
    # chance would give 8%: the flips are found far above it even by a small model trained for seconds
    assert flipped[top].mean() > 0.5, flipped[top].mean()
    assert result.method == "scratch" and result.features is None
    assert 0.02 < result.noise["estimated_rate"] < 0.3


def test_multilabel_probe_and_regression_refused(tmp_path: Path) -> None:
    cfg = Config()
    cfg.data.source = "synthetic-shapes:n=48,size=32,count=2,target=labels"
    recipe = recipe_for("multilabel")
    source = recipe.open_source(cfg)
    split, _ = recipe.new_split(cfg, source)
    result = label_audit(recipe, cfg, source, split, folds=2, method="probe", work=tmp_path)
    assert result.features.shape[0] == len(source)
    assert len(result.rows) == len(split["train"]) + len(split["val"])
    assert all(set(r["given_label"].split(";")) <= set(source.classes) | {""} for r in result.rows)
    regression = open_source("synthetic-shapes:n=20,size=32,target=geometry")
    with pytest.raises(CnnkitError, match="regression"):
        label_audit(recipe_for("regression"), cfg, regression, {"train": np.arange(10), "val": np.arange(10, 15)},
                    work=tmp_path)
