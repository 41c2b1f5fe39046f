"""Bad masks: a segmenter cross-fitted out of fold (it never saw the image's mask) disagrees with the labels, and
classes that a split never shows.

    rows = mask_disagreement(targets, predictions, classes)       # pure: per-image masks in, ranked rows out
    absent = absent_classes(source, {"train": train, "val": val}, classes)
    audit = audit_segmentation(recipe, cfg, source, pool, folds=3, work=Path("audit"))

One row per image that has labelled pixels, {"image": position, "kind": "mask", "agreement", "pixel_agreement",
"score", "label", "suggested", "pixels", "class_iou"}, ranked by score = 1 − agreement, highest first:

- agreement: the image's mIoU between the given mask and the prediction, over the classes present in either
  (pixels of `ignore_index` left out): 1 when they agree everywhere, 0 when no class overlaps;
- pixel_agreement: the share of labelled pixels where both say the same class;
- label → suggested, pixels: the most frequent disagreement, the given class and the predicted one (pixels
  counted at the compared resolution); None when they agree everywhere.

audit_segmentation compares at the network's resolution (each image resized so its longer side is the card's
input size, as the recipe's loader gives it; the padding of a batch is ignore_index and left out).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.errors import CnnkitError

log = logging.getLogger("cnnkit")


def _confusion(target: Any, prediction: Any, k: int, ignore_index: int | None) -> np.ndarray:
    """(k, k) int64 pixel counts, rows the given class, columns the predicted one."""
    from cnnkit.metrics.segmentation import ConfusionMatrix

    matrix = ConfusionMatrix(k, ignore_index)
    matrix.update(torch.as_tensor(np.asarray(prediction)).long()[None],  # (1, H, W)
                  torch.as_tensor(np.asarray(target)).long()[None])
    return matrix.matrix


def confusion_row(image: int, matrix: np.ndarray, classes: list[str]) -> dict | None:
    """One image's row (see the module docstring) from its (k, k) pixel confusion matrix; None without pixels."""
    n = matrix.astype(np.float64)
    total = n.sum()
    if total == 0:
        return None
    diag, given, predicted = np.diag(n), n.sum(1), n.sum(0)
    union = given + predicted - diag
    present = union > 0
    iou = np.divide(diag, union, out=np.zeros_like(diag), where=present)  # (k,)
    agreement = float(iou[present].mean())
    off = n - np.diag(diag)
    t, p = np.unravel_index(int(off.argmax()), off.shape)
    wrong = off[t, p] > 0
    return {"image": image, "kind": "mask", "agreement": round(agreement, 6),
            "pixel_agreement": round(float(diag.sum() / total), 6), "score": round(1.0 - agreement, 6),
            "label": classes[t] if wrong else None, "suggested": classes[p] if wrong else None,
            "pixels": int(off[t, p]) if wrong else 0,
            "class_iou": {classes[c]: round(float(iou[c]), 4) for c in np.flatnonzero(present)}}


def ranked(rows: Iterable[dict | None]) -> list[dict]:
    return sorted((r for r in rows if r is not None), key=lambda r: -r["score"])


def mask_disagreement(targets: list[Any], predictions: list[Any], classes: list[str], *,
                      ignore_index: int | None = 255) -> list[dict]:
    """Rows of per-image given masks `targets` and out-of-fold `predicted` masks, (H, W) class indices each
    (tensors or arrays, the same shape per image), ranked by 1 − mIoU, the worst agreement first."""
    if len(targets) != len(predictions):
        raise CnnkitError(f"mask audit: {len(targets)} given masks but {len(predictions)} predicted")
    k = len(classes)
    for i, (t, p) in enumerate(zip(targets, predictions)):
        if tuple(np.shape(t)) != tuple(np.shape(p)):
            raise CnnkitError(f"mask audit: image {i}'s mask is {tuple(np.shape(t))} but its prediction "
                              f"{tuple(np.shape(p))}; give both at the same resolution")
    return ranked(confusion_row(i, _confusion(t, p, k, ignore_index), list(classes))
                  for i, (t, p) in enumerate(zip(targets, predictions)))


def _present(source: Any, i: int, k: int) -> set[int]:
    """The classes item i shows: a detection source's box labels, else the values of a segmentation mask."""
    if hasattr(source, "items"):
        return {int(c) for c in source.items[i].labels if 0 <= c < k}
    values = torch.unique(source.read(i)[1])
    return {int(v) for v in values if 0 <= int(v) < k}


def absent_classes(source: Any, split: dict[str, Any], classes: list[str]) -> dict[str, list[str]]:
    """{split name: [the classes none of its items shows]}: for a segmentation source, no pixel of the class
    in its masks (each mask read once); for a detection source, no box of the class."""
    out = {}
    for name, indices in split.items():
        seen: set[int] = set()
        for i in np.asarray(indices, dtype=np.int64):
            seen |= _present(source, int(i), len(classes))
            if len(seen) == len(classes):
                break
        out[name] = [c for n, c in enumerate(classes) if n not in seen]
    return out


@torch.inference_mode()
def _confusions(model: torch.nn.Module, loader: Any, k: int, ignore_index: int) -> Iterator[np.ndarray]:
    """Per image of `loader`, in order: the (k, k) confusion of its mask against the model's arg-max."""
    model.eval()
    for batch in loader:
        predicted = model(batch.images).argmax(1)  # (N, h, w)
        for p, t in zip(predicted, batch.targets):
            yield _confusion(t, p, k, ignore_index)


def audit_segmentation(recipe: Any, cfg: Config, source: Any, pool: np.ndarray, *, folds: int, work: Path,
                       seed: int = 0, split: dict[str, Any] | None = None) -> dict:
    """Cross-fit `folds` segmenters (fit_fold, run folders work/fold1...) over the images `pool` of `source` and
    rank every image by its disagreement with its out-of-fold prediction. Returns {"issues": rows (see the module
    docstring) with "index" (the source's) and "path", "absent": absent_classes over `split` (default: the
    recipe's seeded split of the source), "items": images audited, "folds"}."""
    from cnnkit.audit.crossfit import fit_fold, fold_parts

    parts = fold_parts(np.asarray(pool, dtype=np.int64), None, folds, seed)
    order = np.concatenate(parts)
    matrices: list[np.ndarray] = []
    for i, held in enumerate(parts):
        log.info("audit: fold %d of %d, training on %d images", i + 1, len(parts), len(order) - len(held))
        model, card = fit_fold(recipe, cfg, source, np.setdiff1d(order, held), Path(work) / f"fold{i + 1}")
        loader = recipe.loader(cfg, source, held, card, train=False)
        matrices += list(_confusions(model, loader, len(card.classes), card.ignore_index))
    rows = ranked(confusion_row(n, m, list(source.classes)) for n, m in enumerate(matrices))
    for row in rows:
        index = int(order[row["image"]])
        path = source.path(index) if hasattr(source, "path") else None
        row.update(index=index, path=None if path is None else str(path))
    if split is None:
        split = recipe.new_split(cfg, source)[0]
    return {"issues": rows, "absent": absent_classes(source, split, list(source.classes)), "items": len(order),
            "folds": folds}
