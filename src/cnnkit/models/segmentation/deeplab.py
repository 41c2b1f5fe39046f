"""DeepLabv3 (Chen, Papandreou, Schroff & Adam 2017): atrous spatial pyramid pooling on a dilated backbone.

    model = create_model("deeplabv3", num_classes=21)                       # resnet50, output stride 16
    model = create_model("deeplabv3", num_classes=2, backbone="resnet18", output_stride=8, aspp_channels=32)
    model(torch.randn(2, 3, 37, 53)).shape                                  # (2, num_classes, 37, 53)

The backbone (a registry classifier or named weights, StageFeatures' deepest map) keeps `output_stride`
(16 or 8): cnnkit's ResNet has no replace_stride_with_dilation, so `encoder.dilate` does the same on the
built network (strided convolutions past the output stride stride 1 and the k×k convolutions after them are
dilated). Backbones striding by pooling or TF-SAME convolutions (VGG, efficientnet_lite0.imagenet) need
output_stride=32. The head is torchvision's DeepLabHead (ASPP at `atrous_rates` + 3×3 conv, BN, ReLU, 1×1
classifier; `aspp_channels` other than 256 builds the same layers narrower); the logits are upsampled
bilinearly to the input. ASPP's image pooling has BN on a 1×1 map: train with batches of 2 or more.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP, DeepLabHead

from cnnkit.models.registry import register_model
from cnnkit.models.segmentation.encoder import deepest, dilate, registry_encoder
from cnnkit.models.segmentation.upsample import SegmentationNet, Up, check_upsample

__all__ = ["DeepLabV3", "deeplabv3", "deeplab_head"]

RATES = {8: (12, 24, 36), 16: (6, 12, 18), 32: (3, 6, 9)}  # the paper's rates at output stride 16, ×2 at 8


def deeplab_head(in_channels: int, num_classes: int, rates: tuple[int, ...], channels: int = 256) -> nn.Sequential:
    """torchvision's DeepLabHead (its layers and state-dict keys), `channels` wide."""
    if channels == 256:
        return DeepLabHead(in_channels, num_classes, rates)
    return nn.Sequential(ASPP(in_channels, list(rates), channels),
                         nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
                         nn.Conv2d(channels, num_classes, 1))


class DeepLabV3(SegmentationNet):
    """Dilated backbone (N, c, H/os, W/os) → DeepLabHead (N, C, H/os, W/os) → upsampled (N, C, H, W)."""

    def __init__(self, num_classes: int, backbone: str = "resnet50", output_stride: int = 16,
                 atrous_rates: tuple[int, ...] | None = None, aspp_channels: int = 256, upsample: str = "bilinear",
                 trainable_layers: int | None = None):
        super().__init__()
        self.upsample = check_upsample(upsample, ("bilinear", "nearest"), "deeplabv3")
        self.backbone, self.encoder_weights = registry_encoder(backbone, levels=1, trainable_layers=trainable_layers)
        dilate(self.backbone, output_stride)
        self.stride = self.backbone.strides[-1]
        rates = RATES[output_stride] if atrous_rates is None else tuple(atrous_rates)
        self.classifier = deeplab_head(self.backbone.out_channels[-1], num_classes, rates, aspp_channels)
        self.up = Up(self.upsample, num_classes, num_classes, self.stride)

    def segment(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W), H, W multiples of self.stride
        features = deepest(self.backbone, x)  # (N, c, H/os, W/os)
        return self.up(self.classifier(features), size=x.shape[-2:])  # (N, num_classes, H, W)


@register_model("deeplabv3", task="segment", paper="Chen et al. 2017 (DeepLabv3)", head="classifier.4",
                input_size=(3, 256, 256))
def deeplabv3(*, num_classes: int = 21, in_channels: int = 3, backbone: str = "resnet50", output_stride: int = 16,
              atrous_rates: tuple[int, ...] | None = None, aspp_channels: int = 256, upsample: str = "bilinear",
              trainable_layers: int | None = None) -> nn.Module:
    """DeepLabv3 on `backbone` (registry classifier or named weights) kept at `output_stride` 8 | 16 | 32 by
    dilation; ASPP `atrous_rates` (None: 6, 12, 18 at 16; 12, 24, 36 at 8) `aspp_channels` wide; `upsample`
    bilinear | nearest to the input; `trainable_layers`: encoder stages that train (None: all)."""
    if in_channels != 3:
        raise ValueError(f"deeplabv3 takes RGB images (in_channels=3), got {in_channels}")
    return DeepLabV3(num_classes, backbone, output_stride, atrous_rates, aspp_channels, upsample, trainable_layers)
