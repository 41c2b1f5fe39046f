"""SSD (Liu et al. 2016): default boxes on multi-scale feature maps, torchvision's SSD and DefaultBoxGenerator on
a registry backbone.

The backbone's last three stage outputs (strides 8, 16, 32) are followed by `extra_layers` blocks (1×1 conv
halving, 3×3 stride-2 conv) that give the coarser scales, as SSD's conv8-conv11 do after VGG's conv7: at
300 px the maps are 38, 19, 10, 5, 3, 2 cells wide. Images are resized to image_size × image_size inside.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD as _TorchvisionSSD
from torchvision.models.detection.ssd import SSDHead

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import StageFeatures
from cnnkit.models.detection.faster_rcnn import TorchvisionDetector, check_options
from cnnkit.models.pretrained import IMAGENET_MEAN, IMAGENET_STD
from cnnkit.models.registry import register_model

__all__ = ["SSDBackbone", "ssd"]

SSD300_SCALES = (0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05)  # torchvision's ssd300_vgg16, one more than maps


class SSDBackbone(nn.Module):
    """Stage outputs + extra stride-2 blocks: {"0": stride 8, "1": 16, "2": 32, "3": 64, ...}."""

    def __init__(self, body: StageFeatures, extra_layers: int = 3, width: int = 256):
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

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.body(x)  # {"0": (N, C0, H/8, W/8), "1": H/16, "2": H/32}
        last = maps[next(reversed(maps))]
        for block in self.extras:
            last = block(last)  # (N, width, H/64, W/64), then /128, ...
            maps[str(len(maps))] = last
        return maps


class SSDDetector(TorchvisionDetector):
    loss_names = {"bbox_regression": "loss_box_reg", "classification": "loss_classifier"}  # as Faster R-CNN's
    fp32_modules = ("detector.head",)  # its per-level score and box convs, in fp32 under autocast (as Faster R-CNN)

    def _postprocess_owner(self):
        return self.detector, {"score_thresh": "score_thresh", "nms_thresh": "nms_thresh",
                               "detections_per_img": "detections_per_img"}


@register_model("ssd", task="detect", paper="Liu et al. 2016 (SSD)", head="detector.head.classification_head",
                input_size=(3, 300, 300))
def ssd(*, num_classes: int = 91, in_channels: int = 3, backbone: str = "resnet18",
        backbone_weights: str | Path | None = None, trainable_layers: int | None = None, image_size: int = 300,
        extra_layers: int = 3, scales: tuple[float, ...] | None = None, score_thresh: float = 0.01,
        nms_thresh: float = 0.45, detections_per_img: int = 200, **detector_options) -> nn.Module:
    """SSD on a registry classifier `backbone` (`backbone_weights`: a file or e.g. 'resnet18.imagenet').
    Default boxes: aspect ratios 1, 2, 1/2 (and 3, 1/3 on the middle maps) at `scales` of the image side,
    one more scale than maps (the last one gives the extra square box); None: SSD300's 0.07-1.05 for six maps,
    evenly spaced 0.15-0.9 otherwise. `detector_options`: torchvision's SSD keywords (iou_thresh,
    topk_candidates, positive_fraction)."""
    if in_channels != 3:
        raise CnnkitError(f"ssd takes RGB images (in_channels=3), got in_channels={in_channels}")
    check_options(detector_options, _TorchvisionSSD, ("backbone", "anchor_generator", "size", "num_classes",
                                                      "image_mean", "image_std", "head", "score_thresh",
                                                      "nms_thresh", "detections_per_img"))
    body = StageFeatures.from_registry(backbone, weights=backbone_weights, levels=3,
                                       trainable_layers=trainable_layers)
    features = SSDBackbone(body, extra_layers)
    n_maps = len(features.out_channels)
    ratios = [[2]] + [[2, 3]] * max(n_maps - 3, 0) + [[2]] * min(2, n_maps - 1)
    if scales is None and n_maps == len(SSD300_SCALES) - 1:
        scales = SSD300_SCALES
    if scales is not None and len(scales) != n_maps + 1:
        raise CnnkitError(f"scales needs {n_maps + 1} values (one per map and one more), got {len(scales)}")
    boxes = DefaultBoxGenerator(ratios, scales=None if scales is None else list(scales))
    head = SSDHead(features.out_channels, boxes.num_anchors_per_location(), num_classes + 1)
    detector = _TorchvisionSSD(features, boxes, (image_size, image_size), num_classes + 1,
                               image_mean=list(IMAGENET_MEAN), image_std=list(IMAGENET_STD), head=head,
                               score_thresh=score_thresh, nms_thresh=nms_thresh,
                               detections_per_img=detections_per_img, **detector_options)
    return SSDDetector(detector, num_classes)
