"""ResNet (He, Zhang, Ren, Sun 2015), with torchvision's state-dict keys so its weight files load strictly."""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.registry import register_model


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False)


def _projection(c_in: int, c_out: int, stride: int) -> nn.Sequential | None:
    """Projection shortcut (option B of the paper) where the shape changes, identity otherwise."""
    if stride == 1 and c_in == c_out:
        return None
    return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))


class BasicBlock(nn.Module):
    """Two 3×3 convolutions plus the shortcut: y = relu(F(x) + x)."""

    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(c_in, width, stride), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(c_in, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (stride here, as torchvision's v1.5), 1×1 expand ×4, plus the shortcut."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        c_out = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = _conv3x3(width, width, stride), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _projection(c_in, c_out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ImageNet ResNet: 7×7/2 stem, 3×3/2 max pool, four stages (64..512 wide), global pool, FC."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: tuple[int, ...], num_classes: int = 1000,
                 in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False)  # (N, 64, H/2, W/2)
        self.bn1, self.relu = nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)  # (N, 64, H/4, W/4)
        c_in = 64
        for i, (width, n) in enumerate(zip((64, 128, 256, 512), layers)):
            blocks = []
            for j in range(n):
                blocks.append(block(c_in, width, stride=2 if (i > 0 and j == 0) else 1))
                c_in = width * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))  # stage i: (N, c_in, H/2^(i+2), ...)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c_in, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))  # (N, num_classes)


@register_model("resnet18", paper="He et al. 2015", head="fc")
def resnet18(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ResNet-18: basic blocks (2, 2, 2, 2)."""
    return ResNet(BasicBlock, (2, 2, 2, 2), num_classes, in_channels)


@register_model("resnet34", paper="He et al. 2015", head="fc")
def resnet34(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ResNet-34: basic blocks (3, 4, 6, 3)."""
    return ResNet(BasicBlock, (3, 4, 6, 3), num_classes, in_channels)


@register_model("resnet50", paper="He et al. 2015", head="fc")
def resnet50(*, num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """ResNet-50: bottleneck blocks (3, 4, 6, 3)."""
    return ResNet(Bottleneck, (3, 4, 6, 3), num_classes, in_channels)
