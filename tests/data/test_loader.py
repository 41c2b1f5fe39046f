"""Classification loaders (cnnkit.data.loader): fitted_arrays from files of any sizes, TensorLoader's DDP
sharding and per-epoch order, make_loader's one-time normalisation of in-memory data and of decoded files, and
its batched augmentation of the uint8 split on the device given by set_device."""
from __future__ import annotations

import numpy as np
from PIL import Image

from cnnkit.data.builtin import open_source
from cnnkit.data.loader import fitted_arrays


def test_files_of_different_sizes_are_fitted_one_by_one(tmp_path) -> None:
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate([(20, 30), (40, 25), (16, 16), (33, 50)]):
        folder = tmp_path / ("ant" if i % 2 else "bee")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    source = open_source(str(tmp_path))
    out = fitted_arrays(source, np.arange(len(source)), 3, 16, "crop", "bicubic")
    assert out.shape == (4, 3, 16, 16) and out.dtype.is_floating_point is False


def test_tensor_loader_shards_ranks_like_distributed_sampler_and_reshuffles_by_epoch() -> None:
    import torch

    from cnnkit.data.loader import TensorLoader

    x, y = torch.arange(10.0)[:, None], torch.arange(10)
    ranks = [TensorLoader(x, y, batch_size=4, shuffle=True, seed=3, rank=r, world_size=3) for r in range(3)]
    seen = [[int(v) for batch in loader for v in batch.targets] for loader in ranks]
    assert [len(s) for s in seen] == [4, 4, 4] and [len(loader) for loader in ranks] == [1, 1, 1]
    assert set().union(*seen) == set(range(10))  # 12 slots over 10 items: padded by repeating, as DDP does
    one = TensorLoader(x, y, batch_size=10, shuffle=True, seed=3)
    first = [int(v) for v in next(iter(one)).targets]
    one.set_epoch(1)
    second = [int(v) for v in next(iter(one)).targets]
    assert sorted(first) == sorted(second) == list(range(10)) and first != second
    for batch in one:  # images travel with their targets
        assert torch.equal(batch.images[:, 0].long(), batch.targets)


def test_make_loader_normalises_in_memory_data_once(tmp_path) -> None:
    import torch

    from cnnkit.data.loader import TensorLoader, make_loader

    source = open_source("digits")
    indices = np.arange(20)
    loader = make_loader(source, indices, channels=1, size=8, resize="resize", mean=[0.5], std=[0.25], batch_size=8)
    assert isinstance(loader, TensorLoader) and len(loader) == 3
    batch = next(iter(loader))
    expected = (source.arrays[:8].float() / 255 - 0.5) / 0.25  # 8×8 digits already at the size: no resampling
    torch.testing.assert_close(batch.images, expected)
    assert batch.targets.tolist() == source.labels[:8].tolist()


def test_make_loader_decodes_files_once_into_the_same_tensor_loader(tmp_path) -> None:
    import torch

    from cnnkit.data.loader import TensorLoader, make_loader

    rng = np.random.default_rng(1)
    for i in range(6):
        folder = tmp_path / ("ant" if i % 2 else "bee")
        folder.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (20 + i, 18, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    source = open_source(str(tmp_path))
    loader = make_loader(source, np.arange(6), channels=3, size=16, resize="resize", mean=[0.5] * 3, std=[0.5] * 3,
                         batch_size=4, workers=0)
    assert isinstance(loader, TensorLoader) and loader.images.dtype == torch.float32
    expected = (fitted_arrays(source, np.arange(6), 3, 16, "resize").float() / 255 - 0.5) / 0.5
    torch.testing.assert_close(torch.cat([b.images for b in loader]), expected)


def test_augmenting_loader_holds_uint8_and_augments_each_batch_on_its_device() -> None:
    import torch
    from torchvision.transforms.v2 import functional as TF

    from cnnkit.data.loader import make_loader
    from cnnkit.data.transforms import Augment, make_augment

    source = open_source("digits")
    common = dict(channels=1, size=8, resize="resize", mean=[0.0], std=[1.0], batch_size=16)
    flips = make_loader(source, np.arange(40), augment=Augment(hflip=1.0), **common)
    assert flips.images.dtype == torch.uint8 and len(flips) == 3
    flips.set_device("cpu")
    batch = next(iter(flips))
    torch.testing.assert_close(batch.images, TF.horizontal_flip(source.arrays[:16]).float() / 255)
    light = make_loader(source, np.arange(40), augment=make_augment("light"), shuffle=True, seed=2, **common)
    torch.manual_seed(7)  # as the Trainer seeds each epoch: the same draws give the same batches
    first = [b.images for b in light]
    torch.manual_seed(7)
    assert all(torch.equal(a, b.images) for a, b in zip(first, light))
    assert sorted(int(t) for b in light for t in b.targets) == sorted(source.labels[:40].tolist())
