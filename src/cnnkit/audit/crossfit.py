"""Out-of-sample predictions by K-fold cross-fitting: every audited item is predicted by a model that never saw
its label. Confident learning (Northcutt et al. 2021, §2) needs exactly that: in-sample probabilities of a
model that memorised a wrong label would agree with the wrong label.

Two ways to get them for classification, and the same fold machinery for detection and segmentation:

- `probe`: pretrained embeddings (ImageNet EfficientNet-Lite0, or any named weights) once for every item, then
  a logistic regression cross-fitted on them (scikit-learn's `cross_val_predict`). Minutes on photos.
- `scratch`: the run's own recipe trains a small model from scratch on K − 1 folds and predicts the K-th, K
  times (`fit_fold`, a normal run folder per fold under the audit's work folder, without val or report).

    parts = fold_parts(pool, labels, k=5, seed=0)        # K held-out index arrays that partition `pool`
    model, card = fit_fold(recipe, cfg, source, train=np.setdiff1d(pool, parts[0]), folder=work / "fold1")
"""
from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.errors import CnnkitError

log = logging.getLogger("cnnkit")
DEFAULT_EMBEDDER = "efficientnet_lite0.imagenet"


def fold_parts(pool: np.ndarray, labels: np.ndarray | None, k: int, seed: int = 0) -> list[np.ndarray]:
    """K disjoint, sorted parts of the indices `pool` that cover it: stratified by `labels` (indexed like the
    source) where every class has at least K items, otherwise at random (seeded)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    pool = np.asarray(pool, dtype=np.int64)
    if not 2 <= k <= len(pool):
        raise CnnkitError(f"--folds must be between 2 and the {len(pool)} audited items, got {k}")
    y = None if labels is None else np.asarray(labels)[pool]
    stratify = y is not None and np.unique(y, return_counts=True)[1].min() >= k
    splitter = StratifiedKFold(k, shuffle=True, random_state=seed) if stratify else KFold(k, shuffle=True,
                                                                                          random_state=seed)
    return [np.sort(pool[held]) for _, held in splitter.split(pool, y if stratify else None)]


def fit_fold(recipe: Any, cfg: Config, source: Any, train: np.ndarray, folder: Path) -> tuple[torch.nn.Module, Any]:
    """Train `cfg` with `recipe` on the indices `train` into the run folder `folder` (no val split, so the last
    epoch is kept; no report) and return its (model, card). Ctrl-C stops the audit."""
    from cnnkit.recipes.base import Context
    from cnnkit.recipes.runner import fit, model_train_defaults
    from cnnkit.runs.folder import load_model

    split = {"train": np.asarray(train, dtype=np.int64), "val": np.empty(0, dtype=np.int64)}
    fold_cfg = replace(cfg, out=str(folder), train=model_train_defaults(cfg.model.name, cfg.train))  # as `train`
    card = recipe.card(fold_cfg, source, split)
    record = recipe.split_record(fold_cfg, source, {**split, "test": np.empty(0, dtype=np.int64)})
    result = fit(recipe, Context(fold_cfg, source, split, card, Path(folder), record, report=False))
    if result.interrupted:
        raise KeyboardInterrupt
    return load_model(folder)


def scratch_probabilities(recipe: Any, cfg: Config, source: Any, parts: list[np.ndarray], work: Path
                          ) -> np.ndarray:
    """(N, K) out-of-fold class probabilities for the items of `parts` (rows in the order of
    np.concatenate(parts)), each part predicted by a model trained from scratch on the other parts."""
    from cnnkit.diagnose.classification import RunSplit, predictions_of

    pool = np.concatenate(parts)
    probs: list[np.ndarray] = []
    for i, held in enumerate(parts):
        log.info("audit: fold %d of %d, training on %d items", i + 1, len(parts), len(pool) - len(held))
        model, card = fit_fold(recipe, cfg, source, np.setdiff1d(pool, held), work / f"fold{i + 1}")
        probs.append(predictions_of(RunSplit(model, card, source, held, "audit")).probs.numpy())
    return np.concatenate(probs).astype(np.float64)


def embeddings(source: Any, indices: np.ndarray, weights: str = DEFAULT_EMBEDDER, batch_size: int = 64
               ) -> np.ndarray:
    """(n, F) pooled features of the items `indices` from the pretrained `weights` (their own preprocessing:
    size, resize, mean and std), in eval mode; grey images are repeated to three channels."""
    from cnnkit.data.loader import make_loader
    from cnnkit.engine.inference import for_inference
    from cnnkit.models.factory import get_spec
    from cnnkit.models.stages import capture_input, last_linears
    from cnnkit.runs.folder import open_model

    model, card = open_model(weights)
    c, s, _ = card.input_size
    loader = make_loader(source, indices, channels=c, size=s, resize=card.resize, mean=card.mean, std=card.std,
                         batch_size=batch_size, interpolation=card.interpolation)
    layer = last_linears(model, get_spec(card.architecture))[0]
    fast, mode = for_inference(model, "auto")
    with torch.inference_mode(), mode.autocast(), capture_input(fast.get_submodule(layer)) as seen:
        for batch in loader:
            fast(mode.input(batch.images.to(mode.device)))
    return torch.cat([x.float().cpu() for x in seen]).numpy()  # (n, F)


def probe_probabilities(features: np.ndarray, labels: np.ndarray, parts: list[np.ndarray], pool_index: dict,
                        num_classes: int, seed: int = 0) -> np.ndarray:
    """(N, K) out-of-fold probabilities of a standardised logistic regression on `features` (rows indexed by
    `pool_index[item]`), fitted on K − 1 parts and predicting the K-th, rows in np.concatenate(parts) order.
    `labels` (N_all,) class indices, or (N_all, K) multi-hot: then one regression per class."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pool = np.concatenate(parts)
    out = np.zeros((len(pool), num_classes))
    start = 0
    for held in parts:
        train = np.setdiff1d(pool, held)
        rows = [pool_index[int(i)] for i in train]
        linear = LogisticRegression(max_iter=2000, C=0.5, random_state=seed)
        if labels.ndim == 2:
            probe = make_pipeline(StandardScaler(), OneVsRestClassifier(linear))
            probe.fit(features[rows], labels[train] > 0.5)
            seen = np.arange(num_classes)
        else:
            probe = make_pipeline(StandardScaler(), linear).fit(features[rows], labels[train])
            seen = probe[-1].classes_
        out[start:start + len(held), seen] = probe.predict_proba(features[[pool_index[int(i)] for i in held]])
        start += len(held)
    return out
