"""CIFAR-10 ResNets (He, Zhang, Ren, Sun 2015, §4.2): 6n+2 layers on 32×32 images.

A 3×3 convolution with 16 filters, three stages of n basic blocks with 16, 32 and 64 filters (the
first block of stages 2 and 3 halves the map with stride 2), global average pooling and the FC layer.
Shortcuts are identities; where the width doubles the paper uses option A (zero-padding, no
parameters), so the counts are 97,216·n − 21,926: 0.27M, 0.46M, 0.66M, 0.85M and 1.7M for 20..110.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.layers import make_activation
from cnnkit.models.registry import register_model
from cnnkit.models.resnet import BasicBlock


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32×32 inputs: conv 16, stages of n blocks at 16, 32, 64 filters, pool, FC."""

    def __init__(self, n: int, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A",
                 activation: str | dict = "relu", dropout: float = 0.0):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)  # (N, 16, 32, 32)
        self.bn1, self.act = nn.BatchNorm2d(16), make_activation(activation, 16)
        c_in = 16
        for i, width in enumerate((16, 32, 64)):  # maps 32×32, 16×16, 8×8
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(c_in, width, 2 if (i > 0 and j == 0) else 1, shortcut, activation))
                c_in = width
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # (N, 64, 1, 1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 32, 32)
        x = self.act(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, 8, 8)
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))  # (N, num_classes)


@register_model("resnet20", paper="He et al. 2015 (CIFAR-10)", head="fc", input_size=(3, 32, 32))
def resnet20(*, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", activation: str | dict = "relu",
             dropout: float = 0.0) -> nn.Module:
    """ResNet-20 for CIFAR-10: n = 3 basic blocks per stage; shortcut 'A' (the paper's) or 'B' (projection)."""
    return CifarResNet(3, num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet32", paper="He et al. 2015 (CIFAR-10)", head="fc", input_size=(3, 32, 32))
def resnet32(*, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", activation: str | dict = "relu",
             dropout: float = 0.0) -> nn.Module:
    """ResNet-32 for CIFAR-10: n = 5 basic blocks per stage; shortcut 'A' (the paper's) or 'B' (projection)."""
    return CifarResNet(5, num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet44", paper="He et al. 2015 (CIFAR-10)", head="fc", input_size=(3, 32, 32))
def resnet44(*, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", activation: str | dict = "relu",
             dropout: float = 0.0) -> nn.Module:
    """ResNet-44 for CIFAR-10: n = 7 basic blocks per stage; shortcut 'A' (the paper's) or 'B' (projection)."""
    return CifarResNet(7, num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet56", paper="He et al. 2015 (CIFAR-10)", head="fc", input_size=(3, 32, 32))
def resnet56(*, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", activation: str | dict = "relu",
             dropout: float = 0.0) -> nn.Module:
    """ResNet-56 for CIFAR-10: n = 9 basic blocks per stage; shortcut 'A' (the paper's) or 'B' (projection)."""
    return CifarResNet(9, num_classes, in_channels, shortcut, activation, dropout)


@register_model("resnet110", paper="He et al. 2015 (CIFAR-10)", head="fc", input_size=(3, 32, 32))
def resnet110(*, num_classes: int = 10, in_channels: int = 3, shortcut: str = "A", activation: str | dict = "relu",
              dropout: float = 0.0) -> nn.Module:
    """ResNet-110 for CIFAR-10: n = 18 basic blocks per stage; shortcut 'A' (the paper's) or 'B' (projection)."""
    return CifarResNet(18, num_classes, in_channels, shortcut, activation, dropout)
