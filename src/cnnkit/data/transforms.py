"""Preprocessing and augmentation with torchvision.transforms.v2.

The pipeline for one image: decode (uint8, model's channels) → fit to the input size → augment (uint8,
train only) → float in [0, 1] → normalise with the training split's mean/std, or whiten per image.
Because every step is a v2 transform, boxes and masks (tv_tensors) move with the image.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from cnnkit.errors import CnnkitError, unknown_name


@dataclass
class Augment:
    """Each knob on its own; the presets only choose values for them."""

    crop: str = "none"  # 'none', 'pad' (random crop from a padded image) or 'resize' (random resized crop)
    crop_padding: float = 0.125  # pad as a fraction of the side, for crop='pad'
    crop_scale: float = 0.6  # smallest area fraction, for crop='resize'
    hflip: float = 0.0  # probability
    vflip: float = 0.0
    jitter: float = 0.0  # brightness/contrast (and saturation for colour) strength, 0..1
    rotation: float = 0.0  # degrees, uniform in ±rotation
    scale: float = 0.0  # zoom in 1 ± scale
    translate: float = 0.0  # shift as a fraction of the side
    erasing: float = 0.0  # probability of one random occluder


PRESETS = {
    "none": Augment(),
    "light": Augment(crop="pad", hflip=0.5),
    "standard": Augment(crop="resize", crop_scale=0.6, hflip=0.5, jitter=0.2, rotation=10.0),
    "strong": Augment(crop="resize", crop_scale=0.35, hflip=0.5, jitter=0.4, rotation=15.0, scale=0.1, erasing=0.25),
}
RESIZE_MODES = ("resize", "pad", "crop")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")


def make_augment(preset: str = "none", **overrides) -> Augment:
    """A preset with some knobs changed: make_augment('light', hflip=0.0)."""
    if preset not in PRESETS:
        raise unknown_name("augmentation preset", preset, PRESETS)
    names = {f.name for f in fields(Augment)}
    for key in overrides:
        if key not in names:
            raise unknown_name("augmentation option", key, names)
    return replace(PRESETS[preset], **overrides)


class FitSize(v2.Transform):
    """Bring any image to (size, size): stretch ('resize'), centre-pad ('pad', the LeNet-5 way for MNIST)
    after shrinking what is too large, or resize the short side and centre-crop ('crop')."""

    def __init__(self, size: int, mode: str = "resize", interpolation: str = "bilinear"):
        super().__init__()
        if mode not in RESIZE_MODES:
            raise unknown_name("resize mode", mode, RESIZE_MODES)
        if interpolation not in INTERPOLATIONS:
            raise unknown_name("interpolation", interpolation, INTERPOLATIONS)
        self.size, self.mode = size, mode
        self.interpolation = v2.InterpolationMode(interpolation)

    def transform(self, inpt, params):
        h, w = F.get_size(inpt)
        s = self.size
        if (h, w) == (s, s):
            return inpt
        how = {"interpolation": self.interpolation, "antialias": True}
        if self.mode == "resize":
            return F.resize(inpt, [s, s], **how)
        if self.mode == "crop":
            return F.center_crop(F.resize(inpt, s, **how), [s, s])
        if max(h, w) > s:  # pad: shrink to fit first, keeping the aspect ratio
            inpt = F.resize(inpt, None, max_size=s, **how)
            h, w = F.get_size(inpt)
        top, left = (s - h) // 2, (s - w) // 2
        return F.pad(inpt, [left, top, s - w - left, s - h - top])


class Whiten(torch.nn.Module):
    """Per-image standardisation: zero mean, unit std over each image's pixels (std floored at 1/sqrt(n)), as
    tf.image.per_image_standardization: the population std. Works on one image (C, H, W) or a batch (N, C, H, W)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = (-3, -2, -1)
        n = x.shape[-3] * x.shape[-2] * x.shape[-1]
        std = x.std(dim=dims, keepdim=True, correction=0).clamp_min(1.0 / n**0.5)
        return (x - x.mean(dim=dims, keepdim=True)) / std


def augment_ops(aug: Augment, size: int, channels: int) -> list:
    """v2 transforms on the uint8 image (before conversion to float)."""
    ops: list = []
    if aug.crop == "pad":
        ops.append(v2.RandomCrop(size, padding=max(1, round(aug.crop_padding * size)), padding_mode="reflect"))
    elif aug.crop == "resize":
        ops.append(v2.RandomResizedCrop(size, scale=(aug.crop_scale, 1.0), antialias=True))
    elif aug.crop != "none":
        raise CnnkitError(f"crop must be none, pad or resize, got {aug.crop!r}")
    if aug.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip > 0:
        ops.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.rotation > 0 or aug.scale > 0 or aug.translate > 0:
        ops.append(v2.RandomAffine(
            degrees=aug.rotation,
            translate=(aug.translate, aug.translate) if aug.translate > 0 else None,
            scale=(1 - aug.scale, 1 + aug.scale) if aug.scale > 0 else None,
        ))
    if aug.jitter > 0:
        j = aug.jitter
        ops.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j if channels == 3 else None))
    return ops


def to_model_input(mean: list[float], std: list[float], whiten: bool = False) -> list:
    """uint8 → float [0, 1] → normalised (or whitened) input."""
    ops: list = [v2.ToDtype(torch.float32, scale=True)]
    ops.append(Whiten() if whiten else v2.Normalize(mean, std))
    return ops


def build_transform(
    size: int, channels: int, mean: list[float], std: list[float], *, whiten: bool = False,
    augment: Augment | None = None, resize: str = "resize", interpolation: str = "bilinear",
) -> v2.Compose:
    """The whole per-image pipeline, from a decoded uint8 image to the model's input. A random resized crop
    works on the image as decoded (it outputs size × size itself), so it is not fitted, and stretched, first."""
    crops_itself = augment is not None and augment.crop == "resize"
    ops: list = [] if crops_itself else [FitSize(size, resize, interpolation)]
    if augment is not None:
        ops += augment_ops(augment, size, channels)
    ops += to_model_input(mean, std, whiten)
    if augment is not None and augment.erasing > 0:
        ops.append(v2.RandomErasing(p=augment.erasing, value=0))
    return v2.Compose(ops)


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of a (N, C, H, W) uint8 batch, in [0, 1] units."""
    x = images.to(torch.float64) / 255.0
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3), correction=0).clamp_min(1e-3)
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]
