"""The label audit of a classification set (single-label or multilabel): out-of-fold probabilities for every
item of the train and val splits (`cnnkit.audit.crossfit`), then confident learning (`cnnkit.audit.confident`).

The model behind the probabilities is `method`:
- "probe": a logistic regression on pretrained embeddings (ImageNet EfficientNet-Lite0 by default), the faster
  for photos: one forward pass per image, then seconds of scikit-learn;
- "scratch": the run's own model (LeNet-5 by default) trained from scratch K times, the faster for small images
  (MNIST-sized): a pretrained embedder would upscale each 28×28 digit to 224×224 for features made for photos;
- "auto" (default): "scratch" when the images are at most SMALL_IMAGE pixels on their longer side, else "probe".
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.audit.confident import audit_labels, audit_multilabel
from cnnkit.audit.crossfit import (
    DEFAULT_EMBEDDER,
    embeddings,
    fold_parts,
    probe_probabilities,
    scratch_probabilities,
)
from cnnkit.config import Config
from cnnkit.data.sources import ImageSource
from cnnkit.errors import CnnkitError, unknown_name

log = logging.getLogger("cnnkit")
METHODS = ("auto", "probe", "scratch")
SMALL_IMAGE = 64  # pixels on the longer side: at most this, a small model from scratch is the faster


@dataclass
class LabelResult:
    """The label audit: relabel rows (most suspicious first), flagged issues, and the estimates behind them."""

    rows: list[dict]  # every audited item: path, given_label, suggested_label, score, issue (bool)
    method: str
    folds: int
    noise: dict  # {"estimated_issues", "estimated_rate", "pairs": [{given, true, share}, ...]}
    features: np.ndarray | None  # (N_all, F) pretrained embeddings of every item (probe only), for duplicates


def item_name(source: ImageSource, i: int) -> str:
    """How relabel.csv names item i: its file path, or its id for in-memory sets (e.g. MNIST's train/123)."""
    return str(source.paths[i]) if source.paths is not None else source.ids[i]


def longest_side(source: ImageSource) -> int:
    """The longer side of the set's images (the first image's, for files)."""
    if source.arrays is not None:
        return int(max(source.arrays.shape[-2:]))
    from PIL import Image

    with Image.open(source.paths[0]) as im:
        return max(im.size)


def choose_method(source: ImageSource, method: str) -> str:
    if method not in METHODS:
        raise unknown_name("audit method", method, METHODS)
    if method != "auto":
        return method
    return "scratch" if longest_side(source) <= SMALL_IMAGE else "probe"


def _noise_summary(joint: np.ndarray, classes: list[str], n: int) -> dict:
    """The estimated share of wrong labels and its largest (given → true) pairs from Q̂."""
    pairs = [{"given": classes[i], "true": classes[j], "share": float(joint[i, j])}
             for i in range(len(classes)) for j in range(len(classes)) if i != j and joint[i, j] > 0]
    rate = float(joint.sum() - np.trace(joint))
    return {"estimated_rate": rate, "estimated_issues": int(round(rate * n)),
            "pairs": sorted(pairs, key=lambda p: -p["share"])[:20]}


def _single_label_rows(source: ImageSource, order: np.ndarray, probs: np.ndarray) -> tuple[list[dict], dict]:
    result = audit_labels(source.labels[order], probs)
    classes, score = source.classes, result.score()
    rows = [{"index": int(order[p]), "path": item_name(source, int(order[p])),
             "given_label": classes[int(source.labels[order[p]])], "suggested_label": classes[int(result.suggested[p])],
             "score": float(score[p]), "issue": bool(result.issues[p])} for p in result.ranking()]
    return rows, _noise_summary(result.joint, classes, len(order))


def _multilabel_rows(source: ImageSource, order: np.ndarray, probs: np.ndarray) -> tuple[list[dict], dict]:
    issues, score, suggested = audit_multilabel(source.targets[order], probs)
    names = lambda hot: ";".join(c for c, on in zip(source.classes, hot) if on)  # noqa: E731
    flagged = issues.any(1)
    rank = np.lexsort((-score, ~flagged))
    rows = [{"index": int(order[p]), "path": item_name(source, int(order[p])),
             "given_label": names(source.targets[order[p]] > 0.5), "suggested_label": names(suggested[p]),
             "score": float(score[p]), "issue": bool(flagged[p])} for p in rank]
    rate = float(issues.mean())
    return rows, {"estimated_rate": rate, "estimated_issues": int(issues.sum()), "pairs": []}


def label_audit(recipe: Any, cfg: Config, source: ImageSource, split: dict[str, np.ndarray], *, folds: int = 5,
                method: str = "auto", embedder: str = DEFAULT_EMBEDDER, work: Path, seed: int = 0) -> LabelResult:
    """Cross-fit out-of-fold probabilities over train + val with `method` and find the label issues."""
    if source.problem == "regression":
        raise CnnkitError("the label audit needs classes; a regression set has values (audit duplicates and "
                          "quality with --task regression is not supported)")
    multilabel = source.problem == "multilabel"
    pool = np.sort(np.concatenate([split["train"], split["val"]]))
    parts = fold_parts(pool, None if multilabel else source.labels, folds, seed)
    order = np.concatenate(parts)
    method = choose_method(source, method)
    features = None
    log.info("audit: %d items, %d folds, %s", len(pool), folds, method)
    if method == "probe":
        features = embeddings(source, np.arange(len(source)), embedder)
        targets = source.targets if multilabel else source.labels
        probs = probe_probabilities(features, targets, parts, {i: i for i in range(len(source))},
                                    len(source.classes), seed)
    else:
        probs = scratch_probabilities(recipe, replace(cfg, out=None), source, parts, work)  # binary: [1 − p, p]
    rows, noise = (_multilabel_rows if multilabel else _single_label_rows)(source, order, probs)
    return LabelResult(rows, method, folds, noise, features)
