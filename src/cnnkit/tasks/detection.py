"""Object detection: a detector in torchvision's convention, its summed losses, and COCO metrics per epoch.

A detection model (cnnkit.models.detection) takes images and, in training, the targets:
    model(images (N, 3, H, W) in [0, 1], [{"boxes": (K, 4) xyxy, "labels": (K,) 0..C-1}, ...]) → {name: loss}
and in eval mode returns [{"boxes": (D, 4), "scores": (D,), "labels": (D,)}, ...]. The Trainer logs each loss
term; validation keeps every image's detections and its ground truth and ends the epoch with COCO's mAP
(cnnkit.metrics.detection.evaluate_detections), which the checkpoints select on (val_map).

Instance segmentation (InstanceTask, task "instance": Mask R-CNN) adds "masks" to both: targets (K, H, W) uint8,
detections (D, 1, H, W) probabilities. Validation keeps each image's masks as COCO RLEs (binarised at 0.5, so
an epoch's masks stay small) and reports the box metrics and mask_map, mask_map50, mask_map75 (the same COCO
AP with mask IoU); the checkpoints select on val_mask_map (mask mAP@[.5:.95], COCO's primary number).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Batch, StepOutput, Task


def _cpu(d: dict) -> dict:
    return {k: v.detach().float().cpu() if k != "labels" else v.detach().cpu() for k, v in d.items()
            if k in ("boxes", "scores", "labels")}


class DetectionTask(Task):
    name = "detect"
    main_metric = "map"
    higher_is_better = True
    monitor = "val_map"
    default_loss = "detection"  # the model's own losses (RPN + box head, SSD's, YOLO's): not a cnnkit.losses.core name

    def __init__(self, model: nn.Module, loss: str | nn.Module | None = None, *, classes: list[str] | None = None,
                 **options: Any):
        if loss not in (None, "detection"):
            raise CnnkitError(f"a detector trains with its own losses; drop --loss {loss}")
        unsupported = [k for k, v in options.items() if v not in (None, 0, 0.0)]
        if unsupported:
            raise CnnkitError(f"{', '.join(unsupported)} do not apply to detection; drop them")
        self.model, self.penalty, self.mix, self.attack = model, None, None, None
        self.loss = self.soft_loss = None
        self.classes = list(classes or [])
        self.reset_metrics()

    # -- training -----------------------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> StepOutput:
        losses = self.model(batch.images, _plain(batch.targets))  # {name: scalar}
        total = sum(losses.values())
        return StepOutput(total, {"loss": total.detach(), **{k: v.detach() for k, v in losses.items()}})

    # -- validation: detections kept for the epoch's mAP --------------------------------------------------
    def reset_metrics(self) -> None:
        self._predictions: list[dict] = []
        self._targets: list[dict] = []

    def validation_step(self, batch: Batch) -> StepOutput:
        detections = self.model(batch.images)  # eval mode: one dict per image
        self._predictions += [_cpu(d) for d in detections]
        self._targets += [_cpu(t) for t in batch.targets]
        return StepOutput(torch.zeros(()), {})

    def epoch_metrics(self) -> dict[str, float]:
        """COCO mAP@[.5:.95], @.5 and @.75 of the detections since reset_metrics (nothing when none)."""
        if not self._targets:
            return {}
        from cnnkit.metrics.detection import evaluate_detections

        result = evaluate_detections(self._targets, self._predictions, self.classes)
        self.reset_metrics()
        return {k: max(float(result[k]), 0.0) for k in ("map", "map50", "map75")}

    @torch.inference_mode()
    def predict_step(self, images: torch.Tensor) -> list[dict]:
        return [_cpu(d) for d in self.model(images)]


class InstanceTask(DetectionTask):
    """Instance segmentation: a detector that also returns masks (mask_rcnn); metrics for boxes and masks."""

    name = "instance"
    main_metric = "mask_map"
    monitor = "val_mask_map"

    def validation_step(self, batch: Batch) -> StepOutput:
        detections = self.model(batch.images)  # eval mode: one dict per image, with "masks" (D, 1, H, W)
        self._predictions += [with_rles(d) for d in detections]
        self._targets += [with_rles(t) for t in batch.targets]
        return StepOutput(torch.zeros(()), {})

    def epoch_metrics(self) -> dict[str, float]:
        """Box and mask COCO mAP@[.5:.95], @.5, @.75 since reset_metrics (nothing when none)."""
        if not self._targets:
            return {}
        from cnnkit.metrics.detection import evaluate_instances

        result = evaluate_instances(self._targets, self._predictions, self.classes)
        self.reset_metrics()
        keys = ("map", "map50", "map75", "mask_map", "mask_map50", "mask_map75")
        return {k: max(float(result[k]), 0.0) for k in keys}

    @torch.inference_mode()
    def predict_step(self, images: torch.Tensor) -> list[dict]:
        return [with_rles(d) for d in self.model(images)]


def with_rles(d: dict) -> dict:
    """Boxes, scores, labels on the CPU, and the masks as COCO RLEs ("rles", binarised at 0.5)."""
    from cnnkit.metrics.mask_rle import encode_masks

    if "masks" not in d:
        raise CnnkitError("instance segmentation needs masks in every target and detection; train a mask model "
                          "(mask_rcnn) on data with instance masks")
    return {**_cpu(d), "rles": encode_masks(d["masks"])}


def _plain(targets: list[dict]) -> list[dict]:
    """Only what the detectors read (boxes, labels, masks): bookkeeping keys (image_id, scale, pad) stay out."""
    return [{"boxes": t["boxes"], "labels": t["labels"], **({"masks": t["masks"]} if "masks" in t else {})}
            for t in targets]
