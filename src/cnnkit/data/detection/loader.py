"""Detection batches: images with their boxes, augmented with torchvision.transforms.v2 so the boxes move too.

One image's pipeline: decode (uint8, RGB) → augment (train only: flip, IoU crop keeping objects at least
`min_visibility` visible, zoom out, colour) → fit to size × size (letterbox: scale the longer side, pad;
or stretch) → drop boxes smaller than a pixel → float in [0, 1]. The detectors normalise inside.
A Batch holds the (N, 3, S, S) images and a list of targets {"boxes" (K, 4) xyxy in network pixels,
"labels" (K,), "image_id", "scale" (sx, sy), "pad" (left, top)}; scale and pad map boxes back to the image.
With masks=True (instance segmentation) the targets also hold "masks": uint8 (K, S, S), tv_tensors.Mask through
the same transforms, so every flip, crop, zoom-out and letterbox moves them with their boxes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cnnkit.data.batch import Batch
from cnnkit.data.cache import auto_workers
from cnnkit.data.sharding import EpochLoader, shard_options
from cnnkit.errors import CnnkitError, unknown_name

FIT_MODES = ("letterbox", "resize")


@dataclass(frozen=True)
class DetectionAugment:
    hflip: float = 0.0  # probability
    iou_crop: bool = False  # SSD's random crop: a patch whose IoU with some object is at least a random bound
    min_visibility: float = 0.3  # after a crop, keep an object only if this fraction of its area is left
    zoom_out: float = 0.0  # probability of placing the image on a canvas up to 2× larger (small objects)
    jitter: float = 0.0  # brightness/contrast/saturation strength


DETECTION_PRESETS = {
    "none": DetectionAugment(),
    "light": DetectionAugment(hflip=0.5),
    "standard": DetectionAugment(hflip=0.5, iou_crop=True, jitter=0.2),
    "strong": DetectionAugment(hflip=0.5, iou_crop=True, zoom_out=0.3, jitter=0.4),
}


def fit_geometry(h: int, w: int, size: int, mode: str) -> tuple[tuple[int, int], tuple[float, float], tuple[int, int]]:
    """((new h, new w), (sx, sy), (left, top)): how an h × w image lands in the size × size input."""
    if mode == "resize":
        return (size, size), (size / w, size / h), (0, 0)
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    return (nh, nw), (nw / w, nh / h), ((size - nw) // 2, (size - nh) // 2)


class FitDetection(v2.Transform):
    """Bring the image (and its boxes) to size × size: letterbox (keep the aspect ratio, pad) or stretch."""

    def __init__(self, size: int, mode: str = "letterbox"):
        super().__init__()
        if mode not in FIT_MODES:
            raise unknown_name("detection resize mode", mode, FIT_MODES)
        self.size, self.mode = size, mode

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.query_size(flat_inputs)
        return dict(zip(("shape", "scale", "pad"), fit_geometry(h, w, self.size, self.mode)))

    def transform(self, inpt, params):
        out = F.resize(inpt, list(params["shape"]), antialias=True)
        (nh, nw), (left, top) = params["shape"], params["pad"]
        return F.pad(out, [left, top, self.size - nw - left, self.size - nh - top]) if self.mode == "letterbox" else out


class MinVisibility(torch.nn.Module):
    """After a crop: keep the objects whose visible area is at least `fraction` of their area before it
    (`area0`, stored by RememberArea), the others leave with their labels."""

    def __init__(self, fraction: float):
        super().__init__()
        self.fraction = fraction

    def forward(self, image, target):
        boxes = target["boxes"]
        area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        keep = area >= self.fraction * target["area0"]
        target = {**target, "boxes": tv_tensors.wrap(boxes[keep], like=boxes), "labels": target["labels"][keep]}
        if "masks" in target:
            target["masks"] = tv_tensors.wrap(target["masks"][keep], like=target["masks"])
        target.pop("area0")
        return image, target


class RememberArea(torch.nn.Module):
    def forward(self, image, target):
        b = target["boxes"]
        return image, {**target, "area0": (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])}


def detection_transform(size: int, augment: DetectionAugment | None, mode: str = "letterbox") -> v2.Compose:
    ops: list = []
    if augment is not None:
        if augment.jitter > 0:
            j = augment.jitter
            ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
        if augment.zoom_out > 0:
            ops.append(v2.RandomApply([v2.RandomZoomOut(fill=0, side_range=(1.0, 2.0))], p=augment.zoom_out))
        if augment.iou_crop:
            ops += [RememberArea(), v2.RandomIoUCrop(), v2.ClampBoundingBoxes(), MinVisibility(augment.min_visibility)]
        if augment.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(augment.hflip))
    ops += [FitDetection(size, mode), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=1.0),
            v2.ToDtype(torch.float32, scale=True)]
    return v2.Compose(ops)


class DetectionDataset(Dataset):
    """Items `indices` of a DetectionSource (cnnkit.data.detection.source), through detection_transform."""

    def __init__(self, source, indices, size: int, augment: DetectionAugment | None = None, mode: str = "letterbox",
                 masks: bool = False):
        self.source, self.indices, self.size, self.mode, self.masks = source, np.asarray(indices), size, mode, masks
        self.transform = detection_transform(size, augment, mode)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict]:
        index = int(self.indices[i])
        # uint8 (3, H, W); boxes (K, 4) xyxy, labels (K,), with masks also masks (K, H, W) uint8
        image, target = self.source.read(index, masks=True) if self.masks else self.source.read(index)
        h, w = image.shape[-2:]
        boxes = tv_tensors.BoundingBoxes(target["boxes"].reshape(-1, 4), format="XYXY", canvas_size=(h, w))
        inputs = {"boxes": boxes, "labels": target["labels"]}
        if self.masks:
            inputs["masks"] = tv_tensors.Mask(target["masks"])
        image, out = self.transform(tv_tensors.Image(image), inputs)
        _, scale, pad = fit_geometry(h, w, self.size, self.mode)  # exact for val; train images move more
        result = {"boxes": out["boxes"].as_subclass(torch.Tensor).float(), "labels": out["labels"].long(),
                  "image_id": torch.tensor(index), "scale": torch.tensor(scale),
                  "pad": torch.tensor(pad, dtype=torch.float32)}
        if self.masks:
            result["masks"] = out["masks"].as_subclass(torch.Tensor).to(torch.uint8)  # (K, S, S)
        return image.as_subclass(torch.Tensor), result


def collate_detection(items: list[tuple[torch.Tensor, dict]]) -> Batch:
    return Batch(torch.stack([image for image, _ in items]), [target for _, target in items])  # (N, 3, S, S)


def make_detection_loader(source, indices, *, size: int, batch_size: int, train: bool, augment: str = "none",
                          mode: str = "letterbox", workers: int | None = None, seed: int = 0, masks: bool = False,
                          dist: Any = None) -> DataLoader:
    """Batches of `indices` of `source` (see the module docstring); `masks`: targets carry instance masks too
    (the source must have them: COCO segmentation, Penn-Fudan, synthetic-shapes)."""
    if augment not in DETECTION_PRESETS:
        raise unknown_name("detection augmentation preset", augment, DETECTION_PRESETS)
    if len(indices) == 0:
        raise CnnkitError("a detection split is empty; lower --val/--test or add images")
    aug = DETECTION_PRESETS[augment] if train and augment != "none" else None
    if masks:
        source.require_masks()
    dataset = DetectionDataset(source, indices, size, aug, mode, masks)
    workers = auto_workers(len(indices)) if workers is None else workers
    return EpochLoader(dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate_detection, seed=seed,
                       persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                       **shard_options(dataset, shuffle=train, seed=seed, dist=dist))


def to_image_coordinates(boxes: torch.Tensor, scale: torch.Tensor, pad: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Boxes (D, 4) in network pixels → the original image's pixels, clipped to it."""
    sx, sy = float(scale[0]), float(scale[1])
    left, top = float(pad[0]), float(pad[1])
    out = (boxes - boxes.new_tensor([left, top, left, top])) / boxes.new_tensor([sx, sy, sx, sy])
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out
