"""Masks as pictures: the classes' colours (a run's palette), an image blended with its mask, and a predicted
mask written as a palette PNG beside its overlay."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch


def palette_of(card: Any) -> np.ndarray:
    """(C, 3) uint8 colours of the card's classes (a fixed default for runs whose source had none)."""
    if card.palette and len(card.palette) >= len(card.classes):
        return np.asarray(card.palette[: len(card.classes)], dtype=np.uint8)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (len(card.classes), 3), dtype=np.uint8)


def overlay(image: torch.Tensor, mask: torch.Tensor, palette: np.ndarray, alpha: float = 0.5) -> torch.Tensor:
    """uint8 (3, H, W): the image blended with the classes' colours (`palette` (C, 3)), `alpha` of colour;
    ignored pixels (mask ≥ C) unchanged."""
    palette = torch.as_tensor(np.asarray(palette)).float()  # (C, 3)
    index = mask.long()
    valid = index < len(palette)  # (H, W): ignore_index keeps the image
    colours = palette[index.clamp(max=len(palette) - 1)].permute(2, 0, 1)  # (3, H, W)
    blended = torch.where(valid, (1 - alpha) * image.float() + alpha * colours, image.float())
    return blended.round().to(torch.uint8)


def write_prediction(image: torch.Tensor, mask: torch.Tensor, card: Any, out: Path, stem: str,
                     alpha: float = 0.5) -> dict:
    """NAME_mask.png (P mode: pixel values are class indices, shown in the palette's colours) and
    NAME_overlay.png (the image blended with the colours, `alpha` of colour), written atomically."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    palette = palette_of(card)
    indexed = Image.fromarray(mask.numpy().astype(np.uint8), mode="P")  # (H, W) class indices
    indexed.putpalette(palette.flatten().tolist() + [0] * (768 - palette.size))
    blended = Image.fromarray(overlay(image, mask, palette, alpha).permute(1, 2, 0).numpy())
    paths = {"mask": out / f"{stem}_mask.png", "overlay": out / f"{stem}_overlay.png"}
    for key, picture in (("mask", indexed), ("overlay", blended)):
        tmp = paths[key].with_name(f".{paths[key].name}.tmp")
        picture.save(tmp, format="PNG")
        tmp.replace(paths[key])
    return {k: str(v) for k, v in paths.items()}
