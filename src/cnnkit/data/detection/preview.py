"""`cnnkit augment-preview --task detect`: each row one training image with its boxes, then augmented copies with
their boxes as the augmentation moved them (a flip flips them, a crop cuts them and drops the objects left too
little visible), each box drawn with its class name. The pictures come from the training loader
(make_detection_loader with train=True), so they are what `cnnkit train --task detect --augment PRESET` sees,
letterboxed to size × size. `--task instance` blends each object's mask in too.

    cnnkit augment-preview synthetic-shapes:count=3 --task detect --augment strong -n 4 --out boxes.png
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

COPIES = 3  # augmented copies beside each image: rows of 4 pictures
PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180),
           (70, 240, 240), (240, 50, 230)]  # one colour per class, cycling


def preview_rows(source, chosen, preset: str = "standard", size: int = 128, seed: int = 0,
                 masks: bool = False) -> list[list[dict]]:
    """One row per image `chosen[r]` of DetectionSource `source`: the image as the loader fits it (no
    augmentation), then COPIES copies through the training loader with `preset`. Each picture is
    {"image": uint8 (3, S, S), "boxes": float (K, 4) xyxy in its pixels, "labels": int64 (K,)}, with `masks`
    also "masks": bool (K, S, S)."""
    from cnnkit.data.detection.loader import make_detection_loader

    chosen = [int(i) for i in chosen]
    torch.manual_seed(seed)  # (the augmentations draw from the loader's own seeds: cnnkit.data.sharding)
    plain = make_detection_loader(source, chosen, size=size, batch_size=8, train=False, workers=0, masks=masks)
    moved = make_detection_loader(source, np.repeat(chosen, COPIES), size=size, batch_size=8, train=True,
                                  augment=preset, workers=0, seed=seed, masks=masks)
    rows: dict[int, list[dict]] = {i: [] for i in chosen}
    for loader in (plain, moved):
        for batch in loader:
            for image, target in zip(batch.images, batch.targets):
                picture = {"image": image.mul(255).round().clamp(0, 255).to(torch.uint8),
                           "boxes": target["boxes"], "labels": target["labels"]}
                if masks:
                    picture["masks"] = target["masks"].bool()
                rows[int(target["image_id"])].append(picture)
    return [rows[i] for i in chosen]


def draw_picture(picture: dict, classes: list[str], width: int = 1) -> torch.Tensor:
    """uint8 (3, S, S): the picture with its masks blended (if any) and its boxes drawn with their class names,
    each class in its colour of PALETTE."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    image, labels = picture["image"], [int(c) for c in picture["labels"]]
    if not labels:
        return image
    colors = [PALETTE[c % len(PALETTE)] for c in labels]
    if "masks" in picture:
        image = draw_segmentation_masks(image, picture["masks"], alpha=0.4, colors=colors)
    return draw_bounding_boxes(image, picture["boxes"], labels=[classes[c] for c in labels], colors=colors,
                               width=width)


def augment_preview(spec: str, out: str | Path, preset: str = "standard", n: int = 8, size: int = 128,
                    seed: int = 0, masks: bool = False, images: str | Path | None = None) -> Path:
    """A grid PNG at `out`: `n` images of detection data `spec` (as `--data`; `images` as `--images`), chosen
    with `seed`, each followed by COPIES augmented copies (see preview_rows), every box drawn with its class."""
    from torchvision.utils import save_image

    from cnnkit.data.detection.loader import DETECTION_PRESETS
    from cnnkit.data.detection.source import open_detection_source
    from cnnkit.errors import unknown_name

    if preset not in DETECTION_PRESETS:
        raise unknown_name("detection augmentation preset", preset, DETECTION_PRESETS)
    source = open_detection_source(spec, images)
    chosen = np.random.default_rng(seed).choice(len(source), size=min(n, len(source)), replace=False)
    rows = preview_rows(source, chosen, preset, size, seed, masks)
    grid = torch.stack([draw_picture(p, source.classes) for row in rows for p in row]).float() / 255.0
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, out, nrow=COPIES + 1, padding=2)
    return out
