"""Faster R-CNN (Ren et al. 2015): torchvision's implementation (RPN with anchors, RoIAlign, two-FC box head)
on a registry backbone, with an optional feature pyramid (Lin et al. 2017).

    model = create_model("faster_rcnn", num_classes=2, backbone="efficientnet_lite0",
                         backbone_weights="efficientnet_lite0.imagenet", fpn=True, min_size=512)
    losses = model(images, targets)        # train mode: {"loss_classifier", "loss_box_reg", "loss_objectness", ...}
    detections = model.eval()(images)      # [{"boxes": (D, 4), "scores": (D,), "labels": (D,)}, ...]

Labels are cnnkit's 0-based class indices; torchvision's background index 0 stays inside (TorchvisionDetector).
"""
from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN as _TorchvisionFasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.detection.backbones import build_backbone
from cnnkit.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.models.registry import register_model

__all__ = ["TorchvisionDetector", "check_inputs", "check_options", "faster_rcnn", "rcnn_backbone"]


def check_options(options: dict, detector: type, own: tuple[str, ...]) -> None:
    """torchvision's detectors pass unknown keywords on silently; cnnkit refuses them with the known ones."""
    known = [p for p in inspect.signature(detector.__init__).parameters if p not in ("self", "kwargs", *own)]
    for name in options:
        if name not in known:
            raise unknown_name(f"{detector.__name__} option", name, known)


def check_inputs(images: list[torch.Tensor], targets: list[dict] | None, training: bool) -> None:
    """The shared contract: a list of (3, H, W) float images; in train mode one target dict per image."""
    if isinstance(images, torch.Tensor) and images.dim() != 4 or not len(images):
        raise CnnkitError("detectors take a list of (3, H, W) float images in [0, 1] (or an (N, 3, H, W) batch)")
    for img in images:
        if img.dim() != 3 or img.shape[0] != 3 or not img.is_floating_point():
            raise CnnkitError(f"each image must be a (3, H, W) float tensor in [0, 1], got {tuple(img.shape)} "
                              f"{img.dtype}")
    if training:
        if targets is None:
            raise CnnkitError("a detector in train mode needs targets [{'boxes': (K, 4) xyxy, 'labels': (K,)}, ...]; "
                              "call model.eval() to get detections")
        if len(targets) != len(images):
            raise CnnkitError(f"{len(images)} images but {len(targets)} targets")


class TorchvisionDetector(nn.Module):
    """cnnkit's detection contract around a torchvision detector, whose class 0 is the background: labels
    shift by +1 going in and −1 coming out. Train mode → dict of losses; eval mode → detections per image."""

    loss_names: dict[str, str] = {}  # torchvision's loss name → cnnkit's, where they differ

    def __init__(self, detector: nn.Module, num_classes: int):
        super().__init__()
        self.detector, self.num_classes = detector, num_classes

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        check_inputs(images, targets, self.training)
        images = list(images)
        if self.training:
            shifted = [{"boxes": t["boxes"].float(), "labels": t["labels"].long() + 1,
                        **({"masks": t["masks"]} if "masks" in t else {})} for t in targets]
            losses = self.detector(images, shifted)
            return {self.loss_names.get(k, k): v for k, v in losses.items()}
        out = self.detector(images)  # Mask R-CNN adds "masks": (D, 1, H, W) probabilities
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - 1,
                 **({"masks": o["masks"]} if "masks" in o else {})} for o in out]

    def _postprocess_owner(self) -> tuple[nn.Module, dict[str, str]]:
        """(module, {our option: its attribute}) holding the thresholds."""
        raise NotImplementedError

    def set_postprocess(self, *, score_thresh: float | None = None, nms_thresh: float | None = None,
                        detections_per_img: int | None = None) -> None:
        """Change the eval-mode filtering: minimum score, NMS IoU threshold, most detections per image."""
        owner, names = self._postprocess_owner()
        for option, value in (("score_thresh", score_thresh), ("nms_thresh", nms_thresh),
                              ("detections_per_img", detections_per_img)):
            if value is not None:
                setattr(owner, names[option], value)


class FasterRCNN(TorchvisionDetector):
    # the layers whose outputs are scores and box offsets run in fp32 under autocast (cnnkit.engine.precision):
    # bf16 keeps 8 bits, too few for box coordinates (a step of 2 px at 384)
    fp32_modules = ("detector.rpn.head.cls_logits", "detector.rpn.head.bbox_pred", "detector.roi_heads.box_predictor")

    def _postprocess_owner(self):
        return self.detector.roi_heads, {"score_thresh": "score_thresh", "nms_thresh": "nms_thresh",
                                         "detections_per_img": "detections_per_img"}

    @torch.inference_mode()
    def box_probabilities(self, images: list[torch.Tensor], boxes: list[torch.Tensor]) -> list[torch.Tensor]:
        """The box head's opinion of GIVEN boxes, R-CNN's region classifier with these boxes as the proposals:
        per image, (K, C) class probabilities (softmax over background + C classes, background dropped) of its
        boxes (K, 4) xyxy in the image's pixels. images as for forward, (3, H, W) in [0, 1]."""
        check_inputs(images, None, False)
        det = self.detector
        sized, _ = det.transform(list(images))  # resized to min_size and normalised, as in forward
        scaled = [b.to(sized.tensors).reshape(-1, 4) * b.new_tensor([nw / w, nh / h, nw / w, nh / h]).to(sized.tensors)
                  for b, img, (nh, nw) in zip(boxes, images, sized.image_sizes) for h, w in [img.shape[-2:]]]
        features = det.backbone(sized.tensors)
        pooled = det.roi_heads.box_roi_pool(features, scaled, sized.image_sizes)  # (ΣK, C_feat, 7, 7)
        logits, _ = det.roi_heads.box_predictor(det.roi_heads.box_head(pooled))  # (ΣK, 1 + C)
        return list(logits.float().softmax(-1)[:, 1:].split([len(b) for b in scaled]))


def rcnn_backbone(backbone: str, weights: str | Path | None, *, fpn: bool, levels: int,
                  trainable_layers: int | None, out_channels: int, anchor_sizes: tuple | None,
                  aspect_ratios: tuple[float, ...]) -> tuple[nn.Module, AnchorGenerator, list[str]]:
    """What Faster and Mask R-CNN share: (backbone with or without FPN, the RPN's anchors, the maps RoIAlign
    pools from). Anchors: one size per FPN level (4 × its stride), or 32-512 on the single map."""
    body = build_backbone(backbone, weights=weights, fpn=fpn, levels=levels,
                          trainable_layers=trainable_layers, out_channels=out_channels)
    n_maps = len(body.strides)
    if anchor_sizes is None:
        anchor_sizes = tuple((4 * s,) for s in body.strides) if fpn else ((32, 64, 128, 256, 512),)
    anchor_sizes = tuple(tuple(a) if isinstance(a, (tuple, list)) else (a,) for a in anchor_sizes)
    if len(anchor_sizes) != n_maps:
        raise CnnkitError(f"anchor_sizes needs one tuple per feature map ({n_maps}), got {len(anchor_sizes)}")
    anchors = AnchorGenerator(anchor_sizes, (tuple(aspect_ratios),) * n_maps)
    roi_maps = [str(i) for i in range(len(body.body.strides))] if fpn else ["0"]
    return body, anchors, roi_maps


_OWN_OPTIONS = ("backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std",  # set by cnnkit
                "rpn_anchor_generator", "box_roi_pool", "box_head", "box_predictor", "box_score_thresh",
                "box_nms_thresh", "box_detections_per_img", "rpn_post_nms_top_n_test", "box_batch_size_per_image")


@register_model("faster_rcnn", task="detect", paper="Ren et al. 2015 (Faster R-CNN); Lin et al. 2017 (FPN)",
                head="detector.roi_heads.box_predictor", input_size=(3, 600, 1000))
def faster_rcnn(*, num_classes: int = 91, in_channels: int = 3, backbone: str = "resnet18", fpn: bool = True,
                backbone_weights: str | Path | None = None, trainable_layers: int | None = None, levels: int = 3,
                out_channels: int = 256, min_size: int = 600, max_size: int = 1000,
                anchor_sizes: tuple | None = None, aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
                score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
                rpn_post_nms_top_n_test: int = 300, box_batch_size_per_image: int = 128,
                representation_size: int = 1024, **detector_options) -> nn.Module:
    """Faster R-CNN on a registry classifier `backbone` (any, e.g. resnet18, resnet50, vgg16,
    efficientnet_lite0; `backbone_weights` a file or a weight name like 'efficientnet_lite0.imagenet').
    `fpn`: a feature pyramid over the last `levels` stage outputs + a pooled level, one anchor size per level
    (4 × its stride: 32, 64, 128, 256 for strides 8-64); without it, the last map (stride 32) projected to
    `out_channels`, anchors 32-512 at every location. Images are resized so their short side is `min_size`
    (long side ≤ `max_size`) and normalised with ImageNet's mean/std inside. `trainable_layers`: stages that
    train, counted from the last (None: 3 with weights, all without). `detector_options`: torchvision's
    FasterRCNN keywords (rpn_batch_size_per_image, rpn_post_nms_top_n_train, ...). Two defaults differ from
    torchvision's to save CPU time: 300 proposals at test time (the paper's), 128 sampled RoIs per image
    in training (torchvision: 1000 and 512). `representation_size`: width of the box head's two FC layers
    (its first one, out_channels·7·7 → representation_size, dominates the cost per RoI on a CPU)."""
    if in_channels != 3:
        raise CnnkitError(f"faster_rcnn takes RGB images (in_channels=3), got in_channels={in_channels}")
    check_options(detector_options, _TorchvisionFasterRCNN, _OWN_OPTIONS)
    body, anchors, roi_maps = rcnn_backbone(backbone, backbone_weights, fpn=fpn, levels=levels,
                                            trainable_layers=trainable_layers, out_channels=out_channels,
                                            anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios)
    detector = _TorchvisionFasterRCNN(
        body, num_classes=None, min_size=min_size, max_size=max_size,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(roi_maps, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(out_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test, box_batch_size_per_image=box_batch_size_per_image,
        box_score_thresh=score_thresh, box_nms_thresh=nms_thresh, box_detections_per_img=detections_per_img,
        **detector_options)
    return FasterRCNN(detector, num_classes)
