"""What every task shares: the batch that flows from data to model, a step's output, the Task interface."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from cnnkit.data.batch import Batch  # re-exported: tasks take batches


def fp32(x: Any) -> Any:
    """A reduced-precision (bf16/fp16 autocast) float tensor as fp32; anything else as it is."""
    if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != torch.float32:
        return x.float()
    return x


@dataclass
class StepOutput:
    """The loss to back-propagate and detached per-batch means to log (averaged over the epoch)."""

    loss: torch.Tensor
    logs: dict[str, torch.Tensor] = field(default_factory=dict)


class Task:
    """A model plus the maths of one problem type: loss, per-batch metrics, and turning outputs into predictions.
    It knows nothing about devices, loops or files.

    Subclasses say how raw model outputs meet the loss (`loss_inputs`), what to log per batch (`batch_logs`)
    and what a prediction is (`predict_step`); the training step here adds what every problem type shares:
    sample weights, auxiliary heads, mixing, adversarial examples and weight penalties.
    """

    name = "task"
    main_metric = "loss"  # the metric a user reads first ('accuracy', 'map', 'r2', ...)
    higher_is_better = False
    monitor = "val_loss"  # what checkpoints select the best epoch on
    default_loss = "mse"
    AUX_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers count 0.3 each (Szegedy et al. 2014, §5)

    def __init__(self, model: nn.Module, loss: str | nn.Module | None = None, *,
                 class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 penalty: Callable[[nn.Module], torch.Tensor] | None = None,
                 mix: Callable[[torch.Tensor, torch.Tensor], tuple] | None = None,
                 attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        from cnnkit import losses
        from cnnkit.tasks.pairing import check_pairing

        self.model = model
        self.penalty = penalty  # e.g. cnnkit.engine.regularizers.Penalty: added to the training loss, logged apart
        self.mix = mix  # (images, targets) → (mixed images, soft targets), e.g. mixup: in training only
        self.attack = attack  # (model, images, targets) → adversarial images: ½ clean + ½ adversarial loss
        loss = loss or self.default_loss
        if isinstance(loss, str):  # per-sample values: the task applies sample weights and the mean
            check_pairing(self.name, loss, bounded=getattr(self, "bounded", False))
            options = {"reduction": "none"}
            if class_weight is not None:
                options["class_weight"] = class_weight
            if label_smoothing:
                options["label_smoothing"] = label_smoothing
            loss = losses.get(loss, **options)
        self.loss = loss
        self.soft_loss = loss  # the loss for mixed (soft) targets; single-label classification overrides it

    # -- what each problem type defines -------------------------------------------------------------------
    def loss_inputs(self, outputs: torch.Tensor, targets: Any) -> tuple[torch.Tensor, Any]:
        """(prediction, target) as the loss wants them, from raw model outputs and the batch's targets."""
        return outputs, targets

    def batch_logs(self, outputs: torch.Tensor, targets: Any) -> dict[str, torch.Tensor]:
        """Metrics that are means over the batch's items (whole-split metrics are in cnnkit.metrics.core)."""
        return {}

    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def reset_metrics(self) -> None:
        """Forget what validation_step kept for epoch_metrics (tasks whose metrics need the whole split)."""

    def epoch_metrics(self) -> dict[str, float]:
        """Whole-split metrics of the validation steps since reset_metrics (e.g. detection's mAP); none here."""
        return {}

    # -- shared -------------------------------------------------------------------------------------------
    def _reduce(self, outputs: torch.Tensor, batch: Batch, loss: nn.Module | None = None) -> torch.Tensor:
        """The batch's loss: the mean of per-sample losses, weighted by the batch's sample weights if any."""
        prediction, target = self.loss_inputs(fp32(outputs), batch.targets)  # losses in fp32, also under autocast
        per_sample = (loss or self.loss)(prediction, target)  # (N,)
        if batch.weights is None:
            return per_sample.mean()
        return (per_sample * batch.weights).sum() / batch.weights.sum()

    def _step(self, batch: Batch, loss: nn.Module | None = None) -> StepOutput:
        outputs = self.model(batch.images)  # (N, K) or (N, D)
        value = self._reduce(outputs, batch, loss)
        return StepOutput(value, {"loss": value.detach(), **self.batch_logs(fp32(outputs.detach()), batch.targets)})

    def training_step(self, batch: Batch) -> StepOutput:
        net = getattr(self.model, "module", self.model)  # the bare model under DDP
        if self.mix is not None:  # Mixup/CutMix: soft targets
            images, soft = self.mix(batch.images, batch.targets)
            out = self._step(Batch(images, soft, batch.weights), self.soft_loss)
        else:
            out = self._step(batch)
            aux = getattr(net, "aux_outputs", None) or []  # set by models with auxiliary heads, in training only
            if aux:
                out.loss = out.loss + self.AUX_WEIGHT * sum(self._reduce(a, batch) for a in aux)
            if self.attack is not None:  # Goodfellow et al. 2015: ½ L(x) + ½ L(x_adv), x_adv from the current weights
                adversarial = self.attack(net, batch.images, batch.targets)
                adv_loss = self._reduce(self.model(adversarial), batch)
                out.loss = 0.5 * out.loss + 0.5 * adv_loss
                out.logs["adv_loss"] = adv_loss.detach()
        if self.penalty is not None:  # 'loss' stays the data loss; the penalty has its own log
            penalty = self.penalty(net)
            out.loss = out.loss + penalty
            out.logs["penalty"] = penalty.detach()
        return out

    def validation_step(self, batch: Batch) -> StepOutput:
        return self._step(batch)
