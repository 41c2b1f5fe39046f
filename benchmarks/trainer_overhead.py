"""Trainer overhead: cnnkit's Trainer against a hand-written PyTorch loop on the same in-memory data.

Both sides train the same freshly seeded model with Adam and cross-entropy on the same random tensors,
shuffled every epoch by index slicing, with the same batch size, epochs and threads, in one process.
The runs alternate (plain, cnnkit, plain, cnnkit, ...) after a warm-up of each, and the script prints
the median images/s of each side, the ratio cnnkit / plain of the medians (target: >= 0.95), and the
median (min..max) of the ratios of adjacent pairs, a check that is less sensitive to a noisy machine.

Configs: LeNet-5 on random 28x28 "digits" zero-padded to 1x32x32 (LeNet-5 needs 32x32) at batch 256,
and ResNet-18 (the ImageNet stem) on 3x32x32 at batch 128.

    .venv/bin/python benchmarks/trainer_overhead.py [--quick] [--repeats N] [--device cpu|cuda]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from cnnkit.data.loader import TensorLoader
from cnnkit.engine.trainer import Trainer
from cnnkit.models.factory import create_model
from cnnkit.tasks.classification import ClassificationTask

SEED = 0
LR = 1e-3


@dataclass(frozen=True)
class BenchConfig:
    name: str
    model: str
    channels: int
    batch_size: int
    images: int  # images per epoch (a multiple of batch_size: every batch is full on both sides)
    epochs: int


CONFIGS = (
    BenchConfig("lenet5", "lenet5", 1, 256, 256 * 80, 1),
    BenchConfig("resnet18", "resnet18", 3, 128, 128 * 6, 1),
)


def make_data(cfg: BenchConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded random images, normalised floats (N, C, 32, 32), and labels (N,) in 0..9, on `device`."""
    g = torch.Generator().manual_seed(SEED)
    if cfg.channels == 1:  # 28x28 grey "digits", zero-padded to 32x32 as LeNet-5 expects
        x = F.pad(torch.randint(0, 256, (cfg.images, 1, 28, 28), generator=g, dtype=torch.uint8), [2, 2, 2, 2])
    else:
        x = torch.randint(0, 256, (cfg.images, 3, 32, 32), generator=g, dtype=torch.uint8)
    x = (x.float() / 255.0 - 0.5) / 0.25
    y = torch.randint(0, 10, (cfg.images,), generator=g)
    return x.to(device), y.to(device)


def new_model(cfg: BenchConfig, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(SEED)
    return create_model(cfg.model, num_classes=10, in_channels=cfg.channels).to(device)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_plain(cfg: BenchConfig, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Seconds for `cfg.epochs` epochs of a bare PyTorch loop."""
    model = new_model(cfg, device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    sync(device)
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(SEED * 100_003 + epoch))
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i:i + cfg.batch_size].to(device)
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    sync(device)
    return time.perf_counter() - start


def run_cnnkit(cfg: BenchConfig, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    """Seconds for `cfg.epochs` epochs of Trainer.fit with ClassificationTask and a shuffling TensorLoader."""
    model = new_model(cfg, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    loader = TensorLoader(x, y, cfg.batch_size, shuffle=True, seed=SEED)
    trainer = Trainer(ClassificationTask(model), optimizer, epochs=cfg.epochs, device=str(device), seed=SEED)
    sync(device)
    start = time.perf_counter()
    trainer.fit(loader)
    sync(device)
    return time.perf_counter() - start


def bench(cfg: BenchConfig, repeats: int, device: torch.device) -> dict[str, float]:
    """Median images/s of each side, and the median, lowest and highest ratio of adjacent (plain, cnnkit) pairs.

    Short runs, many of them: neighbours in time share the machine's state (clock, other tenants), so the
    median of pair ratios is steadier than either median alone."""
    x, y = make_data(cfg, device)
    runners: dict[str, Callable[..., float]] = {"plain": run_plain, "cnnkit": run_cnnkit}
    for run in runners.values():  # warm-up: allocator, kernels, thread pool
        run(cfg, x, y, device)
    rates: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            rates[name].append(cfg.images * cfg.epochs / run(cfg, x, y, device))
    pairs = [c / p for p, c in zip(rates["plain"], rates["cnnkit"])]
    return {**{name: statistics.median(r) for name, r in rates.items()},
            "pair": statistics.median(pairs), "lo": min(pairs), "hi": max(pairs)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a quarter of the images, 3 repeats (a smoke test)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each side (alternated)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--only", choices=[c.name for c in CONFIGS], help="run one config")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    configs = [c for c in CONFIGS if args.only in (None, c.name)]
    if args.device == "cuda":  # a GPU needs more work per run for stable timings
        configs = [replace(c, images=c.images * 8) for c in configs]
    repeats = args.repeats
    if args.quick:
        configs = [replace(c, images=c.images // 4) for c in configs]
        repeats = min(repeats, 3)

    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__} repeats={repeats} "
          f"load={os.getloadavg()[0]:.2f}")
    print(f"{'config':<10} {'batch':>5} {'imgs/run':>8} {'plain img/s':>12} {'cnnkit img/s':>13} {'ratio':>6} "
          f"{'pair ratios: median (min..max)':>30}")
    worst = float("inf")
    for cfg in configs:
        r = bench(cfg, repeats, device)
        ratio = r["cnnkit"] / r["plain"]
        worst = min(worst, ratio)
        print(f"{cfg.name:<10} {cfg.batch_size:>5} {cfg.images * cfg.epochs:>8} {r['plain']:>12.1f} "
              f"{r['cnnkit']:>13.1f} {ratio:>6.3f} {r['pair']:>18.3f} ({r['lo']:.2f}..{r['hi']:.2f})", flush=True)
    print(f"worst ratio cnnkit/plain = {worst:.3f} ({'meets' if worst >= 0.95 else 'BELOW'} the 0.95 target); "
          f"load average now {os.getloadavg()[0]:.2f} (other processes on the CPU make the numbers noisy)")


if __name__ == "__main__":
    main()
