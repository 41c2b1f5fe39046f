"""LeNet-5 (LeCun, Bottou, Bengio, Haffner 1998): 32×32 input, C1-S2-C3-S4-C5-F6-output."""
from __future__ import annotations

import torch
from torch import nn

from cnnkit.models.layers import make_activation
from cnnkit.models.registry import register_model


class LeNet5(nn.Module):
    """LeNet-5 with the paper's layer names.

    `classic` uses tanh and average pooling (the paper's subsampling layers, without their trainable
    coefficient); `modern` uses ReLU and max pooling. C3 is fully connected to S2 (the paper's sparse
    connection table was a compute trick of 1998); the parameter count is then 61,706 for 10 classes.
    """

    def __init__(self, num_classes: int = 10, in_channels: int = 1, variant: str = "modern", dropout: float = 0.0,
                 activation: str | dict | None = None):
        super().__init__()
        if variant not in ("classic", "modern"):
            raise ValueError(f"variant must be 'classic' or 'modern', got {variant!r}")
        act = activation or ("tanh" if variant == "classic" else "relu")
        pool = nn.AvgPool2d if variant == "classic" else nn.MaxPool2d
        self.c1 = nn.Conv2d(in_channels, 6, 5)  # (N, 6, 28, 28)
        self.s2 = pool(2)  # (N, 6, 14, 14)
        self.c3 = nn.Conv2d(6, 16, 5)  # (N, 16, 10, 10)
        self.s4 = pool(2)  # (N, 16, 5, 5)
        self.c5 = nn.Conv2d(16, 120, 5)  # (N, 120, 1, 1): a convolution, as in the paper
        self.f6 = nn.Linear(120, 84)
        self.dropout = nn.Dropout(dropout)
        self.output = nn.Linear(84, num_classes)
        self.act1, self.act3 = make_activation(act, 6), make_activation(act, 16)
        self.act5, self.act6 = make_activation(act, 120), make_activation(act, 84)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, 32, 32)
        x = self.s2(self.act1(self.c1(x)))
        x = self.s4(self.act3(self.c3(x)))
        x = self.act5(self.c5(x)).flatten(1)  # (N, 120)
        x = self.dropout(self.act6(self.f6(x)))  # (N, 84)
        return self.output(x)  # (N, num_classes)


@register_model("lenet5", paper="LeCun et al. 1998", head="output", input_size=(1, 32, 32))
def lenet5(*, num_classes: int = 10, in_channels: int = 1, variant: str = "modern", dropout: float = 0.0,
           activation: str | dict | None = None) -> nn.Module:
    """LeNet-5; `variant='classic'` for tanh + average pooling; `activation` overrides the variant's."""
    return LeNet5(num_classes, in_channels, variant, dropout, activation)
