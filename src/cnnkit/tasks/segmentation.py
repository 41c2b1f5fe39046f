"""Semantic segmentation: one class per pixel, a per-pixel loss and the confusion-matrix metrics per epoch.

A segmentation model (cnnkit.models.segmentation) maps normalised images (N, 3, H, W) to logits (N, C, H, W);
targets are class indices (N, H, W), with `ignore_index` (255) for pixels that count nowhere. The loss is any
cnnkit.losses.segmentation spec ('ce', 'dice', 'ce+dice', ...), one value per image. Validation fills a
confusion matrix over the whole split and ends the epoch with mIoU and pixel accuracy (val_miou selects
checkpoints), as Long et al. 2015 §5 define them.

    task = SegmentationTask(create_model("unet", num_classes=4), "ce+dice", num_classes=4)
    out = task.training_step(Batch(images, masks))      # out.loss, out.logs["pixel_accuracy"]
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Batch, StepOutput, Task, fp32

IGNORE_INDEX = 255


def pixel_accuracy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Share of the batch's non-ignored pixels whose arg-max class is right (0 when every pixel is ignored)."""
    valid = target != ignore_index  # (N, H, W)
    right = (logits.argmax(1) == target) & valid
    return right.sum() / valid.sum().clamp(min=1)


class SegmentationTask(Task):
    name = "segment"
    main_metric = "miou"
    higher_is_better = True
    monitor = "val_miou"
    default_loss = "ce"

    def __init__(self, model: nn.Module, loss: str | nn.Module | None = None, *, num_classes: int | None = None,
                 class_weight: torch.Tensor | None = None, ignore_index: int = IGNORE_INDEX, **options: Any):
        from cnnkit.losses.segmentation import segmentation_loss

        unsupported = [k for k, v in options.items() if v not in (None, 0, 0.0)]
        if unsupported:
            raise CnnkitError(f"{', '.join(unsupported)} do not apply to segmentation; drop them")
        self.model, self.penalty, self.mix, self.attack = model, None, None, None
        self.num_classes = int(num_classes or getattr(model, "num_classes", 0))
        if self.num_classes < 1:
            raise CnnkitError("SegmentationTask needs num_classes (the model's output channels)")
        self.ignore_index = ignore_index
        if loss is None or isinstance(loss, str):
            loss = segmentation_loss(loss or self.default_loss, num_classes=self.num_classes,
                                     class_weight=class_weight, ignore_index=ignore_index)
        self.loss = self.soft_loss = loss
        self.reset_metrics()

    def loss_inputs(self, outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if outputs.shape[-2:] != targets.shape[-2:]:
            raise CnnkitError(f"the model gave {tuple(outputs.shape[-2:])} logits for {tuple(targets.shape[-2:])} "
                              "masks; a segmentation model must keep the input's height and width")
        return outputs, targets

    def batch_logs(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pixel_accuracy": pixel_accuracy(outputs, targets, self.ignore_index)}

    # -- validation: one confusion matrix over the split ---------------------------------------------------
    def reset_metrics(self) -> None:
        from cnnkit.metrics.segmentation import ConfusionMatrix

        self.confusion = ConfusionMatrix(self.num_classes, self.ignore_index)
        self._seen = False

    def _step(self, batch: Batch, loss: nn.Module | None = None) -> StepOutput:
        outputs = fp32(self.model(batch.images))  # (N, C, H, W), fp32 also under autocast
        value = self._reduce(outputs, batch, loss)
        if not self.model.training:  # validation (Trainer.evaluate): every pixel into the split's matrix
            self.confusion.update(outputs.detach().argmax(1).cpu(), batch.targets.cpu())
            self._seen = True
        return StepOutput(value, {"loss": value.detach(), **self.batch_logs(outputs.detach(), batch.targets)})

    def epoch_metrics(self) -> dict[str, float]:
        """mIoU, frequency-weighted IoU and mean Dice of the validation pixels since reset_metrics."""
        if not self._seen:
            return {}
        scores = self.confusion.scores()
        self.reset_metrics()
        return {k: float(scores[k]) for k in ("miou", "fw_iou", "dice") if scores[k] is not None}

    @torch.inference_mode()
    def predict_step(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (N, C, H, W)."""
        return fp32(self.model(images)).softmax(1)
