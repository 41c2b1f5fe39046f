"""Segmentation batches: images and class-index masks moved together by torchvision.transforms.v2.

    >>> from cnnkit.data.segmentation.source import open_segmentation_source
    >>> source = open_segmentation_source("synthetic-plants:count=40")
    >>> mean, std = source_mean_std(source, range(32))
    >>> loader = make_segmentation_loader(source, range(32), size=128, batch_size=8, train=True,
    ...                                   augment="standard", mean=mean, std=std)
    >>> batch = next(iter(loader))   # Batch(images float (8, 3, h, w) normalised, targets int64 (8, h, w))

One item's pipeline: read (uint8 image, int64 mask) → fit: resize so the LONGER side is `size`, aspect kept
(image bilinear with antialias, mask nearest: tv_tensors.Mask) → augment (training only) → float in [0, 1] →
normalise by mean/std. Collate pads each batch to its largest h, w at the bottom and right: images with 0,
masks with the source's ignore_index, so padding never counts in the loss or the metrics.

Augment presets (`SEGMENTATION_PRESETS`):
    none      nothing
    light     horizontal flip (p = 0.5)
    standard  horizontal flip, scale jitter (a random crop of 35-100 % of the area, aspect 3/4..4/3, resized
              back to the item's size: objects grow up to ~1.7×), colour jitter 0.2 (image only)
Geometry moves image and mask together; masks are always resampled nearest, so no new class values appear.
"""
from __future__ import annotations

import math
import random
from collections.abc import Sequence
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


@dataclass(frozen=True)
class SegmentationAugment:
    hflip: float = 0.0  # probability
    vflip: float = 0.0  # probability (top-down imagery; not in the presets: a street scene has no upside-down)
    scale: tuple[float, float] | None = None  # area fraction of the random crop, resized back to the item size
    jitter: float = 0.0  # brightness/contrast/saturation strength, image only


SEGMENTATION_PRESETS = {
    "none": SegmentationAugment(),
    "light": SegmentationAugment(hflip=0.5),
    "standard": SegmentationAugment(hflip=0.5, scale=(0.35, 1.0), jitter=0.2),
}


def fit_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """(h', w') with max(h', w') = size and the aspect ratio kept (each side at least 1)."""
    s = size / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def fit_image(image: torch.Tensor, size: int, nearest: bool = False) -> torch.Tensor:
    """uint8 (C, H, W) → uint8 (C, h, w) with its longer side `size` (bilinear, antialiased): what the network
    sees at prediction time, the same resize as make_segmentation_loader's. `nearest` for label masks."""
    shape = list(fit_shape(*image.shape[-2:], size))
    if nearest:
        return F.resize(image, shape, interpolation=v2.InterpolationMode.NEAREST)
    return F.resize(image, shape, antialias=True)


class FitLonger(v2.Transform):
    """Resize so the longer side is `size`, aspect kept (masks nearest, as v2 does for tv_tensors.Mask)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def make_params(self, flat_inputs: list) -> dict:
        return {"shape": fit_shape(*v2.query_size(flat_inputs), self.size)}

    def transform(self, inpt, params):
        return F.resize(inpt, list(params["shape"]), antialias=True)


class ScaleJitter(v2.Transform):
    """A random crop of `scale` × the area (aspect jittered 3/4..4/3), resized back to the input's h, w:
    RandomResizedCrop whose output size is each item's own."""

    def __init__(self, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        super().__init__()
        self.scale, self.log_ratio = scale, (math.log(ratio[0]), math.log(ratio[1]))

    def make_params(self, flat_inputs: list) -> dict:
        h, w = v2.query_size(flat_inputs)
        area = h * w * float(torch.empty(1).uniform_(*self.scale))
        aspect = math.exp(float(torch.empty(1).uniform_(*self.log_ratio)))
        ch = min(h, max(1, round(math.sqrt(area / aspect))))
        cw = min(w, max(1, round(math.sqrt(area * aspect))))
        top = int(torch.randint(0, h - ch + 1, (1,)))
        left = int(torch.randint(0, w - cw + 1, (1,)))
        return {"box": (top, left, ch, cw), "size": [h, w]}

    def transform(self, inpt, params):
        return F.resized_crop(inpt, *params["box"], size=params["size"], antialias=True)


def segmentation_transform(size: int, augment: SegmentationAugment | None, mean: Sequence[float],
                           std: Sequence[float]) -> v2.Compose:
    ops: list = [FitLonger(size)]
    if augment is not None:
        if augment.hflip > 0:
            ops.append(v2.RandomHorizontalFlip(augment.hflip))
        if augment.vflip > 0:
            ops.append(v2.RandomVerticalFlip(augment.vflip))
        if augment.scale is not None:
            ops.append(ScaleJitter(augment.scale))
        if augment.jitter > 0:
            j = augment.jitter
            ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]  # images only
    return v2.Compose(ops)


class SegmentationDataset(Dataset):
    """Items `indices` of a SegmentationSource → (image float (3, h, w) normalised, mask int64 (h, w))."""

    def __init__(self, source, indices, size: int, augment: SegmentationAugment | None, mean: Sequence[float],
                 std: Sequence[float]):
        self.source, self.indices = source, np.asarray(indices, dtype=np.int64)
        self.transform = segmentation_transform(size, augment, mean, std)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = self.source.read(int(self.indices[i]))  # uint8 (3, H, W), int64 (H, W)
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).long()


def collate_segmentation(items: list[tuple[torch.Tensor, torch.Tensor]], ignore_index: int = 255) -> Batch:
    """Pad to the batch's largest h, w (bottom, right): images with 0, masks with ignore_index."""
    h = max(image.shape[-2] for image, _ in items)
    w = max(image.shape[-1] for image, _ in items)
    images = torch.zeros(len(items), items[0][0].shape[0], h, w, dtype=items[0][0].dtype)  # (N, 3, h, w)
    masks = torch.full((len(items), h, w), ignore_index, dtype=torch.int64)  # (N, h, w)
    for n, (image, mask) in enumerate(items):
        images[n, :, :image.shape[-2], :image.shape[-1]] = image
        masks[n, :mask.shape[-2], :mask.shape[-1]] = mask
    return Batch(images, masks)


class _Collate:  # picklable for worker processes
    def __init__(self, ignore_index: int):
        self.ignore_index = ignore_index

    def __call__(self, items: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
        return collate_segmentation(items, self.ignore_index)


def _seed_worker(worker_id: int) -> None:
    """numpy and random follow torch's per-worker seed (itself from the loader's generator)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_segmentation_loader(source, indices, *, size: int, batch_size: int, train: bool, augment: str = "none",
                             mean: Sequence[float], std: Sequence[float], workers: int | None = None,
                             seed: int = 0, dist: Any = None) -> DataLoader:
    """A DataLoader of Batch(images float (N, 3, h, w) normalised, targets int64 (N, h, w)); see the module doc."""
    if augment not in SEGMENTATION_PRESETS:
        raise unknown_name("segmentation augmentation preset", augment, SEGMENTATION_PRESETS)
    if len(indices) == 0:
        raise CnnkitError("a segmentation split is empty; lower --val/--test or add images")
    if size < 1 or batch_size < 1:
        raise CnnkitError(f"need size >= 1 and batch_size >= 1, got size={size}, batch_size={batch_size}")
    aug = SEGMENTATION_PRESETS[augment] if train and augment != "none" else None
    dataset = SegmentationDataset(source, indices, size, aug, mean, std)
    workers = auto_workers(len(indices)) if workers is None else workers
    return EpochLoader(dataset, batch_size=batch_size, num_workers=workers,
                       collate_fn=_Collate(getattr(source, "ignore_index", 255)),
                       seed=seed, worker_init_fn=_seed_worker,
                       persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
                       **shard_options(dataset, shuffle=train, seed=seed, dist=dist))


def source_mean_std(source, indices, max_images: int = 64,
                    size: int = 256) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] units over up to `max_images` evenly spaced training images (each
    first fitted to `size` on its longer side, so large photos stay quick), for runs without pretrained weights."""
    indices = np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise CnnkitError("no training images to compute the mean and std from")
    picked = indices[np.unique(np.linspace(0, len(indices) - 1, min(max_images, len(indices))).round().astype(int))]
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for i in picked:
        image, _ = source.read(int(i))  # uint8 (3, H, W)
        if max(image.shape[-2:]) > size:
            image = fit_image(image, size)
        x = image.reshape(3, -1).to(torch.float64) / 255.0  # (3, h*w)
        total += x.sum(dim=1)
        squares += (x * x).sum(dim=1)
        count += x.shape[1]
    mean = total / count
    std = (squares / count - mean * mean).clamp(min=1e-12).sqrt().clamp(min=1e-3)
    return tuple(mean.tolist()), tuple(std.tolist())


def loader_of(cfg: Any, source, indices: np.ndarray, card: Any, train: bool, dist: Any = None) -> DataLoader:
    """The loader of a run's `indices` as its config and model card say (`cfg` a cnnkit.config.Config)."""
    return make_segmentation_loader(source, indices, size=card.input_size[1], batch_size=cfg.train.batch_size,
                                    train=train, augment=cfg.data.augment if train else "none", mean=card.mean,
                                    std=card.std, workers=cfg.data.workers, seed=cfg.train.seed, dist=dist)
