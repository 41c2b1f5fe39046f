"""Single-label classification: softmax over K classes, cross-entropy (or any named loss), accuracy."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnnkit import losses
from cnnkit.tasks.base import Task
from cnnkit.tasks.pairing import is_sparse, loss_input


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of argmax predictions equal to the target (class indices, or one-hot rows)."""
    if target.ndim == 2:
        target = target.argmax(1)
    return (logits.argmax(1) == target).float().mean()


class ClassificationTask(Task):
    """One class out of K per image: softmax + cross-entropy by default; accuracy per batch."""

    name = "multiclass"
    main_metric = "accuracy"
    higher_is_better = True
    monitor = "val_accuracy"
    default_loss = "cross_entropy"

    def __init__(self, model, loss=None, **options):
        super().__init__(model, loss, **options)
        self._input, self._sparse = loss_input(self.loss), is_sparse(self.loss)
        if self.mix is not None and self._sparse:  # mixed targets are distributions: −Σ_k t_k log softmax(z)_k
            self.soft_loss = losses.get("categorical_crossentropy", reduction="none",
                                        class_weight=options.get("class_weight"))

    def loss_inputs(self, outputs: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        soft = targets.is_floating_point()  # (N, K) mixed targets, else (N,) class indices
        if not soft and not self._sparse:  # a dense loss (mse, hinge, kl, ...) compares with one-hot rows
            targets = F.one_hot(targets.long(), outputs.shape[1]).to(outputs.dtype)
        if self._input == "activated":  # mse, kl_divergence, ... compare probabilities
            return outputs.softmax(1), targets
        return outputs, targets

    def batch_logs(self, outputs: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        return {"accuracy": accuracy(outputs, targets)}

    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float().softmax(1)  # (N, K) probabilities
