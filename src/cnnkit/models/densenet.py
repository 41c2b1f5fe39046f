"""DenseNet-BC (Huang, Liu, van der Maaten, Weinberger 2017), with torchvision's state-dict keys.

Every layer of a dense block sees the concatenation of all earlier feature maps of the block and adds
`growth_rate` (k) maps of its own: BN-ReLU-Conv(1×1, bn_size·k) then BN-ReLU-Conv(3×3, k), the "B"
bottleneck. Transitions between blocks compress the channels by θ (`compression`, the "C") with
BN-ReLU-Conv(1×1) and halve the map with a 2×2 average pool. DenseNet-121: k = 32, blocks
(6, 12, 24, 16), θ = 0.5; 7,978,856 parameters at 1000 classes. `activation` (a name of
cnnkit.models.layers) stands in every ReLU's place under the same module name, so a parameter-free one
keeps torchvision's keys; PReLU and Maxout add theirs.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from cnnkit.models.layers import make_activation
from cnnkit.models.registry import register_model


class DenseLayer(nn.Module):
    """BN-ReLU-Conv(1×1, bn_size·k)-BN-ReLU-Conv(3×3, k) on the concatenated inputs; dropout after (§3)."""

    def __init__(self, c_in: int, growth_rate: int, bn_size: int, drop_rate: float, act: str | dict = "relu"):
        super().__init__()
        width = bn_size * growth_rate
        self.norm1, self.relu1 = nn.BatchNorm2d(c_in), make_activation(act, c_in)  # torchvision's names
        self.conv1 = nn.Conv2d(c_in, width, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(width), make_activation(act, width)
        self.conv2 = nn.Conv2d(width, growth_rate, 3, padding=1, bias=False)
        self.dropout = nn.Dropout(drop_rate)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:  # each (N, c_i, H, W) → (N, k, H, W)
        x = self.conv1(self.relu1(self.norm1(torch.cat(features, 1))))  # (N, bn_size·k, H, W)
        return self.dropout(self.conv2(self.relu2(self.norm2(x))))


class DenseBlock(nn.ModuleDict):
    """`n` dense layers (denselayer1..n); the output concatenates the input and all new maps: c_in + n·k."""

    def __init__(self, n: int, c_in: int, growth_rate: int, bn_size: int, drop_rate: float,
                 act: str | dict = "relu"):
        super().__init__({
            f"denselayer{i + 1}": DenseLayer(c_in + i * growth_rate, growth_rate, bn_size, drop_rate, act)
            for i in range(n)
        })

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, c_in, H, W) → (N, c_in + n·k, H, W)
        features = [x]
        for layer in self.values():
            features.append(layer(features))
        return torch.cat(features, 1)


def _transition(c_in: int, c_out: int, act: str | dict = "relu") -> nn.Sequential:
    """BN-ReLU-Conv(1×1) to θ·c_in channels, 2×2 average pool: (N, c_in, H, W) → (N, c_out, H/2, W/2)."""
    return nn.Sequential(OrderedDict(
        norm=nn.BatchNorm2d(c_in), relu=make_activation(act, c_in), conv=nn.Conv2d(c_in, c_out, 1, bias=False),
        pool=nn.AvgPool2d(2, 2),
    ))


class DenseNet(nn.Module):
    """ImageNet DenseNet-BC: 7×7/2 conv (2k filters), 3×3/2 max pool, dense blocks and transitions, BN, pool, FC."""

    def __init__(self, blocks: tuple[int, ...], growth_rate: int = 32, num_classes: int = 1000, in_channels: int = 3,
                 bn_size: int = 4, compression: float = 0.5, drop_rate: float = 0.0, activation: str | dict = "relu"):
        super().__init__()
        c, act = 2 * growth_rate, activation
        stem = OrderedDict(
            conv0=nn.Conv2d(in_channels, c, 7, 2, padding=3, bias=False),  # (N, 2k, H/2, W/2)
            norm0=nn.BatchNorm2d(c), relu0=make_activation(act, c),
            pool0=nn.MaxPool2d(3, 2, padding=1),  # (N, 2k, H/4, W/4)
        )
        self.features = nn.Sequential(stem)
        for i, n in enumerate(blocks):
            self.features.add_module(f"denseblock{i + 1}", DenseBlock(n, c, growth_rate, bn_size, drop_rate, act))
            c += n * growth_rate
            if i < len(blocks) - 1:  # halves the map: H/8, H/16, H/32 for DenseNet-121
                self.features.add_module(f"transition{i + 1}", _transition(c, int(c * compression), act))
                c = int(c * compression)
        self.features.add_module("norm5", nn.BatchNorm2d(c))
        self.relu, self.avgpool = make_activation(act, c), nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = self.relu(self.features(x))  # (N, 1024, H/32, W/32) for DenseNet-121
        return self.classifier(self.avgpool(x).flatten(1))  # (N, num_classes)


@register_model("densenet121", paper="Huang et al. 2017", head="classifier")
def densenet121(*, num_classes: int = 1000, in_channels: int = 3, growth_rate: int = 32, bn_size: int = 4,
                compression: float = 0.5, drop_rate: float = 0.0, activation: str | dict = "relu") -> nn.Module:
    """DenseNet-121 (DenseNet-BC): k = 32, dense blocks (6, 12, 24, 16), bottleneck 4k, compression 0.5."""
    return DenseNet((6, 12, 24, 16), growth_rate, num_classes, in_channels, bn_size, compression, drop_rate,
                    activation)
