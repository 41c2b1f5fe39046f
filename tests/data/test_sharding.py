"""Per-item loaders (cnnkit.data.sharding): under DDP each rank reads a disjoint shard, together the whole split,
reshuffled by `set_epoch`; without a process group the loader shuffles as usual. The shuffle and each item's random
draws come from (seed, epoch, item) alone: the same in a fresh loader told epoch k as after epochs 0..k-1, and for
any number of worker processes, persistent or not."""
from __future__ import annotations

from types import SimpleNamespace

import torch
from torch.utils.data import Dataset, DistributedSampler, TensorDataset

from cnnkit.data.sharding import EpochLoader, shard_options

DATA = TensorDataset(torch.arange(10))


def _dist(rank: int, world_size: int = 2, enabled: bool = True) -> SimpleNamespace:
    return SimpleNamespace(enabled=enabled, rank=rank, world_size=world_size)


def _order(loader: EpochLoader) -> list[int]:
    return [int(v) for (batch,) in loader for v in batch]


def test_two_ranks_get_disjoint_shards_covering_the_data() -> None:
    shards = [_order(EpochLoader(DATA, batch_size=3, **shard_options(DATA, shuffle=True, seed=7, dist=_dist(r))))
              for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 5
    assert not set(shards[0]) & set(shards[1]) and set(shards[0]) | set(shards[1]) == set(range(10))


def test_set_epoch_reshuffles_and_the_seed_fixes_the_order() -> None:
    options = shard_options(DATA, shuffle=True, seed=7, dist=_dist(0, world_size=1))
    assert isinstance(options["sampler"], DistributedSampler) and options["shuffle"] is False
    loader = EpochLoader(DATA, batch_size=10, **options)
    orders = []
    for epoch in range(3):
        loader.set_epoch(epoch)
        orders.append(_order(loader))
    assert sorted(orders[0]) == list(range(10)) and len({tuple(o) for o in orders}) == 3  # a new order each epoch
    loader.set_epoch(1)
    assert _order(loader) == orders[1]  # the same epoch, the same order
    twin = EpochLoader(DATA, batch_size=10, **shard_options(DATA, shuffle=True, seed=7, dist=_dist(0, 1)))
    twin.set_epoch(2)
    assert _order(twin) == orders[2]  # every rank derives the order from (seed, epoch)


def test_without_a_process_group_or_for_evaluation_plain_options() -> None:
    assert shard_options(DATA, shuffle=True, seed=0) == {"shuffle": True}
    assert shard_options(DATA, shuffle=True, seed=0, dist=_dist(0, enabled=False)) == {"shuffle": True}
    assert shard_options(DATA, shuffle=False, seed=0, dist=_dist(1)) == {"shuffle": False}  # evaluation: whole split
    loader = EpochLoader(DATA, batch_size=4, **shard_options(DATA, shuffle=False, seed=0))
    loader.set_epoch(5)  # no sampler to tell: harmless
    assert _order(loader) == list(range(10))


class Noisy(Dataset):
    """Item i: (i, a draw from torch's global RNG), as an augmentation draws."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return i, torch.rand(())


def _epochs(loader: EpochLoader, epochs) -> list[list[tuple[int, float]]]:
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out.append([(int(i), float(x)) for index, noise in loader for i, x in zip(index, noise)])
    return out


def test_an_epoch_is_the_same_after_a_resume_and_for_any_number_of_workers() -> None:
    straight = _epochs(EpochLoader(Noisy(), batch_size=5, shuffle=True, seed=3), range(3))
    assert len({tuple(i for i, _ in epoch) for epoch in straight}) == 3  # a new order each epoch
    assert len({x for epoch in straight for _, x in epoch}) == 36  # new draws for every item and epoch
    resumed = _epochs(EpochLoader(Noisy(), batch_size=5, shuffle=True, seed=3), [2])
    assert resumed[0] == straight[2]
    workers = EpochLoader(Noisy(), batch_size=5, shuffle=True, seed=3, num_workers=2, persistent_workers=True)
    assert _epochs(workers, range(3)) == straight
    assert _epochs(EpochLoader(Noisy(), batch_size=5, shuffle=True, seed=4), [2]) != resumed  # the seed counts


def test_reading_items_leaves_the_callers_rng_as_it_was() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    _epochs(EpochLoader(Noisy(), batch_size=4, shuffle=True, seed=3), [0])
    assert torch.equal(torch.rand(3), expected)  # dropout's draws do not depend on the data loading
