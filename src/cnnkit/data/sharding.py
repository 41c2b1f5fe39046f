"""Training batches under DDP: each rank reads its own shard of the split (DistributedSampler), reshuffled
every epoch. Without a process group the loader shuffles as usual."""
from __future__ import annotations

from typing import Any

from torch.utils.data import DataLoader, DistributedSampler


class EpochLoader(DataLoader):
    """A DataLoader that the Trainer can tell the epoch, so a DistributedSampler shuffles anew each epoch."""

    def set_epoch(self, epoch: int) -> None:
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)


def shard_options(dataset: Any, *, shuffle: bool, seed: int, dist: Any = None) -> dict:
    """DataLoader keywords: this rank's DistributedSampler when a process group is up and `shuffle` (training),
    else plain shuffling."""
    if shuffle and dist is not None and getattr(dist, "enabled", False):
        sampler = DistributedSampler(dataset, num_replicas=dist.world_size, rank=dist.rank, shuffle=True, seed=seed)
        return {"sampler": sampler, "shuffle": False}
    return {"shuffle": shuffle}
