"""Cross-fitting: folds partition the pool (stratified), a fold's model never trains on its held-out items, and
the probe's out-of-fold probabilities equal scikit-learn's cross_val_predict."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnkit.audit.crossfit import fit_fold, fold_parts, probe_probabilities
from cnnkit.config import Config
from cnnkit.errors import CnnkitError
from cnnkit.recipes import recipe_for


def test_folds_partition_the_pool_and_are_stratified() -> None:
    labels = np.repeat([0, 1, 2], [30, 60, 90])
    pool = np.arange(0, 180, 1)[::-1][:150]
    parts = fold_parts(pool, labels, k=5, seed=3)
    assert len(parts) == 5
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == sorted(pool.tolist()) and len(set(joined.tolist())) == len(pool)
    for c in range(3):
        counts = [int((labels[p] == c).sum()) for p in parts]
        assert max(counts) - min(counts) <= 1
    with pytest.raises(CnnkitError, match="between 2"):
        fold_parts(pool, labels, k=1)


def test_probe_probabilities_equal_cross_val_predict() -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import PredefinedSplit, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 120)
    x = rng.normal(0, 1, (120, 5)) + y[:, None]
    parts = fold_parts(np.arange(120), y, k=4, seed=0)
    ours = probe_probabilities(x, y, parts, {i: i for i in range(120)}, 3)
    fold = np.zeros(120, dtype=int)
    for f, p in enumerate(parts):
        fold[p] = f
    ref = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.5, random_state=0)),
                            x, y, cv=PredefinedSplit(fold), method="predict_proba")
    np.testing.assert_allclose(ours, ref[np.concatenate(parts)], atol=1e-6)


def test_a_fold_trains_on_its_items_only(tmp_path: Path) -> None:
    cfg = Config()
    cfg.data.source, cfg.train.epochs = "digits", 1
    recipe = recipe_for("auto")
    source = recipe.open_source(cfg)
    train = np.arange(0, 600)
    model, card = fit_fold(recipe, cfg, source, train, tmp_path / "fold1")
    import json

    record = json.loads((tmp_path / "fold1" / "split.json").read_text())
    assert record["splits"]["train"]["count"] == 600 and record["splits"]["val"]["count"] == 0
    assert card.classes == source.classes and (tmp_path / "fold1" / "model.pt").is_file()
