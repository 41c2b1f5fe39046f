"""Images to predict on: decoded one batch at a time (so a large folder fits in memory), unreadable files skipped
with one warning; none readable at all is a one-line error."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import torch

from cnnkit.data.images import BadImage, read_image
from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard


def image_batches(paths: list[Path], card: ModelCard, batch_size: int,
                  skipped: list[str]) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """(readable paths, images preprocessed as the card says (n, C, H, W)) per batch of `paths`, decoded one
    batch at a time; each unreadable file goes to `skipped` as 'PATH (reason)'. predict and embed read so."""
    transform, channels = card.transform(), card.input_size[0]
    for start in range(0, len(paths), batch_size):
        kept, images = [], []
        for p in paths[start:start + batch_size]:
            try:
                images.append(transform(read_image(p, channels)))
                kept.append(p)
            except BadImage as err:
                skipped.append(f"{p} ({err})")
        if images:
            yield kept, torch.stack(images)  # (n, C, H, W)


def readable_images(paths: list[Path]) -> Iterator[tuple[Path, torch.Tensor]]:
    """(path, uint8 (3, H, W) image) for each readable file of `paths`, one at a time. Unreadable files are
    skipped, with one warning at the end; none readable at all is a one-line error."""
    skipped, read = [], 0
    for path in paths:
        try:
            image = read_image(path, 3)
        except BadImage as err:
            skipped.append(f"{path} ({err})")
            continue
        read += 1
        yield path, image
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:5])}", stacklevel=2)
    if not read:
        raise CnnkitError("no readable images to predict")
