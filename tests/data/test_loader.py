"""Classification loaders (cnnkit.data.loader): fitted_arrays from files of any sizes, TensorLoader's DDP
sharding and per-epoch order, make_loader's one-time normalisation of in-memory data."""
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
