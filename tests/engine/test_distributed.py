"""DDP under torchrun on the CPU (gloo, two processes): the same code path NCCL takes on GPUs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch


def test_torchrun_two_processes_train_one_run_folder(tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
           "-m", "cnnkit", "-q", "train", "--data", "digits", "--epochs", "2", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    assert state["epoch"] == 2
    split = json.loads((out / "split.json").read_text())
    n_train = split["splits"]["train"]["count"]
    # each rank took half of the training split: steps per epoch = ceil(ceil(n/2) / batch)
    steps = state["scheduler"]["scheduler"]["last_epoch"] / 2
    assert steps == -(-(-(-n_train // 2)) // 64)
    assert (out / "model.pt").is_file()
