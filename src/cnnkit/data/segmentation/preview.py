"""`cnnkit augment-preview --task segment`: each augmented picture beside its mask, so one sees the mask move."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnkit.data.segmentation.draw import overlay


def augment_preview(spec: str, out: str | Path, preset: str = "standard", n: int = 8, size: int = 128,
                    seed: int = 0) -> Path:
    """A grid PNG: each row one image of segmentation data `spec` and three augmented copies, each picture
    followed by its mask blended in the classes' colours, so one sees the mask move with the image."""
    from torchvision import tv_tensors
    from torchvision.utils import save_image

    from cnnkit.data.segmentation.loader import SEGMENTATION_PRESETS, fit_image, segmentation_transform
    from cnnkit.data.segmentation.source import open_segmentation_source
    from cnnkit.errors import unknown_name

    if preset not in SEGMENTATION_PRESETS:
        raise unknown_name("segmentation augmentation preset", preset, SEGMENTATION_PRESETS)
    source = open_segmentation_source(spec)
    palette = np.asarray(source.palette, dtype=np.uint8)
    augment = segmentation_transform(size, SEGMENTATION_PRESETS[preset], [0.0] * 3, [1.0] * 3)  # floats in [0, 1]
    torch.manual_seed(seed)
    pictures = []
    for i in np.random.default_rng(seed).choice(len(source), size=min(n, len(source)), replace=False):
        image, mask = source.read(int(i))  # uint8 (3, H, W), int64 (H, W)
        image, mask = fit_image(image, size), fit_image(mask[None].to(torch.uint8), size, nearest=True)[0]
        pictures += [image, overlay(image, mask, palette)]
        for _ in range(3):
            moved, moved_mask = augment(tv_tensors.Image(image), tv_tensors.Mask(mask))
            moved = moved.mul(255).round().clamp(0, 255).to(torch.uint8).as_subclass(torch.Tensor)
            pictures += [moved, overlay(moved, moved_mask.as_subclass(torch.Tensor), palette)]
    h, w = max(p.shape[-2] for p in pictures), max(p.shape[-1] for p in pictures)
    grid = torch.zeros(len(pictures), 3, h, w)
    for k, p in enumerate(pictures):
        grid[k, :, :p.shape[-2], :p.shape[-1]] = p.float() / 255.0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out, nrow=8, padding=2)
    return out
