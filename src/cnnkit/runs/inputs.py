"""Images to predict on: decoded a batch at a time (so a large folder fits in memory) by worker processes while
the model runs on the previous batch, unreadable files skipped with one warning; none readable at all is a
one-line error.

    for kept, images in image_batches(paths, card, 64, skipped):   # (n, C, H, W) as the card preprocesses
        outputs = model(images)

The workers are a torch DataLoader's (`read_workers`: one fewer than the cores this process may use, at most 8,
none on one core or for a single batch); each reads one whole batch, so the order of the files is kept.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from cnnkit.data.images import BadImage, read_image
from cnnkit.errors import CnnkitError
from cnnkit.runs.card import ModelCard

MAX_WORKERS = 8
Chunk = tuple[list[Path], list[torch.Tensor], list[str]]  # readable paths, their images, 'PATH (reason)' skipped


def cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_workers(batches: int) -> int:
    """Decoding processes for `batches` batches: min(8, cores − 1), and none for one batch (nothing to overlap)
    or on one core."""
    return 0 if batches <= 1 else max(0, min(MAX_WORKERS, cores() - 1))


class _Chunks(Dataset):
    """Item i: the i-th `size` paths decoded (and transformed), the unreadable ones named with their reason."""

    def __init__(self, paths: list[Path], size: int, channels: int, transform: Callable | None = None):
        self.paths, self.size, self.channels, self.transform = paths, size, channels, transform

    def __len__(self) -> int:
        return -(-len(self.paths) // self.size)

    def __getitem__(self, i: int) -> Chunk:
        kept, images, skipped = [], [], []
        for p in self.paths[i * self.size:(i + 1) * self.size]:
            try:
                image = read_image(p, self.channels)
            except BadImage as err:
                skipped.append(f"{p} ({err})")
                continue
            images.append(image if self.transform is None else self.transform(image))
            kept.append(p)
        return kept, images, skipped


def read_chunks(paths: list[Path], size: int, channels: int = 3, transform: Callable | None = None,
                workers: int | None = None) -> Iterator[Chunk]:
    """(readable paths, their images: uint8 (channels, H, W), or `transform`ed, unreadable 'PATH (reason)') per
    `size` consecutive paths, in order, decoded by `workers` processes (None: read_workers)."""
    if size < 1:
        raise CnnkitError(f"--batch-size must be at least 1, got {size}")
    chunks = _Chunks(list(paths), size, channels, transform)
    workers = read_workers(len(chunks)) if workers is None else workers
    yield from DataLoader(chunks, batch_size=None, shuffle=False, num_workers=workers,
                          prefetch_factor=2 if workers else None)


def image_batches(paths: list[Path], card: ModelCard, batch_size: int, skipped: list[str],
                  workers: int | None = None) -> Iterator[tuple[list[Path], torch.Tensor]]:
    """(readable paths, images preprocessed as the card says (n, C, H, W)) per batch of `paths`, decoded by worker
    processes (read_chunks); each unreadable file goes to `skipped` as 'PATH (reason)'. predict and embed read so."""
    for kept, images, bad in read_chunks(paths, batch_size, card.input_size[0], card.transform(), workers):
        skipped += bad
        if images:
            yield kept, torch.stack(images)  # (n, C, H, W)


def readable_batches(paths: list[Path], batch_size: int = 8, workers: int | None = None
                     ) -> Iterator[tuple[list[Path], list[torch.Tensor]]]:
    """(readable paths, their uint8 (3, H, W) images) per batch of `paths`, decoded by worker processes. Unreadable
    files are skipped, with one warning at the end; none readable at all is a one-line error."""
    skipped, read = [], 0
    for kept, images, bad in read_chunks(paths, batch_size, 3, None, workers):
        skipped += bad
        read += len(kept)
        if kept:
            yield kept, images
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:5])}", stacklevel=2)
    if not read:
        raise CnnkitError("no readable images to predict")


def readable_images(paths: list[Path], workers: int | None = None) -> Iterator[tuple[Path, torch.Tensor]]:
    """(path, uint8 (3, H, W) image) for each readable file of `paths`, one at a time (decoded ahead by worker
    processes). Unreadable files are skipped, with one warning at the end; none readable at all is a one-line
    error."""
    for kept, images in readable_batches(paths, 4, workers):
        yield from zip(kept, images)
