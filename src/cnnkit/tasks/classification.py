"""Single-label classification: softmax over K classes, cross-entropy (or any named loss), accuracy."""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.engine.losses import LossFn, make_loss
from cnnkit.tasks.base import Batch, StepOutput, Task


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Fraction of argmax predictions equal to the target (class indices, or one-hot rows)."""
    if target.ndim == 2:
        target = target.argmax(1)
    return (logits.argmax(1) == target).float().mean()


class ClassificationTask(Task):
    """Knows the loss and the metrics of classification; knows nothing about devices or loops."""

    name = "classify"
    main_metric = "accuracy"
    higher_is_better = True

    def __init__(self, model: nn.Module, loss: str | LossFn = "cross_entropy", *,
                 class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0):
        super().__init__(model)
        self.loss = make_loss(loss, class_weight=class_weight, label_smoothing=label_smoothing) \
            if isinstance(loss, str) else loss

    def _step(self, batch: Batch) -> StepOutput:
        logits = self.model(batch.images)  # (N, K)
        per_sample = self.loss(logits, batch.targets)  # (N,)
        loss = per_sample.mean() if batch.weights is None else (per_sample * batch.weights).sum() / batch.weights.sum()
        return StepOutput(loss, {"loss": loss.detach(), "accuracy": accuracy(logits.detach(), batch.targets)})

    def training_step(self, batch: Batch) -> StepOutput:
        return self._step(batch)

    def validation_step(self, batch: Batch) -> StepOutput:
        return self._step(batch)

    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float().softmax(1)  # (N, K) probabilities
