"""AlexNet (Krizhevsky, Sutskever, Hinton 2012) as in the paper, and torchvision's single-tower variant."""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import make_activation, paper_lrn
from cnnkit.models.registry import register_model


class TowerLRN(nn.Module):
    """LRN within each GPU's half of the maps: on two GPUs no window crosses from one tower to the other."""

    def __init__(self, towers: int):
        super().__init__()
        self.towers = towers
        self.lrn = paper_lrn()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W) → same shape
        return torch.cat([self.lrn(half) for half in x.chunk(self.towers, dim=1)], dim=1)


class AlexNet(nn.Module):
    """AlexNet with the paper's layers: conv1-5 (LRN after the first two), pool1/2/5, fc6-8, dropout 0.5 on fc6-7.

    `groups=2` (the default) reproduces the two-GPU connectivity of Figure 2: conv2, conv4 and conv5 see only
    their own GPU's maps (grouped convolutions) and LRN stays inside a GPU; conv3 and the FC layers see both.
    That is 60,965,224 parameters for 1000 classes (the paper's "60 million"). `groups=1` is one tower of the
    same widths: 62,378,344. conv1 pads by 2 so that the paper's 224×224 input gives its 55×55 maps
    (227 without padding, as Caffe does, gives the same). The adaptive pool before fc6 is the identity at
    224 and lets smaller inputs through. Initialised as in §5: weights N(0, 0.01²), biases 1 in conv2,
    conv4, conv5, fc6, fc7 and 0 elsewhere. `activation` (a name of cnnkit.models.layers, ReLU in the paper)
    gives every layer its own module, act1-act5 after conv1-conv5 and act6, act7 after fc6, fc7.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, groups: int = 2, dropout: float = 0.5,
                 activation: str | dict = "relu"):
        super().__init__()
        if groups not in (1, 2):
            raise CnnkitError(f"AlexNet groups must be 1 (one tower) or 2 (the paper's two GPUs), got {groups}")
        self.conv1 = nn.Conv2d(in_channels, 96, 11, 4, padding=2)  # (N, 96, 55, 55)
        self.norm1, self.pool1 = TowerLRN(groups), nn.MaxPool2d(3, 2)  # (N, 96, 27, 27)
        self.conv2 = nn.Conv2d(96, 256, 5, padding=2, groups=groups)  # (N, 256, 27, 27)
        self.norm2, self.pool2 = TowerLRN(groups), nn.MaxPool2d(3, 2)  # (N, 256, 13, 13)
        self.conv3 = nn.Conv2d(256, 384, 3, padding=1)  # (N, 384, 13, 13): sees both GPUs
        self.conv4 = nn.Conv2d(384, 384, 3, padding=1, groups=groups)  # (N, 384, 13, 13)
        self.conv5 = nn.Conv2d(384, 256, 3, padding=1, groups=groups)  # (N, 256, 13, 13)
        self.pool5 = nn.MaxPool2d(3, 2)  # (N, 256, 6, 6)
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.fc6, self.fc7 = nn.Linear(256 * 6 * 6, 4096), nn.Linear(4096, 4096)
        self.fc8 = nn.Linear(4096, num_classes)
        self.act1, self.act2 = make_activation(activation, 96), make_activation(activation, 256)
        self.act3, self.act4 = make_activation(activation, 384), make_activation(activation, 384)
        self.act5 = make_activation(activation, 256)
        self.act6, self.act7 = make_activation(activation, 4096), make_activation(activation, 4096)
        self.dropout = nn.Dropout(dropout)
        self._init_as_in_the_paper()

    def _init_as_in_the_paper(self) -> None:
        for name, m in self.named_children():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.constant_(m.bias, 1.0 if name in ("conv2", "conv4", "conv5", "fc6", "fc7") else 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 224, 224)
        x = self.pool1(self.norm1(self.act1(self.conv1(x))))  # (N, 96, 27, 27)
        x = self.pool2(self.norm2(self.act2(self.conv2(x))))  # (N, 256, 13, 13)
        x = self.act4(self.conv4(self.act3(self.conv3(x))))  # (N, 384, 13, 13)
        x = self.avgpool(self.pool5(self.act5(self.conv5(x)))).flatten(1)  # (N, 9216)
        x = self.dropout(self.act6(self.fc6(x)))  # (N, 4096)
        x = self.dropout(self.act7(self.fc7(x)))  # (N, 4096)
        return self.fc8(x)  # (N, num_classes)


class AlexNetTV(nn.Module):
    """torchvision's AlexNet: one tower of 64-192-384-256-256 maps, no LRN, dropout before fc6 and fc7.

    It follows the single-column net of Krizhevsky's "One weird trick" (2014). Keys are torchvision's
    (features.N, classifier.N), so its weight files load strictly; 61,100,840 parameters for 1000 classes.
    `activation` takes the ReLUs' places (same indices): a parameter-free one keeps strict loading,
    PReLU and Maxout add their keys.
    """

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5,
                 activation: str | dict = "relu"):
        super().__init__()
        act = activation
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 64, 11, 4, padding=2), make_activation(act, 64),  # (N, 64, 55, 55)
            nn.MaxPool2d(3, 2),  # (N, 64, 27, 27)
            nn.Conv2d(64, 192, 5, padding=2), make_activation(act, 192), nn.MaxPool2d(3, 2),  # (N, 192, 13, 13)
            nn.Conv2d(192, 384, 3, padding=1), make_activation(act, 384),  # (N, 384, 13, 13)
            nn.Conv2d(384, 256, 3, padding=1), make_activation(act, 256),  # (N, 256, 13, 13)
            nn.Conv2d(256, 256, 3, padding=1), make_activation(act, 256), nn.MaxPool2d(3, 2),  # (N, 256, 6, 6)
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), make_activation(act, 4096),
            nn.Dropout(dropout), nn.Linear(4096, 4096), make_activation(act, 4096),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 224, 224)
        x = self.avgpool(self.features(x)).flatten(1)  # (N, 9216)
        return self.classifier(x)  # (N, num_classes)


@register_model("alexnet", paper="Krizhevsky et al. 2012", head="fc8")
def alexnet(*, num_classes: int = 1000, in_channels: int = 3, groups: int = 2, dropout: float = 0.5,
            activation: str | dict = "relu") -> nn.Module:
    """The paper's AlexNet; `groups=2` keeps its two-GPU connectivity, `groups=1` makes it one tower."""
    return AlexNet(num_classes, in_channels, groups, dropout, activation)


@register_model("alexnet_tv", paper="Krizhevsky 2014 (torchvision's variant)", head="classifier.6")
def alexnet_tv(*, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.5,
               activation: str | dict = "relu") -> nn.Module:
    """torchvision's AlexNet, whose weight files load strictly (with a parameter-free `activation`)."""
    return AlexNetTV(num_classes, in_channels, dropout, activation)
