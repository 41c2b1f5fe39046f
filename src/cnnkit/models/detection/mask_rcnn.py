"""Mask R-CNN (He et al. 2017): Faster R-CNN plus a small FCN that predicts a 28 × 28 mask in every box,
torchvision's implementation on a registry backbone (the same options as faster_rcnn). Task "instance".

    model = create_model("mask_rcnn", num_classes=1, backbone="efficientnet_lite0.imagenet", fpn=True,
                         min_size=384, max_size=384)
    # targets [{"boxes": (K, 4) xyxy, "labels": (K,) 0..C-1, "masks": (K, H, W) uint8}, ...]
    losses = model(images, targets)   # {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", ...}
    found = model.eval()(images)      # [{"boxes": (D, 4), "scores": (D,), "labels": (D,), "masks": (D, 1, H, W)}]

The masks come back as torchvision gives them: float probabilities in [0, 1], pasted into each image's pixels
(threshold at 0.5 for a binary mask). Labels are cnnkit's 0-based class indices (TorchvisionDetector).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection import MaskRCNN as _TorchvisionMaskRCNN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.detection.faster_rcnn import FasterRCNN, check_options, rcnn_backbone
from cnnkit.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.models.registry import register_model

__all__ = ["MASK_NORMS", "MaskRCNN", "mask_rcnn"]
# the mask head's normalisation after each 3 × 3 convolution: channels → layer (None: none, a conv with bias)
MASK_NORMS = {"group": lambda c: nn.GroupNorm(math.gcd(32, c), c), "batch": nn.BatchNorm2d, "none": None}


class MaskRCNN(FasterRCNN):
    """Faster R-CNN's contract, plus "masks" in: (K, H, W) uint8 per target, and out: (D, 1, H, W) float."""

    fp32_modules = (*FasterRCNN.fp32_modules, "detector.roi_heads.mask_predictor")

    def forward(self, images: list[torch.Tensor], targets: list[dict] | None = None):
        if self.training and targets is not None:
            for n, t in enumerate(targets):
                if "masks" not in t:
                    raise CnnkitError(f"mask_rcnn trains on instance masks: target {n} lacks 'masks' (K, H, W); "
                                      "load the data with masks (--task instance)")
                if t["masks"].shape[0] != len(t["boxes"]):
                    raise CnnkitError(f"target {n} has {len(t['boxes'])} boxes but {t['masks'].shape[0]} masks")
        return super().forward(images, targets)


_OWN_OPTIONS = ("backbone", "num_classes", "min_size", "max_size", "image_mean", "image_std",  # set by cnnkit
                "rpn_anchor_generator", "box_roi_pool", "box_head", "box_predictor", "box_score_thresh",
                "box_nms_thresh", "box_detections_per_img", "rpn_post_nms_top_n_test", "box_batch_size_per_image",
                "mask_roi_pool", "mask_head", "mask_predictor")


@register_model("mask_rcnn", task="instance", paper="He et al. 2017 (Mask R-CNN); Lin et al. 2017 (FPN)",
                head=("detector.roi_heads.box_predictor", "detector.roi_heads.mask_predictor"),
                input_size=(3, 600, 1000))
def mask_rcnn(*, num_classes: int = 91, in_channels: int = 3, backbone: str = "resnet18", fpn: bool = True,
              backbone_weights: str | Path | None = None, trainable_layers: int | None = None, levels: int = 3,
              out_channels: int = 256, min_size: int = 600, max_size: int = 1000,
              anchor_sizes: tuple | None = None, aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0),
              score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
              rpn_post_nms_top_n_test: int = 300, box_batch_size_per_image: int = 128,
              representation_size: int = 1024, mask_channels: int = 256, mask_layers: int = 4,
              mask_norm: str = "group", **detector_options) -> nn.Module:
    """Mask R-CNN on a registry classifier `backbone`; every option of faster_rcnn means the same here (see
    cnnkit.models.detection.faster_rcnn.faster_rcnn). The mask branch: RoIAlign 14 × 14 from the same maps,
    `mask_layers` 3 × 3 convolutions of `mask_channels` (the paper's 4 × 256), a 2× transposed convolution
    and one 28 × 28 mask per class, trained with per-pixel binary cross-entropy on the box's own class.
    `mask_norm`: 'group' (default: GroupNorm after each of those convolutions, as Wu & He 2018's Mask R-CNN
    with GN heads), 'batch' (torchvision's v2 recipe) or 'none' (the paper's and torchvision's v1 head). Without
    a normalisation the first mask logits scale with the backbone's feature magnitudes: on Penn-Fudan with
    EfficientNet-Lite0 (ImageNet) + FPN the first step's mask loss was 29 (GroupNorm: 2.4, and 0.7 four AdamW
    steps later; without it still 2.4 after ten), which costs a short run most of its mask AP.
    `detector_options`: torchvision's MaskRCNN keywords (rpn_batch_size_per_image, ...)."""
    if in_channels != 3:
        raise CnnkitError(f"mask_rcnn takes RGB images (in_channels=3), got in_channels={in_channels}")
    if mask_layers < 1 or mask_channels < 1:
        raise CnnkitError(f"mask_layers and mask_channels must be at least 1, got {mask_layers}, {mask_channels}")
    if mask_norm not in MASK_NORMS:
        raise unknown_name("mask_norm", mask_norm, MASK_NORMS)
    check_options(detector_options, _TorchvisionMaskRCNN, _OWN_OPTIONS)
    body, anchors, roi_maps = rcnn_backbone(backbone, backbone_weights, fpn=fpn, levels=levels,
                                            trainable_layers=trainable_layers, out_channels=out_channels,
                                            anchor_sizes=anchor_sizes, aspect_ratios=aspect_ratios)
    detector = _TorchvisionMaskRCNN(
        body, num_classes=None, min_size=min_size, max_size=max_size,
        image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(roi_maps, output_size=7, sampling_ratio=2),
        box_head=TwoMLPHead(out_channels * 7 * 7, representation_size),
        box_predictor=FastRCNNPredictor(representation_size, num_classes + 1),
        mask_roi_pool=MultiScaleRoIAlign(roi_maps, output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(out_channels, [mask_channels] * mask_layers, 1,  # (R, C, 14, 14)
                                norm_layer=MASK_NORMS[mask_norm]),
        mask_predictor=MaskRCNNPredictor(mask_channels, mask_channels, num_classes + 1),  # (R, classes, 28, 28)
        rpn_post_nms_top_n_test=rpn_post_nms_top_n_test, box_batch_size_per_image=box_batch_size_per_image,
        box_score_thresh=score_thresh, box_nms_thresh=nms_thresh, box_detections_per_img=detections_per_img,
        **detector_options)
    return MaskRCNN(detector, num_classes)
