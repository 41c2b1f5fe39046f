"""DDP pieces: the no-op without torchrun, each rank's shard of the training split, and one short torchrun on
the CPU (gloo, two processes: the same code path NCCL takes on GPUs). The three tasks under torchrun, and the
loss curve against one process, are tests/recipes/test_ddp.py (slow)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from cnnkit.data.loader import TensorLoader
from cnnkit.data.sharding import EpochLoader, shard_options
from cnnkit.engine.distributed import DistInfo, barrier, broadcast_object, init_distributed

TORCHRUN = Path(sys.executable).parent / "torchrun"


def test_without_torchrun_there_is_no_process_group(monkeypatch) -> None:
    for name in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    info = init_distributed()
    assert info == DistInfo() and info.is_main and not info.enabled
    assert broadcast_object("runs/x", info) == "runs/x"
    barrier(info)  # a no-op


def _tensor_shards(n: int, batch: int, epoch: int, world: int = 2) -> list[list[list[int]]]:
    """Each rank's batches (sample ids) of one epoch of a shuffled TensorLoader over n samples."""
    shards = []
    for rank in range(world):
        loader = TensorLoader(torch.arange(n), torch.arange(n), batch, shuffle=True, seed=7, rank=rank,
                              world_size=world)
        loader.set_epoch(epoch)
        shards.append([b.images.tolist() for b in loader])
    return shards


def test_tensor_loader_ranks_together_take_the_single_process_batches() -> None:
    """Rank r takes every world-th item of one seeded order, so step t's batches of the two ranks are together
    step t's batch of one process with twice the batch: why the DDP loss curve equals the 1-process one."""
    for epoch in (0, 1):
        (r0, r1), single = _tensor_shards(40, 4, epoch), _tensor_shards(40, 8, epoch, world=1)[0]
        assert len(r0) == len(r1) == len(single) == 5
        assert [sorted(a + b) for a, b in zip(r0, r1)] == [sorted(s) for s in single]
    assert _tensor_shards(40, 4, 0) != _tensor_shards(40, 4, 1)  # reshuffled every epoch


def test_tensor_loader_ranks_take_the_same_number_of_steps() -> None:
    """Padded like DistributedSampler: with 5 items each of 2 ranks takes 3 (so their all-reduces match)."""
    r0, r1 = _tensor_shards(5, 2, 0)
    assert len(r0) == len(r1)


def test_distributed_sampler_shards_the_detection_and_segmentation_loaders() -> None:
    """shard_options: a DistributedSampler per rank (equal lengths, disjoint but for padding, the whole split),
    reshuffled by EpochLoader.set_epoch; without a process group, plain shuffling."""
    data = list(range(11))

    def epoch_of(rank: int, epoch: int) -> list[int]:
        info = DistInfo(rank=rank, local_rank=rank, world_size=2, enabled=True)
        loader = EpochLoader(data, batch_size=2, **shard_options(data, shuffle=True, seed=3, dist=info))
        loader.set_epoch(epoch)
        return [int(i) for b in loader for i in b]

    for epoch in (0, 1):
        r0, r1 = epoch_of(0, epoch), epoch_of(1, epoch)
        assert len(r0) == len(r1) == 6  # padded: every rank takes the same number of steps
        assert sorted(set(r0) | set(r1)) == data
    assert epoch_of(0, 0) != epoch_of(0, 1)
    assert shard_options(data, shuffle=True, seed=3, dist=None) == {"shuffle": True}
    assert shard_options(data, shuffle=False, seed=3, dist=DistInfo(1, 1, 2, True)) == {"shuffle": False}


@pytest.mark.skipif(not TORCHRUN.is_file(), reason=f"no torchrun beside {sys.executable}")
@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo in this torch")
def test_torchrun_two_processes_train_one_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", "2", "-m", "cnnkit", "-q", "train",
           "--data", "digits", "--epochs", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # --out is the one folder; no runs/ beside it
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    split = json.loads((out / "split.json").read_text())
    n_train = split["splits"]["train"]["count"]
    # each rank took half of the training split: steps per epoch = ceil(ceil(n/2) / batch)
    steps = state["scheduler"]["scheduler"]["last_epoch"] / 2
    assert steps == math.ceil(math.ceil(n_train / 2) / 64)
    assert (out / "model.pt").is_file()
