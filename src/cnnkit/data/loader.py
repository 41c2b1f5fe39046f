"""From a source and split indices to batches. Every split becomes one fitted uint8 tensor once (in-memory
arrays fitted, files decoded by `cache.decoded_images`), sliced into batches by `TensorLoader`: without
augmentation normalised once into floats, with it augmented a batch at a time by `BatchAugment` on the model's
device. `ImageDataset` / `EpochSeededLoader`, the older per-sample path, remain for code that wants a Dataset."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from cnnkit.data.batch import Batch
from cnnkit.data.batch_augment import BatchAugment
from cnnkit.data.cache import MEMORY_SHARE, available_memory, decoded_images
from cnnkit.data.cache import fitted_arrays as fitted_arrays  # its older home: callers import it from here
from cnnkit.data.images import BadImage
from cnnkit.data.sources import ImageSource
from cnnkit.data.transforms import Augment, FitSize
from cnnkit.errors import CnnkitError


class ImageDataset(Dataset):
    """Item i of a split: (model input (C, S, S) float, class index or (K,) float targets).

    Files are decoded per item; in-memory images are fitted to size once (`pre`) and only augmented per item.
    """

    def __init__(self, source: ImageSource, indices: np.ndarray, transform, channels: int, size: int,
                 resize: str = "resize", interpolation: str = "bilinear"):
        self.source, self.indices, self.channels = source, np.asarray(indices), channels
        self.transform = transform
        self.labels = source.target_tensor(self.indices)  # (n,) class indices or (n, K) float targets
        self.pre: torch.Tensor | None = None
        if source.arrays is not None:
            self.pre = fitted_arrays(source, self.indices, channels, size, resize, interpolation)  # (n, C, S, S)
            self.transform = _without_fit(transform)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pre is not None:
            return self.transform(self.pre[i]), self.labels[i]
        j = int(self.indices[i])
        try:
            img = self.source.load(j, self.channels)
        except BadImage as err:
            raise CnnkitError(f"cannot decode {self.source.ids[j]}: {err}") from None
        return self.transform(img), self.labels[i]


def _without_fit(transform):
    from torchvision.transforms import v2

    return v2.Compose([t for t in transform.transforms if not isinstance(t, FitSize)])


def collate(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> Batch:
    images, labels = zip(*samples)
    return Batch(torch.stack(images), torch.stack(labels))


class TensorLoader:
    """Batches sliced from whole tensors: no per-sample work.

    Shuffles with its own generator, reseeded from (seed, epoch) so that a resumed run sees the same order; under
    DDP each rank takes every world_size-th item of the order. With a `transform` (a `BatchAugment`), `images`
    is the uint8 split and each batch is moved to the device given by `set_device` (pinned first on CUDA when
    `pin_memory`), then transformed there.
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False, rank: int = 0, world_size: int = 1,
                 transform: BatchAugment | None = None, pin_memory: bool = False):
        self.images, self.targets = images, targets
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.transform, self.pin_memory = transform, pin_memory
        self.device: torch.device | None = None  # None: where the images are

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def set_device(self, device: torch.device | str) -> None:
        """Augment on `device`: each uint8 batch goes there before its transform (the Trainer calls this)."""
        self.device = torch.device(device)

    def _order(self) -> torch.Tensor:
        n = len(self.images)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.world_size > 1 and n:  # padded like DistributedSampler: every rank takes as many items, hence steps
            total = self._per_rank() * self.world_size
            order = order.repeat(-(-total // n))[:total]
        # each DDP rank takes every world_size-th item; one copy of the order to the data's device per epoch
        return order[self.rank::self.world_size].to(self.images.device)

    def _per_rank(self) -> int:
        return -(-len(self.images) // self.world_size)

    def __len__(self) -> int:
        n = self._per_rank()
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        stop = len(self) * self.batch_size
        if not self.shuffle and self.world_size == 1:  # views of contiguous slices: no copy at all
            for start in range(0, min(stop, len(self.images)), self.batch_size):
                end = start + self.batch_size
                yield self._batch(self.images[start:end], self.targets[start:end])
            return
        order = self._order()
        for start in range(0, min(stop, len(order)), self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self._batch(self.images[idx], self.targets[idx])

    def _batch(self, images: torch.Tensor, targets: torch.Tensor) -> Batch:
        if self.transform is None:
            return Batch(images, targets)
        device = self.device or images.device
        if device != images.device:
            cuda = device.type == "cuda"
            images = (images.pin_memory() if cuda and self.pin_memory else images).to(device, non_blocking=cuda)
        return Batch(self.transform(images), targets)  # (N, C, S, S) float on `device`


class EpochSeededLoader:
    """A DataLoader whose shuffling and worker seeds depend only on (seed, epoch), so resume is exact."""

    def __init__(self, dataset: Dataset, batch_size: int, shuffle: bool, seed: int, workers: int,
                 drop_last: bool = False, pin_memory: bool = False, distributed: bool = False):
        self.generator = torch.Generator()
        self.seed, self.epoch = seed, 0
        if distributed:
            self.sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        else:
            self.sampler = RandomSampler(dataset, generator=self.generator) if shuffle else None
        self.loader = DataLoader(
            dataset, batch_size=batch_size, sampler=self.sampler, num_workers=workers, collate_fn=collate,
            drop_last=drop_last, pin_memory=pin_memory, generator=self.generator,
        )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.generator.manual_seed(self.seed * 100_003 + epoch)
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self.loader)


def make_loader(source: ImageSource, indices: np.ndarray, *, channels: int, size: int, resize: str,
                mean: list[float], std: list[float], whiten: bool = False, augment: Augment | None = None,
                batch_size: int = 64, shuffle: bool = False, seed: int = 0, workers: int | None = None,
                distributed: bool = False, rank: int = 0, world_size: int = 1, pin_memory: bool = False,
                interpolation: str = "bilinear", cache_dir: str | None = None) -> TensorLoader:
    """The loader of one split. Its images are fitted to size once (`decoded_images`: files are decoded by
    `workers` processes, None: from the core count, and cached); without augmentation they are normalised once
    into floats where those fit in memory, otherwise each batch is augmented and normalised by `BatchAugment`.
    DDP: rank `rank` of `world_size` reads its shard (`distributed` is implied by world_size > 1)."""
    indices = np.asarray(indices)
    images = decoded_images(source, indices, channels, size, resize, interpolation, cache_dir=cache_dir,
                            workers=workers)  # (n, C, S, S) uint8
    targets = source.target_tensor(indices)  # (n,) class indices or (n, K) float targets
    transform = BatchAugment(augment, size, channels, mean, std, whiten=whiten)
    common = dict(shuffle=shuffle, seed=seed, rank=rank, world_size=world_size)
    if augment is None and 4 * images.numel() <= MEMORY_SHARE * available_memory():
        x = torch.cat([transform(images[i:i + 4096]) for i in range(0, len(images), 4096)]) if len(images) else \
            torch.empty(0, channels, size, size)  # (n, C, S, S) float, normalised once
        return TensorLoader(x, targets, batch_size, **common)
    return TensorLoader(images, targets, batch_size, transform=transform, pin_memory=pin_memory, **common)


def train_stats(source: ImageSource, indices: np.ndarray, channels: int, size: int, resize: str,
                limit: int = 2000, seed: int = 0) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of the training split at the model's size (a seeded sample of `limit` images)."""
    from cnnkit.data.transforms import channel_stats

    indices = np.asarray(indices)
    if len(indices) > limit:
        indices = np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))
    return channel_stats(decoded_images(source, indices, channels, size, resize))


def run_loader(source, indices, card, cfg, *, train: bool, dist=None):
    """The loader of a classification run's `indices`, as its model card (input size, mean/std, resize) and
    config (augmentation, batch size, seed, workers) say; under DDP (`dist` enabled) the training loader reads
    this rank's shard."""
    from cnnkit.data.transforms import make_augment

    aug = make_augment(cfg.data.augment, **cfg.data.augment_options) if train else None
    if aug is not None and aug == make_augment("none"):
        aug = None
    return make_loader(
        source, indices, channels=card.input_size[0], size=card.input_size[1], resize=card.resize, mean=card.mean,
        std=card.std, whiten=card.whiten, augment=aug, batch_size=cfg.train.batch_size, shuffle=train,
        seed=cfg.train.seed, workers=cfg.data.workers, distributed=bool(dist and dist.enabled),
        rank=dist.rank if dist else 0, world_size=dist.world_size if dist else 1,
        pin_memory=torch.cuda.is_available(), interpolation=card.interpolation,
    )
