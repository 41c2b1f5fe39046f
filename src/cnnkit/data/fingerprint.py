"""Fingerprints of images: an exact hash of the decoded pixels, so that the same picture saved twice (another
file name, another lossless format) is recognised (the audit's perceptual hashes are in cnnkit.audit); and
`image_view`, which reads the images of any kind of source (classification, detection, segmentation) alike."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from cnnkit.data.images import rgb_to_grey
from cnnkit.data.sources import ImageSource

__all__ = ["image_view", "pixel_hash", "pixel_hashes"]


class _ImageView:
    """The images of a detection or segmentation source as an ImageSource offers its own: `len` and
    `load(i, channels)` → uint8 (channels, H, W)."""

    arrays = None  # read image by image (ImageSource's in-memory fast path does not apply)

    def __init__(self, source: Any):
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def load(self, i: int, channels: int = 3) -> torch.Tensor:
        reader = getattr(self.source, "image", None)  # DetectionSource.image; SegmentationSource.read
        img = reader(i) if reader is not None else self.source.read(i)[0]  # (3, H, W)
        return img if channels == 3 else rgb_to_grey(img)


def image_view(source: Any) -> Any:
    """`source` itself when it is an ImageSource (or already a view), else a view with `len` and
    `load(i, channels)`."""
    return source if isinstance(source, ImageSource | _ImageView) else _ImageView(source)


def pixel_hash(img: torch.Tensor) -> str:
    """sha256 of a decoded uint8 image (C, H, W) and its shape: equal for equal pixels, whatever the file."""
    img = img.contiguous()
    digest = hashlib.sha256(repr(tuple(img.shape)).encode())
    digest.update(img.numpy().tobytes())
    return digest.hexdigest()


def pixel_hashes(source: Any, indices: np.ndarray | None = None, channels: int = 3) -> list[str]:
    """pixel_hash of each item `indices` (default: all) of any source, decoded with `channels` channels."""
    view = image_view(source)
    indices = np.arange(len(view)) if indices is None else np.asarray(indices, dtype=np.int64)
    return [pixel_hash(view.load(int(i), channels)) for i in indices]
