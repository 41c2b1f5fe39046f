"""Xception (Chollet 2017): depthwise separable convolutions with residual connections, in three flows.

Entry flow: two plain 3×3 convolutions, then three blocks (128, 256, 728 filters) that each halve the
map with a 3×3/2 max pool, a strided 1×1 convolution on the shortcut. Middle flow: eight blocks of three
728-filter separable convolutions with identity shortcuts. Exit flow: a 728→1024 halving block, then
separable convolutions of 1536 and 2048 filters, global average pooling and logistic regression (FC).
Every convolution is followed by batch norm; the separable convolutions have no bias and no activation
between their depthwise and pointwise parts (§3). 22,855,952 parameters at 1000 classes, as Keras'.
`activation` (a name of cnnkit.models.layers) replaces every ReLU; PReLU and Maxout add parameters.
"""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.layers import make_activation
from cnnkit.models.registry import register_model


class SeparableConv2d(nn.Module):
    """Depthwise 3×3 convolution (one filter per channel) then pointwise 1×1 convolution, no bias."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)  # (N, c_in, H, W)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)  # (N, c_out, H, W)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


class XceptionBlock(nn.Module):
    """[ReLU → SeparableConv → BN] per width, then a 3×3/2 max pool when `stride` is 2, plus the shortcut.

    The first ReLU is skipped where the input is already rectified (the first entry-flow block); the
    shortcut is a strided 1×1 convolution + BN where the shape changes, the identity otherwise. `act` names
    the activation (ReLU in the paper).
    """

    def __init__(self, c_in: int, widths: tuple[int, ...], stride: int = 1, relu_first: bool = True,
                 act: str | dict = "relu"):
        super().__init__()
        c_out = widths[-1]
        self.shortcut = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                         if stride != 1 or c_in != c_out else nn.Identity())
        layers: list[nn.Module] = []
        for i, width in enumerate(widths):
            if i > 0 or relu_first:
                activation = make_activation(act, c_in)
                if i == 0 and hasattr(activation, "inplace"):
                    activation.inplace = False  # not in place on the input: the shortcut reads it
                layers.append(activation)
            layers += [SeparableConv2d(c_in, width), nn.BatchNorm2d(width)]
            c_in = width
        if stride == 2:
            layers.append(nn.MaxPool2d(3, 2, padding=1))  # (N, c_out, ⌈H/2⌉, ⌈W/2⌉), Keras' 'same'
        self.residual = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.residual(x) + self.shortcut(x)


class Xception(nn.Module):
    """Xception at 299×299: entry flow → 19×19×728, middle flow ×8, exit flow → 10×10×2048, pool, FC."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0,
                 activation: str | dict = "relu"):
        super().__init__()
        act = activation
        self.entry_flow = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, 2, bias=False), nn.BatchNorm2d(32), make_activation(act, 32),  # 149×149
            nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), make_activation(act, 64),  # 147×147
            XceptionBlock(64, (128, 128), stride=2, relu_first=False, act=act),  # 74×74
            XceptionBlock(128, (256, 256), stride=2, act=act),  # 37×37
            XceptionBlock(256, (728, 728), stride=2, act=act),  # 19×19
        )
        self.middle_flow = nn.Sequential(*(XceptionBlock(728, (728, 728, 728), act=act) for _ in range(8)))  # 19×19
        self.exit_flow = nn.Sequential(
            XceptionBlock(728, (728, 1024), stride=2, act=act),  # 10×10
            SeparableConv2d(1024, 1536), nn.BatchNorm2d(1536), make_activation(act, 1536),
            SeparableConv2d(1536, 2048), nn.BatchNorm2d(2048), make_activation(act, 2048),  # (N, 2048, 10, 10)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(2048, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 299, 299)
        x = self.exit_flow(self.middle_flow(self.entry_flow(x)))
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))  # (N, num_classes)


@register_model("xception", paper="Chollet 2017", head="fc", input_size=(3, 299, 299))
def xception(*, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0,
             activation: str | dict = "relu") -> nn.Module:
    """Xception: entry, middle (×8) and exit flows of depthwise separable convolutions; `dropout` before the FC."""
    return Xception(num_classes, in_channels, dropout, activation)
