"""Semantic-segmentation metrics: a confusion matrix and the scores of Long et al. 2015 (FCN), plus the
boundary F1 (BF) score of Csurka et al. 2013.

    cm = ConfusionMatrix(num_classes=4, ignore_index=255)
    for logits, target in batches:
        cm.update(logits.argmax(1), target)          # (N, H, W) each; logits (N, C, H, W) also accepted
    cm.scores()["miou"], cm.matrix                   # matrix: (C, C) int64, rows = true, cols = predicted
    boundary_f1(pred_mask, true_mask, tolerance=2)   # (H, W) each

With n_ij the number of pixels of true class i predicted as j, t_i = Σ_j n_ij (true pixels of class i) and
p_j = Σ_i n_ij (pixels predicted as j), the scores are those of Long et al. 2015 §5, computed exactly as the
FCN reference code (fcn.berkeleyvision.org ``score.py``) does, NaN-means included:

- pixel_accuracy = Σ_i n_ii / Σ_i t_i
- per_class_accuracy_i = n_ii / t_i; mean_accuracy = its mean over classes with t_i > 0
- per_class_iou_i = n_ii / (t_i + p_i − n_ii); miou = its mean over classes with t_i + p_i > 0
- fw_iou = (Σ_k t_k)^-1 Σ_i t_i n_ii / (t_i + p_i − n_ii)   (frequency-weighted IoU)
- per_class_dice_i = 2 n_ii / (t_i + p_i); dice = its mean over classes with t_i + p_i > 0

A per-class value that is 0/0 (for IoU and Dice: a class absent from both target and prediction; for accuracy:
a class absent from the target) is ``None`` in the lists and left out of the means. A class that is predicted
but absent from the target has IoU = Dice = 0 and does count. Scalar scores of an empty matrix are ``None``.
Pixels whose target is ``ignore_index`` are not counted at all. (torchmetrics' MulticlassJaccardIndex agrees:
its ``average='macro'`` drops classes absent from both; its ``average=None`` reports them as 0.)
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from cnnkit.errors import CnnkitError

try:  # Euclidean distance transform for boundary_f1; a torch disc dilation otherwise
    from scipy import ndimage as _ndimage
except ImportError:  # pragma: no cover - scipy is installed with the project's test environment
    _ndimage = None


def _as_tensor(x: Any, what: str) -> Tensor:
    tensor = torch.as_tensor(x)
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise CnnkitError(f"{what} must hold integer class indices, got {tensor.dtype}")
    return tensor


def _divide(num: np.ndarray, den: np.ndarray) -> list[float | None]:
    """num / den elementwise, None where den == 0."""
    return [float(n / d) if d > 0 else None for n, d in zip(num, den)]


def _mean(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


class ConfusionMatrix:
    """Accumulates a (C, C) int64 confusion matrix over batches; rows = true class, cols = predicted class."""

    def __init__(self, num_classes: int, ignore_index: int | None = 255) -> None:
        if num_classes < 1:
            raise CnnkitError(f"num_classes must be at least 1, got {num_classes}")
        self.num_classes, self.ignore_index = int(num_classes), ignore_index
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def reset(self) -> None:
        self.matrix[:] = 0

    def update(self, pred: Tensor | np.ndarray, target: Tensor | np.ndarray) -> None:
        """Add pred (N, H, W) class indices — or logits (N, C, H, W), argmax'ed over dim 1 — against target
        (N, H, W) (any matching shapes work); torch tensors on any device, or numpy arrays."""
        target = _as_tensor(target, "segmentation target")
        pred = torch.as_tensor(pred)
        if pred.dim() == target.dim() + 1 and pred.shape[1] == self.num_classes:
            pred = pred.argmax(dim=1)
        pred = _as_tensor(pred, "segmentation prediction").to(target.device)
        if pred.shape != target.shape:
            raise CnnkitError(
                f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape; "
                "pass class indices (N, H, W) for both"
            )
        c = self.num_classes
        valid = torch.ones_like(target, dtype=torch.bool)
        if self.ignore_index is not None:
            valid = target != self.ignore_index
        true, guess = target[valid].long(), pred[valid].long()
        for values, what in ((true, "target label"), (guess, "predicted class")):
            bad = (values < 0) | (values >= c)
            if bool(bad.any()):
                raise CnnkitError(
                    f"{what} {int(values[bad][0])} is outside 0..{c - 1}"
                    + (f" and is not ignore_index {self.ignore_index}" if what == "target label" else "")
                    + "; check num_classes"
                )
        counts = torch.bincount(true * c + guess, minlength=c * c)  # (C*C,)
        self.matrix += counts.reshape(c, c).cpu().numpy().astype(np.int64)

    def scores(self) -> dict[str, Any]:
        """pixel_accuracy, mean_accuracy, per_class_accuracy, miou, per_class_iou, fw_iou, dice,
        per_class_dice (see the module docstring; None where undefined)."""
        n = self.matrix.astype(np.float64)
        diag, t, p = np.diag(n), n.sum(axis=1), n.sum(axis=0)
        total = t.sum()
        union = t + p - diag
        iou = _divide(diag, union)
        accuracy = _divide(diag, t)
        dice = _divide(2 * diag, t + p)
        fw = None
        if total > 0:
            fw = float(sum(t_i * v for t_i, v in zip(t, iou) if t_i > 0) / total)
        return {
            "pixel_accuracy": float(diag.sum() / total) if total > 0 else None,
            "mean_accuracy": _mean(accuracy),
            "per_class_accuracy": accuracy,
            "miou": _mean(iou),
            "per_class_iou": iou,
            "fw_iou": fw,
            "dice": _mean(dice),
            "per_class_dice": dice,
        }


def segmentation_scores(
    preds: Tensor | np.ndarray | Iterable[Tensor | np.ndarray],
    targets: Tensor | np.ndarray | Iterable[Tensor | np.ndarray],
    num_classes: int,
    ignore_index: int | None = 255,
) -> dict[str, Any]:
    """ConfusionMatrix(num_classes, ignore_index).scores() over preds / targets: one array each, or
    matching sequences of arrays (images of different sizes)."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    if isinstance(preds, (Tensor, np.ndarray)) or isinstance(targets, (Tensor, np.ndarray)):
        cm.update(preds, targets)
        return cm.scores()
    preds, targets = list(preds), list(targets)
    if len(preds) != len(targets):
        raise CnnkitError(f"got {len(preds)} predictions but {len(targets)} targets; pass one per image")
    for pred, target in zip(preds, targets):
        cm.update(pred, target)
    return cm.scores()


# --- boundary F1 (Csurka et al. 2013) ------------------------------------------------------


def _boundary(mask: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Valid pixels of `mask` (H, W) bool with at least one valid 8-neighbour outside it (mask minus its 3×3
    erosion); neither the image border nor an ignored pixel makes a boundary."""
    inside = mask | ~valid
    padded = np.pad(inside, 1, constant_values=True)
    h, w = mask.shape
    eroded = np.ones_like(mask)
    for dy in range(3):
        for dx in range(3):
            eroded &= padded[dy : dy + h, dx : dx + w]
    return mask & valid & ~eroded


def _near_scipy(boundary: np.ndarray, tolerance: float) -> np.ndarray:
    """(H, W) bool: pixels within Euclidean distance `tolerance` of a True pixel of `boundary`."""
    if not boundary.any():
        return np.zeros_like(boundary)
    return _ndimage.distance_transform_edt(~boundary) <= tolerance


def _near_torch(boundary: np.ndarray, tolerance: float) -> np.ndarray:
    """Same as _near_scipy, as a dilation of `boundary` by a Euclidean disc of radius `tolerance`."""
    r = int(np.floor(tolerance))
    yy, xx = torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="ij")
    disc = ((yy**2 + xx**2) <= tolerance**2).float()[None, None]  # (1, 1, 2r+1, 2r+1)
    x = torch.from_numpy(boundary).float()[None, None]  # (1, 1, H, W)
    return (F.conv2d(x, disc, padding=r)[0, 0] > 0.5).numpy()


def _near(boundary: np.ndarray, tolerance: float) -> np.ndarray:
    return _near_scipy(boundary, tolerance) if _ndimage is not None else _near_torch(boundary, tolerance)


def _f1(pred_b: np.ndarray, true_b: np.ndarray, tolerance: float) -> float:
    if not pred_b.any() and not true_b.any():
        return 1.0
    if not pred_b.any() or not true_b.any():
        return 0.0
    precision = float((pred_b & _near(true_b, tolerance)).sum() / pred_b.sum())
    recall = float((true_b & _near(pred_b, tolerance)).sum() / true_b.sum())
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def boundary_f1(
    pred: Tensor | np.ndarray,
    target: Tensor | np.ndarray,
    tolerance: float = 2,
    num_classes: int | None = None,
    ignore_index: int | None = 255,
) -> float:
    """BF score (Csurka et al. 2013) of one image: pred, target (H, W) class indices.

    For each class c present in the target (and < num_classes when given): the boundary maps of pred == c and
    target == c (pixels with an 8-neighbour of another class; the image border is not a boundary); precision =
    share of predicted boundary pixels within `tolerance` pixels (Euclidean) of a true one, recall the other way
    round; F1 = 2PR / (P + R) (1 when both maps are empty, 0 when only one is). Returns the mean F1 over those
    classes, or NaN when the target has no valid pixel. Ignored target pixels are neither boundary pixels nor
    make one (a class next to a void region has no boundary there).
    """
    pred_a, true_a = (torch.as_tensor(a).detach().cpu().numpy() for a in (pred, target))
    if pred_a.ndim != 2 or pred_a.shape != true_a.shape:
        raise CnnkitError(
            f"boundary_f1 needs pred and target of the same (H, W) shape, got {pred_a.shape} and {true_a.shape}"
        )
    if tolerance < 0:
        raise CnnkitError(f"boundary_f1 tolerance must be ≥ 0 pixels, got {tolerance}")
    valid = true_a != ignore_index if ignore_index is not None else np.ones(true_a.shape, dtype=bool)
    classes = np.unique(true_a[valid])
    if num_classes is not None:
        classes = classes[(classes >= 0) & (classes < num_classes)]
    if classes.size == 0:
        return float("nan")
    scores = [
        _f1(_boundary(pred_a == c, valid), _boundary(true_a == c, valid), float(tolerance)) for c in classes
    ]
    return float(np.mean(scores))
