"""Building blocks shared by the zoo: activations by name, maxout, conv-BN-activation, local response norm."""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name


class Maxout(nn.Module):
    """Maxout as the notes define it (Goodfellow et al. 2013): h_c(x) = max_j (w_cjᵀ x + b_cj), j = 1..k.

    `affine` maps the whole input to k·C outputs: an nn.Linear (flat inputs; on maps it acts on each position's
    channel vector, a 1×1 convolution) or an nn.Conv2d (maps). Outputs c·k .. c·k + k − 1 are unit c's k
    pieces; the layer keeps their max, C outputs. Built by `maxout_linear`, `maxout_conv` or, as an activation
    that keeps its input's width, `make_activation("maxout", C)`.
    """

    def __init__(self, affine: nn.Linear | nn.Conv2d, k: int):
        super().__init__()
        outputs = affine.out_features if isinstance(affine, nn.Linear) else affine.out_channels
        if k < 2 or outputs % k:
            raise CnnkitError(f"maxout needs k ≥ 2 pieces dividing its {outputs} affine outputs, got k={k}")
        self.affine, self.k = affine, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, D) or (N, C_in, H, W)
        if isinstance(self.affine, nn.Linear) and x.ndim > 2:  # the same affine map at every position
            last = x.ndim - 1  # permute with positive axes: ONNX's Transpose takes no negative ones
            y = self.affine(x.permute(0, *range(2, x.ndim), 1)).permute(0, last, *range(1, last))  # (N, k·C, H, W)
        else:
            y = self.affine(x)  # (N, k·C) or (N, k·C, H', W')
        return y.unflatten(1, (-1, self.k)).amax(2)  # (N, C, ...)

    def extra_repr(self) -> str:
        return f"k={self.k}"


def maxout_linear(in_features: int, units: int, k: int = 2) -> Maxout:
    """`units` maxout units over a flat input: nn.Linear(in_features, k·units), then the max of each k."""
    return Maxout(nn.Linear(in_features, k * units), k)


def maxout_conv(in_channels: int, units: int, k: int = 2, kernel: int = 1, stride: int = 1, padding: int = 0,
                dilation: int = 1) -> Maxout:
    """`units` maxout maps: a convolution with k·units output maps, then the max of each k at every position."""
    return Maxout(nn.Conv2d(in_channels, k * units, kernel, stride, padding, dilation), k)


def maxout_activation(channels: int | None, k: int = 2) -> Maxout:
    """Maxout where an activation stands: C units over the C inputs (k·C² + k·C parameters), initialised as ReLU
    (pieces s_j·x_c with slopes s_j from 0 to 1, no bias), so a zoo net starts as its ReLU version."""
    if not channels:
        raise CnnkitError("the maxout activation needs the width of its input; give the layer's channel count")
    if k < 2:
        raise CnnkitError(f"maxout needs at least 2 pieces, got k={k}")
    m = maxout_linear(channels, channels, k)
    weight = torch.zeros(channels, k, channels)  # (unit c, piece j, input i)
    units = torch.arange(channels)
    weight[units, :, units] = torch.linspace(0.0, 1.0, k)
    with torch.no_grad():
        m.affine.weight.copy_(weight.view(k * channels, channels))
        m.affine.bias.zero_()
    return m


class ChannelMaxout(nn.Module):
    """Not Goodfellow's maxout (that is `Maxout`): k affine maps of one scalar per channel,
    y_c = max_j (a_cj x_c + b_cj), a learned convex piecewise-linear function of each channel alone.

    It keeps its input's shape with 2k parameters per channel, so it stands wherever an activation stands at
    little cost (activation "channel_maxout"). Initialised as ReLU: slopes from 0 to 1, no bias.
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
    "maxout": lambda c, k=2, **o: maxout_activation(c, k),  # Goodfellow's: k·C affine maps of the C inputs
    "channel_maxout": lambda c, k=2, **o: ChannelMaxout(c or 1, k),  # per channel: not Goodfellow's maxout
}


def make_activation(name: str | dict, channels: int | None = None) -> nn.Module:
    """A fresh activation from its name, or from {'name': 'leaky_relu', 'slope': 0.1} / {'name': 'maxout', 'k': 3}.

    `channels` sizes the learned activations (prelu: one slope per channel; maxout: k·C affine maps of the C
    inputs; channel_maxout: k pieces per channel).
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
