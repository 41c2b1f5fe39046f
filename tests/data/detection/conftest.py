"""Fixtures of the detection data tests: a small COCO file over real PNGs, written by hand."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_coco_file(folder: Path, boxes: list[tuple[int, str | int, list[float]]], *, n_images: int = 2,
                    categories: tuple[str, ...] = ("cat", "dog")) -> Path:
    """A COCO file over `n_images` 40×30 PNGs, with annotations (image id, category id or name, [x, y, w, h])."""
    folder.mkdir(parents=True, exist_ok=True)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(categories)]
    ids = {c["name"]: c["id"] for c in cats}
    images = []
    for i in range(1, n_images + 1):
        Image.fromarray(np.full((30, 40, 3), 40 * i, dtype=np.uint8)).save(folder / f"img{i}.png")
        images.append({"id": i, "file_name": f"img{i}.png", "width": 40, "height": 30})
    anns = [{"id": k + 1, "image_id": img, "category_id": ids.get(cat, cat), "bbox": bbox, "iscrowd": 0}
            for k, (img, cat, bbox) in enumerate(boxes)]
    path = folder / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.fixture
def coco_file() -> Callable[..., Path]:
    """write_coco_file(folder, [(image id, category, [x, y, w, h]), ...], n_images=2, categories=("cat", "dog"))."""
    return write_coco_file


@pytest.fixture
def good_boxes() -> list:
    return [(1, "cat", [2, 3, 10, 8]), (2, "dog", [5, 5, 20, 20])]
