"""Building blocks shared by the zoo: activations by name, conv-BN-activation, local response norm."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name


class Maxout(nn.Module):
    """Maxout with k linear pieces per channel (Goodfellow et al. 2013): y_c = max_j (a_cj x_c + b_cj).

    Each channel gets its own learned convex piecewise-linear function, so the layer keeps its input's
    shape and can stand wherever an activation stands. Initialised near ReLU: pieces 0·x and 1·x, the
    others with small slopes around them.
    """

    def __init__(self, channels: int, k: int = 2):
        super().__init__()
        if k < 2:
            raise CnnkitError(f"maxout needs at least 2 pieces, got k={k}")
        slopes = torch.linspace(0.0, 1.0, k).repeat(channels, 1)  # (C, k)
        self.weight = nn.Parameter(slopes)
        self.bias = nn.Parameter(torch.zeros(channels, k))
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, ...) → same shape
        shape = (1, -1, self.k) + (1,) * (x.ndim - 2)
        pieces = x.unsqueeze(2) * self.weight.view(shape) + self.bias.view(shape)  # (N, C, k, ...)
        return pieces.amax(dim=2)

    def extra_repr(self) -> str:
        return f"channels={self.weight.shape[0]}, k={self.k}"


ACTIVATIONS: dict[str, Callable[..., nn.Module]] = {
    "relu": lambda c, **o: nn.ReLU(inplace=True),
    "relu6": lambda c, **o: nn.ReLU6(inplace=True),  # min(max(0, x), 6): MobileNet, EfficientNet-Lite
    "tanh": lambda c, **o: nn.Tanh(),
    "sigmoid": lambda c, **o: nn.Sigmoid(),
    "leaky_relu": lambda c, slope=0.01, **o: nn.LeakyReLU(slope, inplace=True),
    "prelu": lambda c, **o: nn.PReLU(c or 1),
    "elu": lambda c, alpha=1.0, **o: nn.ELU(alpha, inplace=True),
    "selu": lambda c, **o: nn.SELU(inplace=True),
    "gelu": lambda c, **o: nn.GELU(),
    "silu": lambda c, **o: nn.SiLU(inplace=True),
    "maxout": lambda c, k=2, **o: Maxout(c or 1, k),
}


def make_activation(name: str | dict, channels: int | None = None) -> nn.Module:
    """A fresh activation from its name, or from {'name': 'leaky_relu', 'slope': 0.1} / {'name': 'maxout', 'k': 3}.

    `channels` sizes the learned activations (prelu: one slope per channel; maxout: k pieces per channel).
    """
    options = dict(name) if isinstance(name, dict) else {"name": name}
    key = options.pop("name", None)
    if key not in ACTIVATIONS:
        raise unknown_name("activation", str(key), ACTIVATIONS)
    try:
        return ACTIVATIONS[key](channels, **options)
    except TypeError as err:
        raise CnnkitError(f"bad option for activation {key!r}: {err}") from None


def conv_bn_act(c_in: int, c_out: int, k: int, stride: int = 1, act: str | dict = "relu") -> nn.Sequential:
    """k×k convolution ('same' padding), batch norm, activation."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False), nn.BatchNorm2d(c_out),
        make_activation(act, c_out),
    )


def paper_lrn(size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> nn.LocalResponseNorm:
    """Local response normalisation, §3.3 of the paper: b_i = a_i / (k + α Σ_j a_j²)^β over `size` adjacent maps.

    torch's nn.LocalResponseNorm divides α by the window (b_i = a_i / (k + α/n Σ_j a_j²)^β), so the paper's
    α = 1e-4 is passed as α·n = 5e-4. (Caffe divides by n too: its `alpha: 0.0001` is the paper's 2e-5.)
    """
    return nn.LocalResponseNorm(size, alpha=alpha * size, beta=beta, k=k)
