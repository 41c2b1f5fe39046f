"""The data pipeline (issue 15): images/s the loader delivers against images/s the model consumes.

For each augmentation preset (none, light, standard, strong) the script iterates the training loader that
`cnnkit.data.loader.make_loader` builds (a TensorLoader over the split fitted once, with `BatchAugment` per batch
when augmenting) and prints the images/s it delivers, against the images/s a training step of the model takes
at the default precision (`Trainer(..., precision="auto")`: bf16 autocast on a CPU with AMX or AVX512-BF16):

(a) MNIST (60,000 training images, 28x28 padded to 32x32), LeNet-5, batch 256;
(b) hymenoptera/train (245 JPEGs of ants and bees), fitted to 224x224, EfficientNet-Lite0 with its ImageNet
    weights (`efficientnet_lite0.imagenet`), batch 32. Epoch 1 includes decoding the JPEGs (the cache); the
    delivered rate from epoch 2 on should be at least 2x what the model consumes.

Then one training epoch of MNIST LeNet-5 with `--augment light` against none, alternated (none, light, none,
light), medians: light should take at most 2x as long. Data: $CNNKIT_DATA, else ../shared/data beside the
repository; a set that is missing is skipped with a message.

    .venv/bin/python benchmarks/data_pipeline.py [--quick] [--only mnist|hymenoptera] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from shared_data import mnist_dir  # benchmarks/ is on sys.path when run as a script

from cnnkit.data.builtin import open_source
from cnnkit.data.loader import make_loader
from cnnkit.data.sources import from_folder
from cnnkit.data.transforms import make_augment
from cnnkit.engine.trainer import Trainer
from cnnkit.models.factory import create_model
from cnnkit.tasks.classification import ClassificationTask

PRESETS = ("none", "light", "standard", "strong")


def hymenoptera_dir() -> Path:
    env = os.environ.get("CNNKIT_DATA")
    root = Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    return root / "hymenoptera"


def delivered(loader, epochs: range) -> float:
    """Images/s of full passes over `loader` (the batches' images made, augmentation included)."""
    loader.set_device(torch.device("cpu"))
    n, start = 0, time.perf_counter()
    for epoch in epochs:
        torch.manual_seed(epoch)
        loader.set_epoch(epoch)
        for batch in loader:
            n += len(batch)
    return n / (time.perf_counter() - start)


def trainer_for(model: torch.nn.Module) -> Trainer:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    return Trainer(ClassificationTask(model), optimizer, epochs=1, device="cpu", precision="auto")


def consumed(model: torch.nn.Module, batch, steps: int) -> tuple[float, str]:
    """Images/s of Trainer training steps on one ready batch (after one warm-up step), and the precision."""
    trainer_for(model).fit([batch])  # warm-up: oneDNN kernels, allocator
    trainer = trainer_for(model)
    start = time.perf_counter()
    trainer.fit([batch] * steps)
    return steps * len(batch) / (time.perf_counter() - start), trainer.precision.name


def loader_for(source, indices, preset: str, **kw):
    augment = None if preset == "none" else make_augment(preset)
    return make_loader(source, indices, augment=augment, shuffle=True, seed=0, **kw)


def mnist(quick: bool) -> None:
    root = mnist_dir()
    if not root.is_dir():
        print(f"skip MNIST: {root} not found (set CNNKIT_DATA)")
        return
    source = open_source(f"mnist:{root}")
    test = set(source.presplit.get("test", np.array([], dtype=np.int64)).tolist())
    train = np.array([i for i in range(len(source)) if i not in test])[: 12_800 if quick else None]
    kw = dict(channels=1, size=32, resize="pad", mean=[0.1], std=[0.3], batch_size=256)
    torch.manual_seed(0)
    model = create_model("lenet5", num_classes=10, in_channels=1)
    rate, precision = consumed(model, next(iter(loader_for(source, train[:256], "none", **kw))), 10 if quick else 40)
    print(f"\n(a) MNIST {len(train)} images, LeNet-5 1x32x32, batch 256; the model consumes {rate:,.0f} img/s "
          f"(precision {precision})")
    print(f"{'preset':<9} {'delivered img/s':>16} {'× model':>8}")
    for preset in PRESETS:
        loader = loader_for(source, train, preset, **kw)
        got = delivered(loader, range(1))
        print(f"{preset:<9} {got:>16,.0f} {got / rate:>8.1f}", flush=True)
    epoch_times(source, train, kw, repeats=1 if quick else 2)


def epoch_times(source, train: np.ndarray, kw: dict, repeats: int) -> None:
    """One training epoch of LeNet-5 with each preset, alternated; medians and the ratio light / none."""
    times: dict[str, list[float]] = {"none": [], "light": []}
    for _ in range(repeats):
        for preset in times:
            loader = loader_for(source, train, preset, **kw)
            torch.manual_seed(0)
            trainer = trainer_for(create_model("lenet5", num_classes=10, in_channels=1))
            trainer.fit(loader)
            times[preset].append(trainer.history[0]["time"])
    none, light = statistics.median(times["none"]), statistics.median(times["light"])
    print(f"MNIST LeNet-5 epoch ({len(train)} images): none {none:.2f} s, light {light:.2f} s, light/none "
          f"{light / none:.2f} ({'meets' if light / none <= 2 else 'ABOVE'} the ≤ 2× target)")


def hymenoptera(quick: bool) -> None:
    root = hymenoptera_dir()
    if not (root / "train").is_dir():
        print(f"skip hymenoptera: {root}/train not found (set CNNKIT_DATA)")
        return
    source = from_folder(root)
    train = np.sort(source.presplit["train"])
    kw = dict(channels=3, size=224, resize="resize", interpolation="bicubic", mean=[127 / 255] * 3,
              std=[128 / 255] * 3, batch_size=32)
    torch.manual_seed(0)
    model = create_model("efficientnet_lite0.imagenet", num_classes=2)
    batch = next(iter(loader_for(source, train[:32], "none", **kw)))
    rate, precision = consumed(model, batch, 2 if quick else 4)
    print(f"\n(b) hymenoptera/train {len(train)} JPEGs at 3x224x224, EfficientNet-Lite0 (ImageNet), batch 32; "
          f"the model consumes {rate:,.1f} img/s (precision {precision})")
    print(f"{'preset':<9} {'epoch 1 img/s (decode)':>23} {'epochs 2+ img/s':>16} {'× model':>8}")
    worst = float("inf")
    for preset in PRESETS:
        start = time.perf_counter()
        loader = loader_for(source, train, preset, **kw)
        decode = time.perf_counter() - start
        first = len(train) / (decode + len(train) / delivered(loader, range(1)))
        later = delivered(loader, range(1, 2 if quick else 4))
        worst = min(worst, later / rate)
        print(f"{preset:<9} {first:>23,.1f} {later:>16,.1f} {later / rate:>8.1f}", flush=True)
    print(f"hymenoptera: delivered from epoch 2 on ≥ {worst:.1f}× what the model consumes "
          f"({'meets' if worst >= 2 else 'BELOW'} the ≥ 2× target)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer images and steps (a smoke test)")
    parser.add_argument("--only", choices=("mnist", "hymenoptera"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"threads={torch.get_num_threads()} cores={os.cpu_count()} torch={torch.__version__} "
          f"load={os.getloadavg()[0]:.2f}")
    if args.only in (None, "mnist"):
        mnist(args.quick)
    if args.only in (None, "hymenoptera"):
        hymenoptera(args.quick)
    print(f"load average now {os.getloadavg()[0]:.2f} (other processes on the CPU make the numbers noisy)")


if __name__ == "__main__":
    main()
