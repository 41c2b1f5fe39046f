"""Losses by name: `core` (the Keras set, PyTorch's calling order) and `segmentation` (per-pixel Dice, Jaccard,
focal and their sums). `cnnkit.losses.get(name)` looks up the first."""
from cnnkit.losses.core import Loss, get, list_losses

__all__ = ["Loss", "get", "list_losses"]
