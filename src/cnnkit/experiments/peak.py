"""This machine's measured peak: the FLOP/s of a square GEMM and of a 3×3 convolution, at fp32 and at the
mixed precision `auto` picks, timed for about a second each and cached as JSON, so that `cnnkit bench` can
say what fraction of what the hardware actually does a model reaches (MFU).

    peaks = measured_peaks(["fp32", "bf16"], torch.device("cpu"))   # {"fp32": {"gemm": GFLOP/s, "conv": ...}}

The cache is $CNNKIT_CACHE/peak-<key>.json (default ~/.cache/cnnkit), the key a hash of the processor's name,
the thread count and the torch version, so another machine, another thread count or another oneDNN measures
again; `remeasure=True` (`cnnkit bench --remeasure`) ignores what is cached. A FLOP is one multiply or one add
(a multiply-add is 2), as torch.utils.flop_counter counts.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F

GEMM_N = 1024  # (n × n) @ (n × n)
CONV_SHAPE = (8, 64, 56)  # batch, channels in = out, height = width: a ResNet stage-1 convolution
SECONDS = 1.0  # timing of each kernel
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def gemm_flops(n: int) -> int:
    """FLOPs of (n × n) @ (n × n): n³ multiply-adds."""
    return 2 * n ** 3


def conv_flops(batch: int, channels: int, size: int) -> int:
    """FLOPs of a 3×3 convolution, stride 1, padding 1, `channels` in and out, on (batch, channels, size, size):
    every output value is channels·9 multiply-adds."""
    return 2 * batch * channels * size * size * channels * 9


def best_seconds(fn: Callable[[], object], seconds: float, clock: Callable[[], float] = time.perf_counter,
                 least: int = 3) -> float:
    """The fastest of repeated calls of `fn` (after one warm-up call) within about `seconds`, at least `least`
    calls: the peak is what the kernel reaches, not its average under a shared machine's noise."""
    fn()
    best, start, calls = math.inf, clock(), 0
    while calls < least or clock() - start < seconds:
        t = clock()
        fn()
        best = min(best, clock() - t)
        calls += 1
    return best


def _sync(device: torch.device) -> Callable[[], None]:
    return (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)


def measure_gemm(precision: str, device: torch.device, seconds: float = SECONDS, n: int = GEMM_N) -> float:
    """FLOP/s of an (n × n) matrix product in `precision` (fp32, bf16 or fp16) on `device`."""
    a = torch.randn(n, n, device=device, dtype=DTYPES[precision])
    b = torch.randn(n, n, device=device, dtype=DTYPES[precision])
    sync = _sync(device)

    def run() -> None:
        torch.mm(a, b)
        sync()

    with torch.inference_mode():
        return gemm_flops(n) / best_seconds(run, seconds)


def measure_conv(precision: str, device: torch.device, seconds: float = SECONDS,
                 shape: tuple[int, int, int] = CONV_SHAPE) -> float:
    """FLOP/s of a 3×3 convolution of `shape` (batch, channels, size) in `precision`, channels_last where
    cnnkit's precision runs it so (mixed precision, or any GPU)."""
    batch, channels, size = shape
    x = torch.randn(batch, channels, size, size, device=device, dtype=DTYPES[precision])
    w = torch.randn(channels, channels, 3, 3, device=device, dtype=DTYPES[precision])
    if precision != "fp32" or device.type == "cuda":
        x, w = x.contiguous(memory_format=torch.channels_last), w.contiguous(memory_format=torch.channels_last)
    sync = _sync(device)

    def run() -> None:
        F.conv2d(x, w, padding=1)
        sync()

    with torch.inference_mode():
        return conv_flops(batch, channels, size) / best_seconds(run, seconds)


def machine_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (/proc/cpuinfo on Linux)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_path(device: torch.device) -> Path:
    """$CNNKIT_CACHE/peak-<hash>.json (default ~/.cache/cnnkit), one file per machine, threads and torch."""
    key = f"{machine_name(device)}|{device.type}|{torch.get_num_threads()}|{torch.__version__}"
    folder = Path(os.environ.get("CNNKIT_CACHE", Path.home() / ".cache" / "cnnkit"))
    return folder / f"peak-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"


def _read(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def measured_peaks(precisions: Iterable[str], device: torch.device, *, remeasure: bool = False,
                   seconds: float = SECONDS) -> dict[str, dict[str, float]]:
    """{precision: {"gemm": GFLOP/s, "conv": GFLOP/s}} for each of `precisions` on `device`: from the cache,
    or measured (each kernel for about `seconds`) and added to it; `remeasure` measures them again (other
    precisions stay cached)."""
    path = cache_path(device)
    cached = _read(path)
    wanted = list(dict.fromkeys(precisions))
    missing = [p for p in wanted if remeasure or not isinstance(cached.get(p), dict)]
    for p in missing:
        cached[p] = {"gemm": measure_gemm(p, device, seconds) / 1e9, "conv": measure_conv(p, device, seconds) / 1e9}
    if missing:
        cached.update(machine=machine_name(device), threads=torch.get_num_threads(), torch=torch.__version__)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps(cached, indent=1))
        partial.replace(path)  # atomic: a reader never sees half a file
    return {p: {"gemm": float(cached[p]["gemm"]), "conv": float(cached[p]["conv"])} for p in wanted}


def peak_gflops(peak: dict[str, float]) -> float:
    """The peak a model's MFU is measured against: the faster of the GEMM and the convolution."""
    return max(peak["gemm"], peak["conv"])
