"""Building blocks shared by the zoo: activations by name, conv-BN-activation."""
from __future__ import annotations

from torch import nn

from cnnkit.errors import unknown_name

_ACTIVATIONS = {
    "relu": lambda: nn.ReLU(inplace=True),
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": lambda: nn.LeakyReLU(0.01, inplace=True),
    "elu": lambda: nn.ELU(inplace=True),
    "selu": lambda: nn.SELU(inplace=True),
    "gelu": nn.GELU,
    "silu": lambda: nn.SiLU(inplace=True),
}


def make_activation(name: str) -> nn.Module:
    """A fresh activation module from its name (`relu`, `tanh`, ...)."""
    if name not in _ACTIVATIONS:
        raise unknown_name("activation", name, _ACTIVATIONS)
    return _ACTIVATIONS[name]()


def conv_bn_act(c_in: int, c_out: int, k: int, stride: int = 1, act: str = "relu") -> nn.Sequential:
    """k×k convolution ('same' padding), batch norm, activation."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), make_activation(act)
    )
