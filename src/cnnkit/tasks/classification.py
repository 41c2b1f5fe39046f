"""Single-label classification: softmax over K classes, cross-entropy (or any named loss), accuracy."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnkit import losses
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

    def __init__(self, model: nn.Module, loss: str | nn.Module = "cross_entropy", *,
                 class_weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 penalty: Callable[[nn.Module], torch.Tensor] | None = None,
                 mix: Callable[[torch.Tensor, torch.Tensor], tuple] | None = None,
                 attack: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None):
        super().__init__(model)
        self.penalty = penalty  # e.g. cnnkit.regularizers.Penalty: added to the training loss, logged apart
        self.mix = mix  # e.g. partial(cnnkit.regularizers.mixup, num_classes=K): soft targets in training
        self.attack = attack  # e.g. partial(cnnkit.adversarial.fgsm, eps=...): adversarial training
        if isinstance(loss, str):  # per-sample values: the task applies sample weights and the mean
            options = {"reduction": "none"}
            if class_weight is not None:
                options["class_weight"] = class_weight
            if label_smoothing:
                options["label_smoothing"] = label_smoothing
            loss = losses.get(loss, **options)
        self.loss = loss
        # mixed (soft) targets need the cross-entropy against a distribution: −Σ_k t_k log softmax(z)_k
        self.soft_loss = losses.get("categorical_crossentropy", reduction="none",
                                    class_weight=class_weight) if mix is not None else None

    AUX_WEIGHT = 0.3  # GoogLeNet's auxiliary classifiers count 0.3 each (Szegedy et al. 2014, §5)

    def _reduce(self, logits: torch.Tensor, batch: Batch, loss=None) -> torch.Tensor:  # noqa: ANN001
        """The batch's loss: the mean of per-sample losses, weighted by the batch's sample weights if any."""
        per_sample = (loss or self.loss)(logits, batch.targets)  # (N,)
        if batch.weights is None:
            return per_sample.mean()
        return (per_sample * batch.weights).sum() / batch.weights.sum()

    def _step(self, batch: Batch, loss=None) -> StepOutput:  # noqa: ANN001
        logits = self.model(batch.images)  # (N, K)
        value = self._reduce(logits, batch, loss)
        return StepOutput(value, {"loss": value.detach(), "accuracy": accuracy(logits.detach(), batch.targets)})

    def training_step(self, batch: Batch) -> StepOutput:
        net = getattr(self.model, "module", self.model)  # the bare model under DDP
        if self.mix is not None:  # Mixup/CutMix: soft targets; accuracy against each image's dominant label
            images, soft = self.mix(batch.images, batch.targets)  # (N, C, H, W), (N, K)
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

    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images).float().softmax(1)  # (N, K) probabilities
