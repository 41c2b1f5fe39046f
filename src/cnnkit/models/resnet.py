"""ResNet (He, Zhang, Ren, Sun 2015), with torchvision's state-dict keys so its weight files load strictly.

Also the paper's plain twins (fig. 3: the same layers without shortcuts) and its three shortcut options
(§3.3): A zero-pads the extra channels (parameter-free), B projects where the shape changes, C always.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import make_activation
from cnnkit.models.registry import register_model

SHORTCUTS = ("A", "B", "C", "none")


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A: identity, subsampled by `stride`, the extra channels zero-padded at the end. No parameters."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.extra, self.stride = c_out - c_in, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, c_in, H, W) → (N, c_out, H/stride, W/stride)
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra))

    def extra_repr(self) -> str:
        return f"extra_channels={self.extra}, stride={self.stride}"


def _shortcut(kind: str, c_in: int, c_out: int, stride: int) -> nn.Module | None:
    """The shortcut module of `kind` (see SHORTCUTS); None means the identity (or none at all, for 'none')."""
    if kind not in SHORTCUTS:
        raise CnnkitError(f"shortcut must be one of {', '.join(SHORTCUTS)}, got {kind!r}")
    same_shape = stride == 1 and c_in == c_out
    if kind == "none" or (same_shape and kind != "C"):
        return None
    if kind == "A":
        return ZeroPadShortcut(c_in, c_out, stride)
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions plus the shortcut: y = act(F(x) + x); y = act(F(x)) for the plain net."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1, shortcut: str = "B", act: str | dict = "relu"):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(c_in, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width), nn.BatchNorm2d(width)
        self.act1, self.act2 = make_activation(act, width), make_activation(act, width)
        self.downsample = _shortcut(shortcut, c_in, width, stride)  # torchvision's name, even for option A
        self.residual = shortcut != "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, c_in, H, W) → (N, width, H/stride, W/stride)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act2(out)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (stride here, as torchvision's v1.5), 1×1 expand ×4, plus the shortcut."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1, shortcut: str = "B", act: str | dict = "relu"):
        super().__init__()
        c_out = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.act1, self.act2 = make_activation(act, width), make_activation(act, width)
        self.act3 = make_activation(act, c_out)
        self.downsample = _shortcut(shortcut, c_in, c_out, stride)
        self.residual = shortcut != "none"

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, c_in, H, W) → (N, 4·width, H/stride, W/stride)
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.act3(out)


class ResNet(nn.Module):
    """ImageNet ResNet: 7×7/2 stem, 3×3/2 max pool, four stages (64..512 wide), global pool, dropout, FC.

    `shortcut` is the paper's option 'A', 'B' (torchvision's, the default) or 'C', or 'none' for the
    plain net. `activation` (a name of cnnkit.models.layers) and `dropout` before the FC keep
    torchvision's state-dict keys, unless the activation has parameters (PReLU and Maxout add theirs).
    """

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], num_classes: int = 1000,
                 in_channels: int = 3, shortcut: str = "B", activation: str | dict = "relu", dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False)  # (N, 64, H/2, W/2)
        self.bn1, self.act = nn.BatchNorm2d(64), make_activation(activation, 64)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)  # (N, 64, H/4, W/4)
        c_in = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, width, 2 if (i > 0 and j == 0) else 1, shortcut, activation))
                c_in = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))  # stage i: (N, c_in, H/2^(i+2), ...)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = self.maxpool(self.act(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))  # (N, num_classes)


@register_model("resnet18", paper="He et al. 2015", head="fc")
def resnet18(*, num_classes: int = 1000, in_channels: int = 3, shortcut: str = "B", activation: str | dict = "relu",
             dropout: float = 0.0) -> nn.Module:
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet34", paper="He et al. 2015", head="fc")
def resnet34(*, num_classes: int = 1000, in_channels: int = 3, shortcut: str = "B", activation: str | dict = "relu",
             dropout: float = 0.0) -> nn.Module:
    """ResNet-34: basic blocks (3, 4, 6, 3)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet50", paper="He et al. 2015", head="fc")
def resnet50(*, num_classes: int = 1000, in_channels: int = 3, shortcut: str = "B", activation: str | dict = "relu",
             dropout: float = 0.0) -> nn.Module:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet101", paper="He et al. 2015", head="fc")
def resnet101(*, num_classes: int = 1000, in_channels: int = 3, shortcut: str = "B", activation: str | dict = "relu",
              dropout: float = 0.0) -> nn.Module:
    """ResNet-101: bottleneck blocks (3, 4, 23, 3)."""
    return ResNet(Bottleneck, (3, 4, 23, 3), num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet152", paper="He et al. 2015", head="fc")
def resnet152(*, num_classes: int = 1000, in_channels: int = 3, shortcut: str = "B", activation: str | dict = "relu",
              dropout: float = 0.0) -> nn.Module:
    """ResNet-152: bottleneck blocks (3, 8, 36, 3)."""
    return ResNet(Bottleneck, (3, 8, 36, 3), num_classes, in_channels, shortcut, activation, dropout)


@register_model("plain18", paper="He et al. 2015", head="fc")
def plain18(*, num_classes: int = 1000, in_channels: int = 3, activation: str | dict = "relu",
            dropout: float = 0.0) -> nn.Module:
    """Plain-18 (fig. 3, middle): ResNet-18's layers without shortcuts; a stage's first block only strides."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels, "none", activation, dropout)


@register_model("plain34", paper="He et al. 2015", head="fc")
def plain34(*, num_classes: int = 1000, in_channels: int = 3, activation: str | dict = "relu",
            dropout: float = 0.0) -> nn.Module:
    """Plain-34 (fig. 3, middle): ResNet-34's layers without shortcuts; a stage's first block only strides."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels, "none", activation, dropout)
