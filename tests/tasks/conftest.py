"""Shared by the task tests: a 'model' that returns given outputs, so a task's maths can be checked alone."""
from __future__ import annotations

import pytest
import torch
from torch import nn


class Fixed(nn.Module):
    """Returns `outputs` (times a parameter of value 1, so the loss has a gradient) whatever the images."""

    def __init__(self, outputs: torch.Tensor):
        super().__init__()
        self.outputs = outputs
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.outputs * self.scale


@pytest.fixture
def fixed():
    """Factory: fixed(outputs) → a module returning those outputs."""
    return Fixed
