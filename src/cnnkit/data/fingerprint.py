"""Fingerprints of images: an exact hash of the decoded pixels, so that the same picture saved twice (another
file name, another lossless format) is recognised. Perceptual hashes for near-duplicates live beside it."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from cnnkit.data.sources import ImageSource

__all__ = ["pixel_hash", "pixel_hashes"]


def pixel_hash(img: torch.Tensor) -> str:
    """sha256 of a decoded uint8 image (C, H, W) and its shape: equal for equal pixels, whatever the file."""
    img = img.contiguous()
    digest = hashlib.sha256(repr(tuple(img.shape)).encode())
    digest.update(img.numpy().tobytes())
    return digest.hexdigest()


def pixel_hashes(source: ImageSource, indices: np.ndarray | None = None, channels: int = 3) -> list[str]:
    """pixel_hash of each item `indices` (default: all) of `source`, decoded with `channels` channels."""
    indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
    return [pixel_hash(source.load(int(i), channels)) for i in indices]
