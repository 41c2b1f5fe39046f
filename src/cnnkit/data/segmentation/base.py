"""The segmentation source every reader returns (folders, COCO, Penn-Fudan, built-ins): class names, overlay
colours and a reader of (image, mask) pairs."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.segmentation.masks import IGNORE_INDEX

ImageMask = tuple["np.ndarray | torch.Tensor", np.ndarray]  # uint8 (H, W, 3) array or (3, H, W) tensor; int64 (H, W)


@dataclass
class SegmentationSource:
    """A segmentation data set: class names, overlay colours and a reader of (image, mask) pairs."""

    name: str
    classes: list[str]
    palette: list[tuple[int, int, int]]  # one overlay colour per class
    reader: Callable[[int], ImageMask]  # i → (uint8 (H, W, 3) array or (3, H, W) tensor, int64 (H, W))
    length: int
    ignore_index: int = IGNORE_INDEX
    presplit: dict[str, np.ndarray] = field(default_factory=dict)
    paths: list[Path] | None = None  # the image files, None for generated data

    def __len__(self) -> int:
        return self.length

    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item i as (uint8 (3, H, W) image, int64 (H, W) mask of 0..C-1 or ignore_index)."""
        if not 0 <= i < self.length:
            raise IndexError(f"{self.name}: item {i} out of range 0..{self.length - 1}")
        image, mask = self.reader(i)
        if isinstance(image, np.ndarray):  # (H, W, 3) → (3, H, W)
            image = np.ascontiguousarray(image)
            image = torch.from_numpy(image if image.flags.writeable else image.copy()).permute(2, 0, 1)
        mask = np.ascontiguousarray(mask, dtype=np.int64)
        return image, torch.from_numpy(mask if mask.flags.writeable else mask.copy())

    def path(self, i: int) -> Path | None:
        return self.paths[i] if self.paths is not None else None


# -- folders -------------------------------------------------------------------------------------------------
