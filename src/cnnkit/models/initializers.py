"""Weight initialisation of a fresh model by name (`cnnkit train --init`), for its convolutions and linear layers.

    apply_init(model, "he")                          # Kaiming normal, fan_in, for ReLU: std = √(2/fan_in)
    apply_init(model, "glorot")                      # Xavier uniform: U(−a, a), a = √(6/(fan_in + fan_out))
    apply_init(model, "normal:std=0.01,bias=0.1")    # the notes' small Gaussian weights and small positive bias

    he | he_uniform          Kaiming normal / uniform (He et al. 2015), gain √2, fan_in      (options: mode)
    glorot | glorot_normal   Xavier uniform / normal (Glorot & Bengio 2010), Keras' default
    lecun                    normal with std = 1/√fan_in (LeCun et al. 1998)
    normal                   N(mean, std²)                                                   (std=0.01, mean=0)
    uniform                  U(low, high)                                                    (low=−0.05, high=0.05)

Every scheme takes `bias` (default 0): the value of every bias. Batch-norm, embedding and other layers keep
PyTorch's initialisation.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable

import torch
from torch import nn

from cnnkit.config import parse_key_values
from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["INITS", "apply_init", "parse_init"]

WEIGHT_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                 nn.Linear)


def _he(w: torch.Tensor, mode: str = "fan_in") -> None:
    nn.init.kaiming_normal_(w, mode=mode, nonlinearity="relu")


def _he_uniform(w: torch.Tensor, mode: str = "fan_in") -> None:
    nn.init.kaiming_uniform_(w, mode=mode, nonlinearity="relu")


def _glorot(w: torch.Tensor) -> None:
    nn.init.xavier_uniform_(w)


def _glorot_normal(w: torch.Tensor) -> None:
    nn.init.xavier_normal_(w)


def _lecun(w: torch.Tensor) -> None:
    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(w)
    nn.init.normal_(w, 0.0, 1.0 / math.sqrt(fan_in))


def _normal(w: torch.Tensor, std: float = 0.01, mean: float = 0.0) -> None:
    if std <= 0:
        raise CnnkitError(f"--init normal: std must be positive, got {std}")
    nn.init.normal_(w, mean, std)


def _uniform(w: torch.Tensor, low: float = -0.05, high: float = 0.05) -> None:
    if not low < high:
        raise CnnkitError(f"--init uniform: low must be below high, got low={low}, high={high}")
    nn.init.uniform_(w, low, high)


INITS: dict[str, Callable[..., None]] = {
    "he": _he, "kaiming": _he, "he_uniform": _he_uniform, "glorot": _glorot, "xavier": _glorot,
    "glorot_normal": _glorot_normal, "lecun": _lecun, "normal": _normal, "uniform": _uniform,
}


def parse_init(text: str) -> tuple[str, dict, float]:
    """'normal:std=0.01,bias=0.1' → ('normal', {'std': 0.01}, 0.1): the scheme, its options and the bias value.
    An unknown scheme or option is a one-line CnnkitError."""
    name, _, rest = str(text).partition(":")
    name = name.strip()
    if name not in INITS:
        raise unknown_name("--init scheme", name, INITS)
    options = parse_key_values(rest, example="--init normal:std=0.01,bias=0.1")
    bias = options.pop("bias", 0.0)
    if isinstance(bias, bool) or not isinstance(bias, (int, float)):
        raise CnnkitError(f"--init {text}: bias must be a number, got {bias!r}")
    for key, value in options.items():
        _check_option(name, key, value)
    return name, options, float(bias)


def _check_option(name: str, key: str, value: object) -> None:
    params = list(inspect.signature(INITS[name]).parameters)[1:]
    if key not in params:
        takes = ", ".join([*params, "bias"])
        raise CnnkitError(f"--init {name} has no option {key!r}; it takes {takes}")
    if key == "mode" and value not in ("fan_in", "fan_out"):
        raise unknown_name("--init mode", str(value), ("fan_in", "fan_out"))
    if key != "mode" and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise CnnkitError(f"--init {name}: {key} must be a number, got {value!r}")


@torch.no_grad()
def apply_init(model: nn.Module, text: str) -> int:
    """Initialise every convolution and linear layer of `model` by `text` (see the module docstring): the
    weights by the scheme, the biases to its `bias` value. Returns how many layers were set."""
    name, options, bias = parse_init(text)
    layers = [m for m in model.modules() if isinstance(m, WEIGHT_LAYERS)]
    if not layers:
        raise CnnkitError(f"{type(model).__name__} has no convolution or linear layer for --init {text}")
    for layer in layers:
        INITS[name](layer.weight, **options)
        if layer.bias is not None:
            layer.bias.fill_(bias)
    return len(layers)
