"""Regression: D numbers per image. No activation + MSE by default; a sigmoid when the targets lie in [0, 1]."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cnnkit.tasks.base import Task
from cnnkit.tasks.pairing import loss_input

STANDARDIZED_LOSSES = ("mse", "mean_squared_error", "mae", "huber", "log_cosh")  # shift- and scale-free


class RegressionTask(Task):
    """Targets (N, D) floats. With `mean` and `std` (the training targets'), the model learns standardised
    targets (t − mean) / std, so no output needs a scale of its own; predictions are in the targets' units.
    With `bounded`, outputs pass through a sigmoid (targets in [0, 1]: the notes' 'regression to values
    between 0 and 1'). Logs the mean absolute error in the targets' units per batch."""

    name = "regression"
    default_loss = "mse"

    def __init__(self, model, loss=None, *, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, bounded: bool = False, **options):
        self.bounded = bounded
        super().__init__(model, loss, **options)
        self._input = loss_input(self.loss)
        self.mean = None if mean is None else torch.as_tensor(mean, dtype=torch.float32)  # (D,)
        self.std = None if std is None else torch.as_tensor(std, dtype=torch.float32)  # (D,)

    def values(self, outputs: torch.Tensor) -> torch.Tensor:
        """Model outputs (N, D) → predictions in the targets' units."""
        if self.bounded:
            return outputs.sigmoid()
        if self.mean is not None:
            return outputs * self.std.to(outputs) + self.mean.to(outputs)
        return outputs

    def loss_inputs(self, outputs: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        targets = targets.to(outputs.dtype)
        if self.bounded:  # BCE from logits takes the raw outputs; every other loss the sigmoid
            return (outputs if self._input == "logits" else outputs.sigmoid()), targets
        if self.mean is not None:
            return outputs, (targets - self.mean.to(outputs)) / self.std.to(outputs)
        return outputs, targets

    def batch_logs(self, outputs: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        return {"mae": (self.values(outputs) - targets.to(outputs.dtype)).abs().mean()}

    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        return self.values(self.model(images).float())  # (N, D)
