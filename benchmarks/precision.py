"""Precision: cnnkit's `auto` (bf16 autocast + channels_last on this CPU) against plain PyTorch loops and Lightning.

In one process, on the same in-memory random tensors, with the same seeded model, SGD (lr 0.01, momentum 0.9),
cross-entropy and batch, four training loops run `--steps` steps each, round-robin (A, B, C, D, A, B, ...) for
`--rounds` rounds after one untimed warm-up round; the script prints the median images/s of each loop and its
ratio to the two plain loops:

- plain fp32: `loss = F.cross_entropy(model(x), y)`, `zero_grad`, `backward`, `step` (NCHW, no autocast)
- plain bf16+CL: the same with `model.to(memory_format=torch.channels_last)`, channels_last inputs and
  `torch.autocast("cpu", dtype=torch.bfloat16)` (on a GPU: autocast in bf16, or fp16 with a GradScaler)
- cnnkit auto: `Trainer(ClassificationTask(model), optimizer, epochs=1, precision="auto").fit(TensorLoader(x, y,
  batch))`, no callbacks; it also computes the per-batch loss and accuracy logs the plain loops skip
- Lightning bf16-mixed: `lightning.Trainer(precision="bf16-mixed")` with a LightningModule doing the plain step
  (optional: `pip install 'cnnkit[bench]'`; skipped with its reason when lightning is not installed). Its time
  is from `on_train_epoch_start` to `on_train_epoch_end`, which leaves out Lightning's own fit set-up.

Each loop keeps its model and optimiser for the whole run (the models keep training, round after round). The
environment variable CNNKIT_PRECISION (what `auto` means) is unset here, so `auto` is the hardware's choice.
On CUDA (`--device cuda`): cudnn.benchmark on, AMP, channels_last; the GPU is synchronised around each run.

    .venv/bin/python benchmarks/precision.py [--rounds N] [--steps N] [--configs resnet18_128,lenet5]
                                             [--device auto|cpu|cuda] [--json [PATH]] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from cnnkit.data.loader import TensorLoader
from cnnkit.engine.precision import ENV, Precision, cpu_bf16
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.tasks.classification import ClassificationTask

SEED = 0
LR, MOMENTUM = 0.01, 0.9


@dataclass(frozen=True)
class BenchConfig:
    name: str
    label: str
    model: str  # a cnnkit model name (or the name of pretrained weights)
    channels: int
    size: int
    batch_size: int
    num_classes: int
    steps: int  # steps per timed run on the CPU (each run is a few seconds on 2 cores)
    fallback: str | None = None  # the architecture alone, when the pretrained weights' package is absent


CONFIGS = (
    BenchConfig("resnet18_128", "ResNet-18 3x128x128, batch 32", "resnet18", 3, 128, 32, 10, 8),
    BenchConfig("resnet18_32", "ResNet-18 3x32x32, batch 128", "resnet18", 3, 32, 128, 10, 8),
    BenchConfig("lenet5", "LeNet-5 1x32x32, batch 256", "lenet5", 1, 32, 256, 10, 80),
    BenchConfig("effnet_lite0", "EfficientNet-Lite0 fine-tune 3x224x224, batch 32, 2 classes",
                "efficientnet_lite0.imagenet", 3, 224, 32, 2, 4, fallback="efficientnet_lite0"),
)
LOOPS = ("fp32", "bf16_cl", "cnnkit", "lightning")


def loop_labels(device: torch.device) -> dict[str, str]:
    amp = mixed_dtype(device)
    mixed = "bf16" if amp == torch.bfloat16 else "fp16"
    return {"fp32": "plain fp32", "bf16_cl": f"plain {mixed}+CL", "cnnkit": "cnnkit auto",
            "lightning": f"Lightning {mixed}-mixed"}


def mixed_dtype(device: torch.device) -> torch.dtype:
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    return torch.bfloat16


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- data and models ------------------------------------------------------------------------------------------
def make_data(cfg: BenchConfig, steps: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`steps` batches of seeded random images (N, C, S, S) float32 NCHW and labels (N,), on `device`."""
    g = torch.Generator().manual_seed(SEED)
    n = steps * cfg.batch_size
    x = torch.randn(n, cfg.channels, cfg.size, cfg.size, generator=g)
    y = torch.randint(0, cfg.num_classes, (n,), generator=g)
    return x.to(device), y.to(device)


BUILT: dict[str, str] = {}  # config -> the model name it was built from


def new_model(cfg: BenchConfig, device: torch.device) -> torch.nn.Module:
    """The seeded model in train mode on `device` (the name it was built from goes to BUILT)."""
    torch.manual_seed(SEED)
    name = cfg.model
    try:
        model = create_model(name, num_classes=cfg.num_classes, in_channels=cfg.channels)
    except CnnkitError:
        if cfg.fallback is None:
            raise
        name = cfg.fallback  # the same architecture with random weights: the same speed
        torch.manual_seed(SEED)
        model = create_model(name, num_classes=cfg.num_classes, in_channels=cfg.channels)
    BUILT[cfg.name] = name
    return model.to(device).train()


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=LR, momentum=MOMENTUM)


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]


class Batches:
    """The same batches as one iterable for Lightning (which reads a bare list as a list of loaders)."""

    def __init__(self, data: list[tuple[torch.Tensor, torch.Tensor]]):
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __iter__(self):
        return iter(self.data)


# -- the loops: each builds its state once and returns run() -> seconds for one pass over the data -------------
def plain_fp32(cfg: BenchConfig, x, y, device) -> Callable[[], float]:
    model = new_model(cfg, device)
    optimizer = sgd(model)
    data = batches(x, y, cfg.batch_size)

    def run() -> float:
        sync(device)
        start = time.perf_counter()
        for xb, yb in data:
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        sync(device)
        return time.perf_counter() - start

    return run


def plain_mixed_cl(cfg: BenchConfig, x, y, device) -> Callable[[], float]:
    model = new_model(cfg, device)
    model.to(memory_format=torch.channels_last)
    optimizer = sgd(model)
    dtype = mixed_dtype(device)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and dtype == torch.float16)
    data = batches(x, y, cfg.batch_size)

    def run() -> float:
        sync(device)
        start = time.perf_counter()
        for xb, yb in data:
            xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=dtype):
                loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        sync(device)
        return time.perf_counter() - start

    return run


def cnnkit_auto(cfg: BenchConfig, x, y, device) -> Callable[[], float]:
    model = new_model(cfg, device)
    optimizer = sgd(model)
    task = ClassificationTask(model)

    def run() -> float:
        # a new Trainer per run (one epoch each) over the same task, model and optimiser: built outside the timer
        trainer = Trainer(task, optimizer, epochs=1, device=str(device), seed=SEED, precision="auto")
        loader = TensorLoader(x, y, cfg.batch_size)
        sync(device)
        start = time.perf_counter()
        trainer.fit(loader)
        sync(device)
        return time.perf_counter() - start

    return run


def lightning_mixed(cfg: BenchConfig, x, y, device) -> Callable[[], float]:
    """Raises ImportError when lightning is not installed."""
    import lightning as L

    model = new_model(cfg, device)
    optimizer = sgd(model)
    data = Batches(batches(x, y, cfg.batch_size))
    precision = "bf16-mixed" if mixed_dtype(device) == torch.bfloat16 else "16-mixed"

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = model

        def training_step(self, batch, batch_idx):
            xb, yb = batch
            return F.cross_entropy(self.model(xb), yb)

        def configure_optimizers(self):
            return optimizer

    class EpochTimer(L.Callback):
        def on_train_epoch_start(self, trainer, module):
            sync(device)
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            sync(device)
            self.seconds = time.perf_counter() - self.start

    module = Module()

    def run() -> float:
        timer = EpochTimer()
        trainer = L.Trainer(
            accelerator="gpu" if device.type == "cuda" else "cpu", devices=1, precision=precision,
            max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer],
            benchmark=True if device.type == "cuda" else None,
        )
        trainer.fit(module, train_dataloaders=data)
        return timer.seconds

    return run


BUILDERS: dict[str, Callable[..., Callable[[], float]]] = {
    "fp32": plain_fp32, "bf16_cl": plain_mixed_cl, "cnnkit": cnnkit_auto, "lightning": lightning_mixed,
}


# -- the benchmark --------------------------------------------------------------------------------------------
def bench(cfg: BenchConfig, rounds: int, device: torch.device, skipped: dict[str, str]) -> dict:
    x, y = make_data(cfg, cfg.steps, device)
    runs: dict[str, Callable[[], float]] = {}
    for name, build in BUILDERS.items():
        if name in skipped:
            continue
        try:
            runs[name] = build(cfg, x, y, device)
        except ImportError as err:
            skipped[name] = f"not installed ({err}); pip install 'cnnkit[bench]'"
    for run in runs.values():  # warm-up: oneDNN primitives, allocator, autotuning, momentum buffers
        run()
    rates: dict[str, list[float]] = {name: [] for name in runs}
    images = cfg.steps * cfg.batch_size
    for _ in range(rounds):
        for name, run in runs.items():
            rates[name].append(images / run())
    medians = {name: statistics.median(r) for name, r in rates.items()}
    return {"config": cfg.name, "label": cfg.label, "model": BUILT[cfg.name],
            "batch_size": cfg.batch_size, "steps": cfg.steps, "images_per_run": images,
            "median_img_s": medians, "runs_img_s": rates,
            "x_fp32": {k: v / medians["fp32"] for k, v in medians.items()},
            "x_bf16_cl": {k: v / medians["bf16_cl"] for k, v in medians.items()}}


def cpu_model() -> str:
    """lscpu's "Model name" (from /proc/cpuinfo on Linux)."""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor()


def print_table(result: dict, labels: dict[str, str]) -> None:
    print(f"\n{result['label']} ({result['model']}, {result['steps']} steps = {result['images_per_run']} images "
          f"per run)")
    print(f"  {'loop':<24} {'img/s':>9} {'x plain fp32':>13} {'x plain mixed+CL':>17}   runs (img/s)")
    for name, rate in result["median_img_s"].items():
        runs = " ".join(f"{r:.0f}" if r >= 100 else f"{r:.1f}" for r in result["runs_img_s"][name])
        print(f"  {labels[name]:<24} {rate:>9.1f} {result['x_fp32'][name]:>13.3f} "
              f"{result['x_bf16_cl'][name]:>17.3f}   {runs}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = [c.name for c in CONFIGS]
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds of every loop, round-robin (default 5)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps per timed run (default: per config, a few seconds each on 2 cores)")
    parser.add_argument("--configs", default=",".join(names), help=f"comma-separated, of: {', '.join(names)}")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-lightning", action="store_true", help="leave out the Lightning loop")
    parser.add_argument("--json", nargs="?", const="-", metavar="PATH",
                        help="also write the results as JSON (to stdout without PATH)")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 steps (a smoke test)")
    args = parser.parse_args()
    forced = os.environ.pop(ENV, None)  # `auto` must mean what the hardware says, not what the environment forces
    chosen = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(names))
    if unknown:
        parser.error(f"unknown config(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    rounds = args.rounds
    configs = [c for c in CONFIGS if c.name in chosen]
    if args.steps:
        configs = [replace(c, steps=args.steps) for c in configs]
    elif device.type == "cuda":  # a GPU needs more work per run for stable timings
        configs = [replace(c, steps=c.steps * 10) for c in configs]
    if args.quick:
        configs = [replace(c, steps=2) for c in configs]
        rounds = 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    warnings.filterwarnings("ignore", module="lightning")  # its hints about workers and loggers
    warnings.filterwarnings("ignore", module="pytorch_lightning")
    warnings.filterwarnings("ignore", message="head .* has another shape")  # the fine-tune's new 2-class head
    header_lightning = ""
    with contextlib.suppress(ImportError):
        import lightning  # first: its import sets its loggers to INFO

        header_lightning = lightning.__version__
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "GPU available: False", tips, "max_epochs reached"
    skipped: dict[str, str] = {}
    if args.no_lightning:
        skipped["lightning"] = "left out (--no-lightning)"

    auto = Precision.resolve("auto", device)
    labels = loop_labels(device)
    cpu = cpu_model()
    header = {"device": str(device), "cpu": cpu, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "rounds": rounds, "cnnkit_auto": auto.name,
              "channels_last": auto.channels_last, "cpu_bf16": cpu_bf16(), "load_before": round(os.getloadavg()[0], 2)}
    if header_lightning:
        header["lightning"] = header_lightning
    if device.type == "cuda":
        header["gpu"] = torch.cuda.get_device_name(device)
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    if forced is not None:
        print(f"note: {ENV}={forced} was set; unset for this benchmark, so auto = {auto.name}")

    results = []
    for cfg in configs:
        result = bench(cfg, rounds, device, skipped)
        results.append(result)
        print_table(result, labels)
    for name, reason in skipped.items():
        print(f"skipped {labels[name]}: {reason}")

    if results:
        print("\nacceptance: cnnkit auto >= 1.85x plain fp32 on ResNet-18 128^2; >= 1.0x plain mixed+CL everywhere")
        for r in results:
            print(f"  {r['config']:<14} x fp32 {r['x_fp32']['cnnkit']:.3f}   x mixed+CL {r['x_bf16_cl']['cnnkit']:.3f}")
    header["load_after"] = round(os.getloadavg()[0], 2)
    print(f"load average before {header['load_before']:.2f}, after {header['load_after']:.2f} "
          "(other processes on the CPU make the numbers noisy)")
    if args.json:
        doc = {**header, "labels": labels, "skipped": skipped, "configs": [asdict(c) for c in configs],
               "results": results}
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as f:
                f.write(text + "\n")
            print(f"wrote {args.json}", file=sys.stderr)


if __name__ == "__main__":
    main()
