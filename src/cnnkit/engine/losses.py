"""Losses by name. Each returns per-sample values (reduction='none'), so tasks can weight samples."""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnkit.errors import unknown_name

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> LossFn:
    """Softmax cross-entropy on logits (N, K) against class indices (N,): −log softmax(z)_y."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = None if class_weight is None else class_weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, target, weight=w, reduction="none", label_smoothing=label_smoothing)

    return loss


def categorical_cross_entropy(class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> LossFn:
    """Cross-entropy against one-hot or soft targets (N, K): −Σ_k t_k log softmax(z)_k."""

    def loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        t = target.to(logits.dtype)
        if label_smoothing:
            t = t * (1 - label_smoothing) + label_smoothing / t.shape[1]
        w = None if class_weight is None else class_weight.to(logits.device, logits.dtype)
        return F.cross_entropy(logits, t, weight=w, reduction="none")

    return loss


def mse(class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0) -> LossFn:
    """Mean squared error per sample, averaged over the output dimensions."""

    def loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(pred, target.to(pred.dtype).view_as(pred), reduction="none").flatten(1).mean(1)

    return loss


LOSSES: dict[str, Callable[..., LossFn]] = {
    "cross_entropy": cross_entropy,
    "sparse_categorical_crossentropy": cross_entropy,  # Keras' name for the same thing
    "categorical_crossentropy": categorical_cross_entropy,
    "mse": mse,
    "mean_squared_error": mse,
}


def make_loss(name: str, **options) -> LossFn:
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    return LOSSES[name](**options)
