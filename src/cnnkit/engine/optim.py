"""Optimisers and learning-rate schedules by name."""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from cnnkit.errors import CnnkitError, unknown_name

# name → (class, default learning rate, default options)
OPTIMIZERS = {
    "sgd": (torch.optim.SGD, 0.01, {"momentum": 0.9}),
    "adam": (torch.optim.Adam, 1e-3, {}),
    "adamw": (torch.optim.AdamW, 1e-3, {"weight_decay": 0.01}),
    "rmsprop": (torch.optim.RMSprop, 1e-3, {}),
}
SCHEDULES = ("none", "cosine", "step", "onecycle")


def make_optimizer(name: str, params: Iterable, lr: float | None = None, weight_decay: float | None = None,
                   **options) -> torch.optim.Optimizer:
    """`make_optimizer('sgd', model.parameters(), lr=0.1)`; the learning rate defaults per optimiser."""
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    cls, default_lr, defaults = OPTIMIZERS[name]
    kwargs = {**defaults, **options}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    lr = default_lr if lr is None else lr
    if lr <= 0:
        raise CnnkitError(f"the learning rate must be positive, got {lr}")
    try:
        return cls(params, lr=lr, **kwargs)
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"bad option for optimizer {name!r}: {err}") from None


def make_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  step_size: int | None = None, gamma: float = 0.1) -> LRScheduler | None:
    """A schedule stepped once per batch over `total_steps`: factor of the base learning rate.

    cosine: ½(1 + cos(π t/T)) after a linear warm-up; step: × gamma every `step_size` steps;
    onecycle: linear up for 30% then cosine down (Smith 2018).
    """
    if name not in SCHEDULES:
        raise unknown_name("schedule", name, SCHEDULES)
    if name == "none" and warmup_steps == 0:
        return None
    total = max(total_steps, 1)

    def factor(t: int) -> float:
        if t < warmup_steps:
            return (t + 1) / warmup_steps
        if name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(t - warmup_steps, total) / max(total - warmup_steps, 1)))
        if name == "step":
            return gamma ** (t // max(step_size or total // 3, 1))
        if name == "onecycle":
            peak = max(int(0.3 * total), 1)
            if t < peak:
                return 0.04 + 0.96 * t / peak
            return 0.5 * (1 + math.cos(math.pi * min(t - peak, total - peak) / max(total - peak, 1)))
        return 1.0

    return LambdaLR(optimizer, factor)
