"""SSD (Liu et al. 2016): default boxes on multi-scale feature maps, torchvision's SSD and DefaultBoxGenerator on
a registry backbone.

The backbone's last three stage outputs (strides 8, 16, 32) are followed by `extra_layers` blocks (1×1 conv
halving, 3×3 stride-2 conv) that give the coarser scales, as SSD's conv8-conv11 do after VGG's conv7: at
300 px the maps are 38, 19, 10, 5, 3, 2 cells wide. Images are resized to image_size × image_size inside.

Two changes to torchvision's SSD make it learn on a modern backbone (docs/detection.md, "Why SSD did not
learn"): every map goes through SSD's L2Norm (scale 20) before the heads, not only the first, since the raw
maps differ in scale by up to 700× (EfficientNet-Lite0: RMS 9.7 at stride 8, 0.014 on the last extra block);
and the head starts as RetinaNet's, every default box background with probability 0.99, where torchvision's
xavier init gave logits of up to ±64 and a first classification loss of 146.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as _TorchvisionSSD
from torchvision.models.detection.ssd import SSDHead

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import StageFeatures
from cnnkit.models.detection.faster_rcnn import TorchvisionDetector, check_options
from cnnkit.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.models.registry import register_model

__all__ = ["L2Norm", "SSDBackbone", "init_head", "ssd"]

# SSD's own training recipe (cnnkit.recipes.runner.model_train_defaults), measured on Penn-Fudan (docs/detection.md,
# "Why SSD did not learn"): without the warm-up val mAP@0.5 was 0.79 against 0.82-0.85; half an epoch of it
# leaves `--epochs 1` possible (a warm-up must be shorter than the run)
TRAIN = {"optimizer": "adamw", "lr": 1e-3, "schedule": "cosine", "warmup_epochs": 0.5}
SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)  # torchvision's ssd300_vgg16, one more than maps


class L2Norm(nn.Module):
    """SSD's normalisation of conv4_3 (ParseNet, Liu et al. 2015): each position's channel vector scaled to unit
    L2 norm, then times a learnable per-channel weight that starts at `scale`: (N, C, H, W) → the same."""

    def __init__(self, channels: int, scale: float = 20.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full((channels,), float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, dim=1, eps=1e-6) * self.weight.view(1, -1, 1, 1)


class SSDBackbone(nn.Module):
    """Stage outputs + extra stride-2 blocks: {"0": stride 8, "1": 16, "2": 32, "3": 64, ...}; with `norm_scale`,
    every map goes through its own L2Norm (starting at that scale) on its way to the heads."""

    def __init__(self, body: StageFeatures, extra_layers: int = 3, width: int = 256, norm_scale: float | None = None):
        super().__init__()
        self.body = body
        extras, c = [], body.out_channels[-1]
        for _ in range(extra_layers):
            extras.append(nn.Sequential(
                nn.Conv2d(c, width // 2, 1), nn.ReLU(inplace=True),
                nn.Conv2d(width // 2, width, 3, stride=2, padding=1), nn.ReLU(inplace=True)))
            c = width
        self.extras = nn.ModuleList(extras)
        self.out_channels = list(body.out_channels) + [width] * extra_layers
        self.norms = None if norm_scale is None else nn.ModuleList(L2Norm(c, norm_scale) for c in self.out_channels)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)  # {"0": (N, C0, H/8, W/8), "1": H/16, "2": H/32}
        last = maps[next(reversed(maps))]
        for block in self.extras:
            last = block(last)  # (N, width, H/64, W/64), then /128, ...
            maps[str(len(maps))] = last
        if self.norms is not None:  # the extras read the raw maps; only what the heads see is normalised
            maps = OrderedDict((k, norm(v)) for (k, v), norm in zip(maps.items(), self.norms))
        return maps


def init_head(head: SSDHead, num_classes: int, prior: float, std: float = 0.01) -> None:
    """RetinaNet's initialisation (Lin et al. 2017) for SSD's softmax head: every score and box conv N(0, std²),
    box biases 0, and class biases such that every default box starts as background with probability
    1 − `prior` and as each of the `num_classes` classes with prior / num_classes (background logit
    log((1 − prior) · num_classes / prior), class logits 0)."""
    if not 0 < prior < 1:
        raise CnnkitError(f"prior must be in (0, 1), got {prior}")
    background = math.log((1 - prior) * num_classes / prior)
    for conv in [*head.classification_head.module_list, *head.regression_head.module_list]:
        nn.init.normal_(conv.weight, std=std)
        nn.init.zeros_(conv.bias)
    with torch.no_grad():
        for conv in head.classification_head.module_list:
            conv.bias.view(-1, num_classes + 1)[:, 0] = background  # (anchors, 1 + classes), background first


class SSDDetector(TorchvisionDetector):
    loss_names = {"bbox_regression": "loss_box_reg", "classification": "loss_classifier"}  # as Faster R-CNN's
    fp32_modules = ("detector.head",)  # its per-level score and box convs, in fp32 under autocast (as Faster R-CNN)

    def _postprocess_owner(self):
        return self.detector, {"score_thresh": "score_thresh", "nms_thresh": "nms_thresh",
                               "detections_per_img": "detections_per_img"}


@register_model("ssd", task="detect", paper="Liu et al. 2016 (SSD)", head="detector.head.classification_head",
                input_size=(3, 300, 300), train=TRAIN)
def ssd(*, num_classes: int = 91, in_channels: int = 3, backbone: str = "resnet18",
        backbone_weights: str | Path | None = None, trainable_layers: int | None = None, image_size: int = 300,
        extra_layers: int = 3, scales: tuple[float, ...] | None = None, norm_scale: float | None = 20.0,
        prior: float | None = 0.01, score_thresh: float = 0.01, nms_thresh: float = 0.45,
        detections_per_img: int = 200, **detector_options) -> nn.Module:
    """SSD on a registry classifier `backbone` (`backbone_weights`: a file or e.g. 'resnet18.imagenet').
    Default boxes: aspect ratios 1, 2, 1/2 (and 3, 1/3 on the middle maps) at `scales` of the image side,
    one more scale than maps (the last one gives the extra square box); None: SSD300's 0.07-1.05 for six maps,
    evenly spaced 0.15-0.9 otherwise. `norm_scale`: an L2Norm on every map before the heads, starting at this
    scale (None: the raw maps); `prior`: the class-bias prior of init_head (None: torchvision's xavier init,
    zero biases). `detector_options`: torchvision's SSD keywords (iou_thresh,
    topk_candidates, positive_fraction)."""
    if in_channels != 3:
        raise CnnkitError(f"ssd takes RGB images (in_channels=3), got in_channels={in_channels}")
    check_options(detector_options, _TorchvisionSSD, ("backbone", "anchor_generator", "size", "num_classes",
                                                      "image_mean", "image_std", "head", "score_thresh",
                                                      "nms_thresh", "detections_per_img"))
    body = StageFeatures.from_registry(backbone, weights=backbone_weights, levels=3,
                                       trainable_layers=trainable_layers)
    features = SSDBackbone(body, extra_layers, norm_scale=norm_scale)
    n_maps = len(features.out_channels)
    ratios = [[2]] + [[2, 3]] * max(n_maps - 3, 0) + [[2]] * min(2, n_maps - 1)
    if scales is None and n_maps == len(SSD300_SCALES) - 1:
        scales = SSD300_SCALES
    if scales is not None and len(scales) != n_maps + 1:
        raise CnnkitError(f"scales needs {n_maps + 1} values (one per map and one more), got {len(scales)}")
    boxes = DefaultBoxGenerator(ratios, scales=None if scales is None else list(scales))
    head = SSDHead(features.out_channels, boxes.num_anchors_per_location(), num_classes + 1)
    if prior is not None:
        init_head(head, num_classes, prior)
    detector = _TorchvisionSSD(features, boxes, (image_size, image_size), num_classes + 1,
                               image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), head=head,
                               score_thresh=score_thresh, nms_thresh=nms_thresh,
                               detections_per_img=detections_per_img, **detector_options)
    return SSDDetector(detector, num_classes)
