"""Checks and times cnnkit's CUDA paths on a GPU machine: AMP, pinned memory, and throughput against a plain loop.

    PYTHONPATH=src python benchmarks/cuda_paths.py            # needs a CUDA GPU; exits 0 with a reason otherwise
    PYTHONPATH=src torchrun --nproc_per_node 1 -m cnnkit -q train --data digits --epochs 2 --out /tmp/ddp  # NCCL
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit import api
from cnnkit.config import load_config
from cnnkit.data.loader import EpochSeededLoader, ImageDataset, TensorLoader
from cnnkit.data.sources import from_folder
from cnnkit.data.transforms import build_transform
from cnnkit.engine.trainer import Trainer
from cnnkit.models.factory import create_model
from cnnkit.tasks.classification import ClassificationTask


def plain_loop(model, x, y, batch: int, steps: int, amp: bool) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (batch,))
        xb, yb = x[idx].cuda(non_blocking=True), y[idx].cuda(non_blocking=True)
        with torch.autocast("cuda", dtype=torch.float16, enabled=amp):
            loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def cnnkit_loop(model, x, y, batch: int, steps: int, amp: bool) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    trainer = Trainer(ClassificationTask(model), opt, epochs=1, device="cuda", amp=amp)
    loader = TensorLoader(x[: steps * batch], y[: steps * batch], batch, shuffle=True)
    torch.cuda.synchronize()
    start = time.perf_counter()
    trainer.fit(loader)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - start)


def throughput(amp: bool, repeats: int = 3) -> None:
    torch.manual_seed(0)
    x, y = torch.randn(128 * 200, 3, 32, 32).pin_memory(), torch.randint(0, 10, (128 * 200,)).pin_memory()
    model = create_model("resnet18", num_classes=10).cuda()
    plain_loop(model, x, y, 128, 20, amp)  # warm-up (cuDNN autotune, allocator)
    p, c = [], []
    for _ in range(repeats):
        p.append(plain_loop(model, x, y, 128, 200, amp))
        c.append(cnnkit_loop(model, x, y, 128, 200, amp))
    mp, mc = statistics.median(p), statistics.median(c)
    print(f"resnet18 3x32x32 b128 amp={amp}: plain {mp:,.0f} img/s  cnnkit {mc:,.0f} img/s  ratio {mc / mp:.3f}")


def pinned_memory() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        from PIL import Image

        rng = np.random.default_rng(0)
        for cls in ("a", "b"):
            (Path(tmp) / cls).mkdir()
            for i in range(32):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(Path(tmp) / cls / f"{i}.png")
        src = from_folder(tmp)
        ds = ImageDataset(src, np.arange(len(src)), build_transform(32, 3, [0.5] * 3, [0.5] * 3), 3, 32)
        loader = EpochSeededLoader(ds, 16, True, 0, workers=2, pin_memory=True)
        batch = next(iter(loader))
        print(f"pinned batches from DataLoader(pin_memory=True): images pinned={batch.images.is_pinned()} "
              f"targets pinned={batch.targets.is_pinned()}")


def amp_training() -> None:
    for amp in (False, True):
        cfg = load_config(overrides={"train": {"epochs": 8, "amp": amp, "device": "cuda"}, "out": f"/tmp/amp_{amp}"})
        start = time.perf_counter()
        result = api.train(cfg)
        print(f"digits lenet5 8 epochs amp={amp}: val accuracy {result.val['accuracy']:.4f} "
              f"in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    if not torch.cuda.is_available():
        print("skip: no CUDA device")
        sys.exit(0)
    print(torch.cuda.get_device_name(), "torch", torch.__version__)
    pinned_memory()
    amp_training()
    throughput(amp=False)
    throughput(amp=True)
