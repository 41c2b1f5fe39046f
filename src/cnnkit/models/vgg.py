"""VGG (Simonyan & Zisserman 2014): the six configurations of Table 1, with torchvision's state-dict keys."""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.layers import make_activation, paper_lrn
from cnnkit.models.registry import register_model

# Table 1, one entry per configuration and one string per block; every block ends with a 2×2/2 max pool.
# "conv<k>-<c>" is a k×k convolution with c maps (stride 1, 'same' padding); "LRN" is Krizhevsky's.
CONFIGS: dict[str, tuple[str, ...]] = {
    "A": ("conv3-64", "conv3-128", "conv3-256 conv3-256", "conv3-512 conv3-512", "conv3-512 conv3-512"),
    "A-LRN": ("conv3-64 LRN", "conv3-128", "conv3-256 conv3-256", "conv3-512 conv3-512", "conv3-512 conv3-512"),
    "B": ("conv3-64 conv3-64", "conv3-128 conv3-128", "conv3-256 conv3-256", "conv3-512 conv3-512",
          "conv3-512 conv3-512"),
    "C": ("conv3-64 conv3-64", "conv3-128 conv3-128", "conv3-256 conv3-256 conv1-256",
          "conv3-512 conv3-512 conv1-512", "conv3-512 conv3-512 conv1-512"),
    "D": ("conv3-64 conv3-64", "conv3-128 conv3-128", "conv3-256 conv3-256 conv3-256",
          "conv3-512 conv3-512 conv3-512", "conv3-512 conv3-512 conv3-512"),
    "E": ("conv3-64 conv3-64", "conv3-128 conv3-128", "conv3-256 conv3-256 conv3-256 conv3-256",
          "conv3-512 conv3-512 conv3-512 conv3-512", "conv3-512 conv3-512 conv3-512 conv3-512"),
}


def _block(spec: str, c_in: int, batch_norm: bool, activation: str | dict) -> tuple[list[nn.Module], int]:
    """The layers of one block of Table 1 (convolution, [batch norm], activation; LRN), then its max pool."""
    layers: list[nn.Module] = []
    for layer in spec.split():
        if layer == "LRN":
            layers.append(paper_lrn())
            continue
        k, c_out = (int(s) for s in layer.removeprefix("conv").split("-"))
        layers.append(nn.Conv2d(c_in, c_out, k, padding=k // 2))  # bias kept under BN, as torchvision
        layers += [nn.BatchNorm2d(c_out)] if batch_norm else []
        layers.append(make_activation(activation, c_out))
        c_in = c_out
    return layers + [nn.MaxPool2d(2, 2)], c_in


def make_features(config: str, in_channels: int = 3, batch_norm: bool = False,
                  activation: str | dict = "relu") -> nn.Sequential:
    """The convolutional part of a configuration: five blocks, (N, C, H, W) → (N, 512, H/32, W/32)."""
    layers: list[nn.Module] = []
    c = in_channels
    for spec in CONFIGS[config]:
        block, c = _block(spec, c, batch_norm, activation)
        layers += block
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG: five blocks of small convolutions, each halving the size, then FC-4096, FC-4096, FC-classes.

    Dropout (0.5 in the paper) follows the first two FC layers. Weights start from Glorot & Bengio's
    initialisation (the paper's note: it trains the deep configurations without pre-training from A),
    biases from zero. The adaptive pool before the classifier is the identity at 224 (7×7 maps) and lets
    other sizes through; `batch_norm` puts BN after every convolution (not in the paper; torchvision's _bn).
    """

    def __init__(self, config: str = "D", num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
                 activation: str | dict = "relu", dropout: float = 0.5):
        super().__init__()
        if batch_norm and "LRN" in " ".join(CONFIGS[config]):
            raise CnnkitError(f"VGG-{config} with batch norm: BN replaces LRN; use batch_norm=False or vgg11_bn")
        self.features = make_features(config, in_channels, batch_norm, activation)  # (N, 512, H/32, W/32)
        self.avgpool = nn.AdaptiveAvgPool2d(7)  # (N, 512, 7, 7)
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), make_activation(activation, 4096), nn.Dropout(dropout),
            nn.Linear(4096, 4096), make_activation(activation, 4096), nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 224, 224)
        x = self.avgpool(self.features(x)).flatten(1)  # (N, 25088)
        return self.classifier(x)  # (N, num_classes)


_PAPER, _HEAD = "Simonyan & Zisserman 2014", "classifier.6"


@register_model("vgg11", paper=_PAPER, head=_HEAD)
@register_model("vgg11_bn", paper=_PAPER, head=_HEAD, batch_norm=True)
def vgg11(*, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, activation: str | dict = "relu",
          dropout: float = 0.5) -> nn.Module:
    """VGG-11, configuration A: 8 convolutions + 3 FC; vgg11_bn with batch norm."""
    return VGG("A", num_classes, in_channels, batch_norm, activation, dropout)


@register_model("vgg11_lrn", paper=_PAPER, head=_HEAD)
def vgg11_lrn(*, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
              activation: str | dict = "relu", dropout: float = 0.5) -> nn.Module:
    """VGG-11 with LRN after the first convolution (A-LRN); no _bn twin, as BN would replace the LRN it tests."""
    return VGG("A-LRN", num_classes, in_channels, batch_norm, activation, dropout)


@register_model("vgg13", paper=_PAPER, head=_HEAD)
@register_model("vgg13_bn", paper=_PAPER, head=_HEAD, batch_norm=True)
def vgg13(*, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, activation: str | dict = "relu",
          dropout: float = 0.5) -> nn.Module:
    """VGG-13, configuration B: two 3×3 convolutions in every block; vgg13_bn with batch norm."""
    return VGG("B", num_classes, in_channels, batch_norm, activation, dropout)


@register_model("vgg16_c", paper=_PAPER, head=_HEAD)
@register_model("vgg16_c_bn", paper=_PAPER, head=_HEAD, batch_norm=True)
def vgg16_c(*, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False,
            activation: str | dict = "relu", dropout: float = 0.5) -> nn.Module:
    """VGG-16, configuration C: B plus a 1×1 convolution closing blocks 3-5 (no torchvision twin)."""
    return VGG("C", num_classes, in_channels, batch_norm, activation, dropout)


@register_model("vgg16", paper=_PAPER, head=_HEAD)
@register_model("vgg16_bn", paper=_PAPER, head=_HEAD, batch_norm=True)
def vgg16(*, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, activation: str | dict = "relu",
          dropout: float = 0.5) -> nn.Module:
    """VGG-16, configuration D: three 3×3 convolutions in blocks 3-5; vgg16_bn with batch norm."""
    return VGG("D", num_classes, in_channels, batch_norm, activation, dropout)


@register_model("vgg19", paper=_PAPER, head=_HEAD)
@register_model("vgg19_bn", paper=_PAPER, head=_HEAD, batch_norm=True)
def vgg19(*, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = False, activation: str | dict = "relu",
          dropout: float = 0.5) -> nn.Module:
    """VGG-19, configuration E: four 3×3 convolutions in blocks 3-5; vgg19_bn with batch norm."""
    return VGG("E", num_classes, in_channels, batch_norm, activation, dropout)
