"""Instance masks as COCO run-length encodings (pycocotools.mask): encoding, areas and mask IoU, for the mask AP
of cnnkit.metrics.detection and the RLEs that `cnnkit predict` prints for an instance run.

    rles = encode_masks(model_output["masks"])       # (K, 1, H, W) probabilities → K RLEs, binarised at 0.5
    mask_iou(rles, gt_rles, crowd=np.zeros(len(gt_rles)))   # (K, G)
"""
from __future__ import annotations

from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from cnnkit.errors import CnnkitError


def to_rle(segmentation: Any, size: tuple, where: str) -> dict:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) → compressed RLE, as COCO.annToRLE."""
    if not segmentation:
        raise CnnkitError(f"{where} has no 'segmentation'; mask AP needs polygons or RLE on every annotation")
    if isinstance(segmentation, dict) and not isinstance(segmentation.get("counts"), list):
        return segmentation  # compressed RLE (counts str or bytes)
    h, w = size
    if h is None or w is None:
        raise CnnkitError(f"{where}: its image lacks 'height'/'width', which polygons and plain RLE need")
    if isinstance(segmentation, dict):
        return mask_utils.frPyObjects(segmentation, h, w)
    return mask_utils.merge(mask_utils.frPyObjects(segmentation, h, w))


def mask_areas(rles: list[dict]) -> np.ndarray:
    """Pixel counts (n,) float64 of RLEs; in chunks of 255, as pycocotools' area() fails on more at once under
    NumPy 2 (it sizes a uint8 array by the count)."""
    chunks = [np.asarray(mask_utils.area(rles[i:i + 255]), dtype=np.float64).reshape(-1)
              for i in range(0, len(rles), 255)]
    return np.concatenate(chunks) if chunks else np.zeros(0)


def mask_iou(dt_rles: list, gt_rles: list, crowd: np.ndarray) -> np.ndarray:
    """IoU (D, G) of detection masks against ground-truth masks (RLEs); crowd: intersection / detection area."""
    if not dt_rles or not gt_rles:
        return np.zeros((len(dt_rles), len(gt_rles)))
    return np.asarray(mask_utils.iou(dt_rles, gt_rles, [int(c) for c in crowd]), dtype=np.float64)


def encode_masks(masks: Any, threshold: float = 0.5) -> list[dict]:
    """Instance masks (K, H, W) or (K, 1, H, W) — 0/1 targets or Mask R-CNN's probabilities — binarised
    (> threshold) → K COCO RLEs {"size": [H, W], "counts": bytes} (pycocotools.mask.encode)."""
    if hasattr(masks, "detach"):
        masks = masks.detach().cpu()
        masks = (masks.float() > threshold).numpy() if masks.is_floating_point() else (masks > 0).numpy()
    else:
        masks = np.asarray(masks)
        masks = masks > threshold if masks.dtype.kind == "f" else masks > 0
    if masks.ndim == 4:
        masks = masks[:, 0]
    if len(masks) == 0:
        return []
    return list(mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))))


def rles_of(d: dict) -> list[dict] | None:
    """An image's masks as RLEs: "rles" when already encoded, else "masks" encoded; None without either."""
    if "rles" in d:
        return list(d["rles"])
    return encode_masks(d["masks"]) if "masks" in d else None


def mask_area(rle: dict) -> int:
    """The pixel count of one RLE."""
    return int(mask_utils.area(rle))
