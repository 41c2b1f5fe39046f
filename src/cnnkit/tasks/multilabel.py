"""Sigmoid outputs: multilabel (K independent yes/no labels) and binary (one output, the second class)."""
from __future__ import annotations

from typing import Any

import torch

from cnnkit.tasks.base import Task
from cnnkit.tasks.pairing import loss_input


class MultilabelTask(Task):
    """Any subset of K labels per image: a sigmoid per label + binary cross-entropy; targets (N, K) in {0, 1}
    (soft under mixup). Per batch it logs the share of right yes/no decisions (Keras' binary_accuracy)."""

    name = "multilabel"
    default_loss = "binary_crossentropy"
    threshold = 0.5

    def __init__(self, model, loss=None, **options):
        super().__init__(model, loss, **options)
        self._input = loss_input(self.loss)

    def _targets(self, targets: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        return targets.to(outputs.dtype)

    def loss_inputs(self, outputs: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        targets = self._targets(targets, outputs)
        return (outputs.sigmoid() if self._input == "activated" else outputs), targets

    def batch_logs(self, outputs: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        targets = self._targets(targets, outputs)
        return {"binary_accuracy": ((outputs > 0) == (targets > self.threshold)).float().mean()}

    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float().sigmoid()  # (N, K) probability of each label


class BinaryTask(MultilabelTask):
    """Two classes, one sigmoid output p = P(class 1) + binary cross-entropy; targets are class indices
    (N,) in {0, 1}, or (N, 2) soft rows under mixup. Predictions are (N, 2): [1 − p, p]."""

    name = "binary"
    main_metric = "accuracy"
    higher_is_better = True
    monitor = "val_accuracy"

    def _targets(self, targets: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
        if targets.ndim == 2:  # (N, 2) soft rows from mixup: the weight of class 1
            return targets[:, 1:].to(outputs.dtype)
        return targets.to(outputs.dtype).unsqueeze(1)  # (N,) → (N, 1)

    def batch_logs(self, outputs: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        return {"accuracy": super().batch_logs(outputs, targets)["binary_accuracy"]}

    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        p = super().predict_step(images)  # (N, 1)
        return torch.cat([1 - p, p], dim=1)  # (N, 2)
