"""Whole-split metrics per problem type, computed once over all predictions of a split (not per batch).

Every function takes CPU tensors holding the predictions of the whole split and returns a dict of
plain Python floats (ints for supports, None for an undefined per-label AP), ready for ``json.dumps``.
Nothing is rounded. scikit-learn does the work; it is imported inside the functions (slow to import).

Shape errors (N or K mismatch) raise ``CnnkitError`` with a one-line message.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from cnnkit.errors import CnnkitError
from cnnkit.metrics.detection import detection_map, evaluate_detections  # noqa: F401

TASKS = ("binary", "multiclass", "multilabel", "regression")
TOP_K = 5


def _check_rows(outputs: Tensor, target: Tensor) -> None:
    if outputs.shape[0] != target.shape[0]:
        raise CnnkitError(f"there are {outputs.shape[0]} predictions but {target.shape[0]} targets")


def _check_columns(outputs: Tensor, names: list[str], what: str) -> None:
    if outputs.ndim != 2:
        raise CnnkitError(f"predictions must be a 2-D (N, K) tensor, got shape {tuple(outputs.shape)}")
    if outputs.shape[1] != len(names):
        raise CnnkitError(f"predictions have {outputs.shape[1]} columns but there are {len(names)} {what}")


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


# ---------------------------------------------------------------- single-label classification

def _check_classification(probs: Tensor, target: Tensor, classes: list[str]) -> None:
    _check_columns(probs, classes, "classes")
    if target.ndim != 1:
        raise CnnkitError(f"targets must be a 1-D tensor of class indices, got shape {tuple(target.shape)}")
    _check_rows(probs, target)
    if len(target) and (int(target.min()) < 0 or int(target.max()) >= len(classes)):
        raise CnnkitError(f"targets hold class indices from {int(target.min())} to {int(target.max())} "
                          f"but there are {len(classes)} classes (0 to {len(classes) - 1})")


def _per_class(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str]) -> dict:
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=range(len(classes)), average=None,
                                                 zero_division=0)
    return {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
            for i, name in enumerate(classes)}


def _binary_extras(y_true: np.ndarray, scores: np.ndarray, per_class: dict, classes: list[str]) -> dict:
    from sklearn.metrics import roc_auc_score

    extras = {"f1": per_class[classes[1]]["f1"]}
    if len(np.unique(y_true)) == 2:
        extras["roc_auc"] = float(roc_auc_score(y_true, scores))
    return extras


def classification_metrics(probs: Tensor, target: Tensor, classes: list[str]) -> dict:
    """Single-label metrics from scores ``probs`` (N, K) and class indices ``target`` (N,).

    Keys: accuracy, f1_macro, f1_micro, precision_macro, recall_macro (macro = unweighted mean over all K
    classes; a class absent from both target and predictions counts 0), top_5_accuracy when K > 5,
    f1 (of class 1) and roc_auc (of probs[:, 1]; left out when target holds one class) when K == 2,
    and per_class {name: {precision, recall, f1, support}}.
    """
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score, top_k_accuracy_score

    _check_classification(probs, target, classes)
    scores, y_true = _numpy(probs), _numpy(target).astype(np.int64)
    y_pred = scores.argmax(axis=1)
    labels = range(len(classes))
    out: dict = {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "f1_macro": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(y_true, y_pred, labels=labels, average="micro", zero_division=0)),
        "precision_macro": float(precision_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }
    if len(classes) > TOP_K:
        out[f"top_{TOP_K}_accuracy"] = float(top_k_accuracy_score(y_true, scores, k=TOP_K, labels=labels))
    per_class = _per_class(y_true, y_pred, classes)
    if len(classes) == 2:
        out.update(_binary_extras(y_true, scores[:, 1], per_class, classes))
    out["per_class"] = per_class
    return out


# ---------------------------------------------------------------- multi-label classification

def _check_multilabel(probs: Tensor, target: Tensor, classes: list[str]) -> None:
    _check_columns(probs, classes, "labels")
    _check_rows(probs, target)
    if target.shape != probs.shape:
        raise CnnkitError(f"targets have shape {tuple(target.shape)} but predictions {tuple(probs.shape)}")
    if not bool(((target == 0) | (target == 1)).all()):
        raise CnnkitError("multi-label targets must hold only 0 and 1")


def _label_aps(y_true: np.ndarray, scores: np.ndarray) -> list[float | None]:
    from sklearn.metrics import average_precision_score

    return [float(average_precision_score(y_true[:, j], scores[:, j])) if y_true[:, j].any() else None
            for j in range(y_true.shape[1])]


def multilabel_metrics(probs: Tensor, target: Tensor, classes: list[str], threshold: float = 0.5) -> dict:
    """Multi-label metrics from probabilities ``probs`` (N, K) and 0/1 targets ``target`` (N, K).

    Keys: map (mean AP over the labels with at least one positive; nan when none has), f1_macro and f1_micro
    of the predictions probs >= threshold, subset_accuracy (every label of a sample right), hamming_accuracy
    (fraction of right (sample, label) entries), and per_label {name: {ap (None without positives), f1, support}}.
    """
    from sklearn.metrics import accuracy_score, f1_score, hamming_loss

    _check_multilabel(probs, target, classes)
    scores, y_true = _numpy(probs), _numpy(target).astype(np.int64)
    y_pred = (scores >= threshold).astype(np.int64)
    aps = _label_aps(y_true, scores)
    defined = [ap for ap in aps if ap is not None]
    f1s = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "map": float(np.mean(defined)) if defined else math.nan,
        "f1_macro": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "f1_micro": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "subset_accuracy": float(accuracy_score(y_true, y_pred)),
        "hamming_accuracy": float(1.0 - hamming_loss(y_true, y_pred)),
        "per_label": {name: {"ap": aps[j], "f1": float(f1s[j]), "support": int(y_true[:, j].sum())}
                      for j, name in enumerate(classes)},
    }


# ---------------------------------------------------------------- regression

def _as_columns(x: Tensor) -> Tensor:
    return x.reshape(-1, 1) if x.ndim == 1 else x


def _check_regression(pred: Tensor, target: Tensor, names: list[str]) -> None:
    if pred.ndim not in (1, 2):
        raise CnnkitError(f"regression predictions must be (N,) or (N, D), got shape {tuple(pred.shape)}")
    _check_rows(pred, target)
    if pred.shape != target.shape:
        raise CnnkitError(f"predictions have shape {tuple(pred.shape)} but targets {tuple(target.shape)}")
    outputs = 1 if pred.ndim == 1 else pred.shape[1]
    if outputs != len(names):
        raise CnnkitError(f"predictions have {outputs} outputs but there are {len(names)} target names")


def regression_metrics(pred: Tensor, target: Tensor, names: list[str]) -> dict:
    """Regression metrics from ``pred`` and ``target``, both (N,) or (N, D); ``names`` has D entries.

    Keys: mae, rmse, r2, each the unweighted mean over the D outputs (rmse = mean of the per-output
    sqrt(MSE)), and per_target {name: {mae, rmse, r2}} when D > 1. R² follows sklearn's r2_score: for an
    output whose target is constant it is 1.0 when predicted exactly and 0.0 otherwise (force_finite).
    """
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    _check_regression(pred, target, names)
    y_pred, y_true = _numpy(_as_columns(pred)).astype(np.float64), _numpy(_as_columns(target)).astype(np.float64)
    mae = mean_absolute_error(y_true, y_pred, multioutput="raw_values")
    rmse = np.sqrt(mean_squared_error(y_true, y_pred, multioutput="raw_values"))
    r2 = r2_score(y_true, y_pred, multioutput="raw_values")
    out: dict = {"mae": float(mae.mean()), "rmse": float(rmse.mean()), "r2": float(r2.mean())}
    if len(names) > 1:
        out["per_target"] = {name: {"mae": float(mae[j]), "rmse": float(rmse[j]), "r2": float(r2[j])}
                             for j, name in enumerate(names)}
    return out


# ---------------------------------------------------------------- dispatch

def task_metrics(task: str, outputs: Tensor, target: Tensor, classes: list[str]) -> dict:
    """The metrics of ``task``: binary (outputs = (N,) probabilities of class 1), multiclass, multilabel, regression."""
    if task == "binary":
        if outputs.ndim != 1:
            raise CnnkitError(f"binary predictions must be (N,) probabilities of the positive class, "
                              f"got shape {tuple(outputs.shape)}")
        return classification_metrics(torch.stack([1 - outputs, outputs], dim=1), target, classes)
    if task == "multiclass":
        return classification_metrics(outputs, target, classes)
    if task == "multilabel":
        return multilabel_metrics(outputs, target, classes)
    if task == "regression":
        return regression_metrics(outputs, target, classes)
    raise ValueError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
