"""The batch that flows from the loaders to the model: images, targets of the task's kind, optional weights."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


def _move(x: Any, device: torch.device, non_blocking: bool) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=non_blocking)
    if isinstance(x, dict):
        return {k: _move(v, device, non_blocking) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_move(v, device, non_blocking) for v in x)
    return x


@dataclass
class Batch:
    """One batch. `targets` is (N,) class indices for classification, (N, K) floats for multilabel or
    regression, a list of {'boxes', 'labels'} dicts for detection, (N, H, W) class indices for masks."""

    images: torch.Tensor  # (N, C, H, W) float
    targets: Any = None
    weights: torch.Tensor | None = None  # (N,) per-sample weights, or None

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        return Batch(_move(self.images, device, non_blocking), _move(self.targets, device, non_blocking),
                     _move(self.weights, device, non_blocking))

    def pin_memory(self) -> Batch:  # DataLoader(pin_memory=True) calls this
        return Batch(_move_pin(self.images), _move_pin(self.targets), _move_pin(self.weights))


def _move_pin(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.pin_memory()
    if isinstance(x, dict):
        return {k: _move_pin(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return type(x)(_move_pin(v) for v in x)
    return x
