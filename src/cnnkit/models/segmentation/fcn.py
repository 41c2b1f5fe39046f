"""FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer & Darrell 2015): a classifier made fully convolutional.

    model = create_model("fcn8s", num_classes=21)                       # cnnkit's vgg16, fc6/fc7 as convolutions
    model = create_model("fcn8s", num_classes=3, backbone="efficientnet_lite0.imagenet", upsample="bilinear")
    model(torch.randn(2, 3, 37, 53)).shape                              # (2, 3, 37, 53) logits

VGG backbones: fc6 becomes a 7×7 convolution (padding 3: inputs are padded to the stride 32 instead of the
paper's 100-pixel padding) and fc7 a 1×1 convolution, their weights the classifier's FC weights reshaped
(`fc_to_conv`) when `fc_channels` is 4096; a smaller `fc_channels` gives new, narrower fc6/fc7. Other registry
classifiers (resnet18, efficientnet_lite0, ...) give their stride 8/16/32 maps (StageFeatures) directly.
1×1 score layers at strides 32 (score_fr), 16 (score_pool4) and 8 (score_pool3; the skip scores start at
zero, §4.2) are fused by element-wise addition after ×2 upsampling; the last upsampling goes to the input size.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.registry import register_model
from cnnkit.models.segmentation.encoder import registry_encoder
from cnnkit.models.segmentation.upsample import SegmentationNet, Up, check_upsample

__all__ = ["FCN", "fc_to_conv", "fcn32s", "fcn16s", "fcn8s"]

FCN_UPSAMPLE = ("transposed", "bilinear", "nearest")
_HEAD = ("score_fr", "score_pool4", "score_pool3", "upscore", "upscore2", "upscore16", "upscore_pool4", "upscore8")


def fc_to_conv(fc: nn.Linear, in_channels: int, kernel: int) -> nn.Conv2d:
    """The convolution computing `fc` at every position: (out, in_channels·k·k) weights reshaped to
    (out, in_channels, k, k) (PyTorch flattens (C, H, W) channel-major), padding k // 2, same bias."""
    if fc.in_features != in_channels * kernel * kernel:
        raise ValueError(f"an FC layer of {fc.in_features} inputs is not a {in_channels}×{kernel}×{kernel} conv")
    conv = nn.Conv2d(in_channels, fc.out_features, kernel, padding=kernel // 2)
    with torch.no_grad():
        conv.weight.copy_(fc.weight.reshape(fc.out_features, in_channels, kernel, kernel))
        conv.bias.copy_(fc.bias)
    return conv


class VGGEncoder(nn.Module):
    """VGG's `features` cut at pool3, pool4, pool5, then fc6 (7×7) and fc7 (1×1) as convolutions:
    (N, 3, H, W) → [pool3 (N, 256, H/8, W/8), pool4 (N, 512, H/16, W/16), fc7 (N, fc_channels, H/32, W/32)]."""

    def __init__(self, vgg: nn.Module, fc_channels: int = 4096, dropout: float = 0.5):
        super().__init__()
        features = vgg.features
        pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
        self.to_pool3 = features[: pools[2] + 1]
        self.to_pool4 = features[pools[2] + 1: pools[3] + 1]
        self.to_pool5 = features[pools[3] + 1:]
        c3 = [m.out_channels for m in self.to_pool3 if isinstance(m, nn.Conv2d)][-1]
        c5 = [m.out_channels for m in self.to_pool5 if isinstance(m, nn.Conv2d)][-1]
        fc6, fc7 = vgg.classifier[0], vgg.classifier[3]
        if fc_channels == fc6.out_features == fc7.out_features and fc6.in_features == c5 * 49:
            conv6, conv7 = fc_to_conv(fc6, c5, 7), fc_to_conv(fc7, fc_channels, 1)
        else:
            conv6, conv7 = nn.Conv2d(c5, fc_channels, 7, padding=3), nn.Conv2d(fc_channels, fc_channels, 1)
        self.fc6 = nn.Sequential(conv6, nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc7 = nn.Sequential(conv7, nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.out_channels = [c3, c5, fc_channels]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        pool3 = self.to_pool3(x)  # (N, 256, H/8, W/8)
        pool4 = self.to_pool4(pool3)  # (N, 512, H/16, W/16)
        return [pool3, pool4, self.fc7(self.fc6(self.to_pool5(pool4)))]  # ..., (N, fc, H/32, W/32)


class StageEncoder(nn.Module):
    """A registry classifier's maps at strides 8, 16, 32 (StageFeatures) as a list."""

    def __init__(self, backbone: str, trainable_layers: int | None = None):
        super().__init__()
        self.body, self.weights = registry_encoder(backbone, levels=3, trainable_layers=trainable_layers)
        self.out_channels = list(self.body.out_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x).values())


class FCN(SegmentationNet):
    """FCN-`variant`s (32, 16 or 8): score layers at strides 32 (→ 16 → 8), fused by addition, upsampled."""

    stride = 32

    def __init__(self, variant: int, num_classes: int, backbone: str = "vgg16", upsample: str = "transposed",
                 fc_channels: int = 4096, dropout: float = 0.5, trainable_layers: int | None = None):
        super().__init__()
        from cnnkit.models.detection.backbones import classification_backbone

        self.variant, self.upsample = variant, check_upsample(upsample, FCN_UPSAMPLE, f"fcn{variant}s")
        model, _ = classification_backbone(backbone)
        if type(model).__name__ == "VGG":
            self.encoder = VGGEncoder(model, fc_channels, dropout)
            self.encoder_weights = backbone if "." in backbone else None
        else:
            self.encoder = StageEncoder(backbone, trainable_layers)
            self.encoder_weights = self.encoder.weights
        c8, c16, c32 = self.encoder.out_channels
        c = num_classes
        self.score_fr = nn.Conv2d(c32, c, 1)
        if variant == 32:
            self.upscore = Up(self.upsample, c, c, 32)
            return
        self.score_pool4, self.upscore2 = nn.Conv2d(c16, c, 1), Up(self.upsample, c, c, 2)
        nn.init.zeros_(self.score_pool4.weight), nn.init.zeros_(self.score_pool4.bias)
        if variant == 16:
            self.upscore16 = Up(self.upsample, c, c, 16)
            return
        self.score_pool3, self.upscore_pool4 = nn.Conv2d(c8, c, 1), Up(self.upsample, c, c, 2)
        nn.init.zeros_(self.score_pool3.weight), nn.init.zeros_(self.score_pool3.bias)
        self.upscore8 = Up(self.upsample, c, c, 8)

    def segment(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, H, W), H, W multiples of 32
        size = x.shape[-2:]
        f8, f16, f32 = self.encoder(x)  # (N, c8, H/8, W/8), (N, c16, H/16, W/16), (N, c32, H/32, W/32)
        score = self.score_fr(f32)  # (N, C, H/32, W/32)
        if self.variant == 32:
            return self.upscore(score, size=size)
        score = self.upscore2(score, size=f16.shape[-2:]) + self.score_pool4(f16)  # (N, C, H/16, W/16)
        if self.variant == 16:
            return self.upscore16(score, size=size)
        score = self.upscore_pool4(score, size=f8.shape[-2:]) + self.score_pool3(f8)  # (N, C, H/8, W/8)
        return self.upscore8(score, size=size)  # (N, C, H, W)


_PAPER = "Long, Shelhamer & Darrell 2015 (FCN)"
_DOC = """FCN-{v}s on `backbone` (a registry classifier, default cnnkit's vgg16, or named weights such as
    'efficientnet_lite0.imagenet'); `upsample` transposed (bilinear-initialised, learned) | bilinear | nearest;
    `fc_channels` the width of fc6/fc7 on VGG (4096: the classifier's FC weights converted); `dropout` after
    fc6/fc7; `trainable_layers` the encoder stages that train (non-VGG backbones; None: all)."""


def _factory(variant: int):
    def build(*, num_classes: int = 21, in_channels: int = 3, backbone: str = "vgg16", upsample: str = "transposed",
              fc_channels: int = 4096, dropout: float = 0.5, trainable_layers: int | None = None) -> nn.Module:
        if in_channels != 3:
            raise ValueError(f"fcn{variant}s takes RGB images (in_channels=3), got {in_channels}")
        return FCN(variant, num_classes, backbone, upsample, fc_channels, dropout, trainable_layers)

    build.__name__ = build.__qualname__ = f"fcn{variant}s"
    build.__doc__ = _DOC.format(v=variant)
    return build


fcn32s = register_model("fcn32s", task="segment", paper=_PAPER, head=_HEAD, input_size=(3, 256, 256))(_factory(32))
fcn16s = register_model("fcn16s", task="segment", paper=_PAPER, head=_HEAD, input_size=(3, 256, 256))(_factory(16))
fcn8s = register_model("fcn8s", task="segment", paper=_PAPER, head=_HEAD, input_size=(3, 256, 256))(_factory(8))
