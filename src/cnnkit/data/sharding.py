"""Per-item loaders (detection, segmentation) whose batches depend on (seed, epoch) alone, and their DDP shards.

`EpochLoader` is a DataLoader that the Trainer tells the epoch (`set_epoch`). Its shuffle is reseeded from
(seed, epoch), and each item is read with torch's RNG seeded from (seed, epoch, item index), the caller's RNG left
as it was: an item's augmentation is the same in any worker process, for any number of workers (persistent or
not), and in a run resumed at that epoch as in one that never stopped. Under DDP each rank reads its own shard of
the split (DistributedSampler), reshuffled every epoch; without a process group the loader shuffles as usual."""
from __future__ import annotations

from collections.abc import Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run (as the Trainer's and TensorLoader's)."""
    return seed * 100_003 + epoch


class SeededItems(Dataset):
    """`dataset` read by keys (item seed, index): dataset[index] drawn under torch.manual_seed(item seed)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        seed, index = key
        with torch.random.fork_rng(devices=[]):  # the reader's own RNG (dropout's, in-process) stays as it was
            torch.manual_seed(seed)
            return self.dataset[index]


class ItemSeeds(Sampler):
    """The indices of `sampler` as keys (item seed, index) for SeededItems; `set_epoch` reseeds its shuffle."""

    def __init__(self, sampler: Sampler, size: int, seed: int):
        self.sampler, self.size, self.seed, self.epoch = sampler, size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)
        elif getattr(self.sampler, "generator", None) is not None:
            self.sampler.generator.manual_seed(epoch_seed(self.seed, epoch))

    def __len__(self) -> int:
        return len(self.sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch) + 7_919)  # not the shuffle's
        seeds = torch.randint(0, 2**62, (self.size,), generator=generator).tolist()  # by index: order-free
        for index in self.sampler:
            yield seeds[index], index


class EpochLoader(DataLoader):
    """A DataLoader of `dataset` whose shuffle and per-item randomness come from (seed, epoch) (module doc).
    Takes DataLoader's keywords; `shuffle` or a `sampler` (shard_options gives either)."""

    def __init__(self, dataset: Sized, *, seed: int = 0, shuffle: bool = False, sampler: Sampler | None = None,
                 generator: torch.Generator | None = None, **options: Any):
        if sampler is None:
            sampler = RandomSampler(dataset, generator=torch.Generator()) if shuffle else SequentialSampler(dataset)
        super().__init__(SeededItems(dataset), sampler=ItemSeeds(sampler, len(dataset), seed),
                         generator=generator or torch.Generator(), **options)
        self.seed = seed
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.generator.manual_seed(epoch_seed(self.seed, epoch))  # worker seeds (numpy, random) by epoch too


def shard_options(dataset: Any, *, shuffle: bool, seed: int, dist: Any = None) -> dict:
    """DataLoader keywords: this rank's DistributedSampler when a process group is up and `shuffle` (training),
    else plain shuffling."""
    if shuffle and dist is not None and getattr(dist, "enabled", False):
        sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
        return {"sampler": sampler, "shuffle": False}
    return {"shuffle": shuffle}
