"""The zoo as a table, like keras.applications': parameters, depth, size, GFLOPs, and CPU latency on demand.

The static columns come from one traced forward of a model built on the meta device (no weights are
allocated, no arithmetic is done), so listing the whole zoo takes seconds; a model that cannot run on meta
is built on the CPU instead. Conventions are cnnkit.diagnose.inspect's: GFLOPs = 2 × multiply-adds of
convolutions and matmuls for one image at the model's input size (torch.utils.flop_counter), depth = the
longest chain of Conv/Linear layers, size = float32 parameter bytes / 2**20 (MiB).

`bench=True` adds CPU latency per image at batch 1 and batch 32 (median of the timed runs, after a warm-up,
eval mode, torch.inference_mode), within a time budget shared by all models: the cheapest models run first,
each gets an equal share of what is left, and a batch-32 run that would not fit its share is skipped.
"""
from __future__ import annotations

import contextlib
import logging
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from cnnkit.diagnose.inspect import default_num_classes, trace_model
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec, list_models

log = logging.getLogger("cnnkit")
BENCH_BUDGET_S = 90.0
_FAILURES = (RuntimeError, ValueError, TypeError, NotImplementedError, IndexError, AssertionError, CnnkitError)


def _build(name: str, device: str) -> nn.Module:
    spec = get_spec(name)
    with torch.device(device):
        return create_model(name, num_classes=default_num_classes(spec), in_channels=spec.input_size[0]).eval()


def model_row(name: str) -> dict:
    """One row of the table: name, task, paper, input_size, num_classes, params, depth, size_mb, gflops."""
    spec = get_spec(name)
    row = {"name": name, "task": spec.task, "paper": spec.paper, "input_size": list(spec.input_size),
           "num_classes": default_num_classes(spec)}
    for device in ("meta", "cpu"):
        try:
            model = _build(name, device)
            trace = trace_model(model, spec.input_size, label=name)
        except _FAILURES as err:
            failure = (str(err).strip().splitlines() or [type(err).__name__])[0]
            continue
        params = sum(p.numel() for p in model.parameters())
        return {**row, "params": params, "depth": trace.depth, "size_mb": round(params * 4 / 2**20, 2),
                "gflops": round(trace.total_flops / 1e9, 4)}
    warnings.warn(f"{name}: cannot trace a forward pass ({failure})", stacklevel=2)
    return {**row, "params": None, "depth": None, "size_mb": None, "gflops": None, "error": failure}


def models_table(task: str | None = None, bench: bool = False, budget_s: float = BENCH_BUDGET_S,
                 threads: int | None = None, names: list[str] | None = None) -> list[dict]:
    """Rows of model_row for every registered model (of one task), or for `names` (any name create_model takes,
    'spec:...' networks included); with `bench`, CPU latency columns too, measured with `threads` intra-op
    threads (default: torch's)."""
    names = list(names) if names else list_models(task=task)
    if not names:
        raise CnnkitError(f"no registered models for task {task!r}")
    rows = [model_row(n) for n in names]
    if bench:
        bench_rows(rows, budget_s, threads)
    return rows


def machine() -> dict:
    """The CPU model (from /proc/cpuinfo), torch's intra-op thread count, and the torch version."""
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "threads": torch.get_num_threads(), "torch": torch.__version__}


def _time(model: nn.Module, x: torch.Tensor) -> float:
    start = time.perf_counter()
    model(x)
    return time.perf_counter() - start


def _runs(model: nn.Module, x: torch.Tensor, share_s: float, most: int) -> list[float]:
    """Timed runs until `most` or until the next one would overrun `share_s` (at least one)."""
    times = [_time(model, x)]
    while len(times) < most and sum(times) + times[-1] <= share_s:
        times.append(_time(model, x))
    return times


@dataclass
class Pace:
    """What the models benchmarked so far cost: predicts the next one, so that none starts past the budget."""

    params: float = 0.0  # parameters built ...
    build_s: float = 0.0  # ... in this many seconds
    flops: float = 0.0  # FLOPs run at batch 1 ...
    run_s: float = 0.0  # ... in this many seconds

    def predict(self, params: int, gflops: float) -> float:
        """Seconds to build a model, warm it up and time one batch-1 run."""
        build = params * self.build_s / self.params if self.params else 0.0
        run = gflops * 1e9 * self.run_s / self.flops if self.flops else 0.0
        return build + 2 * run


@torch.inference_mode()
def bench_model(name: str, share_s: float, most: int = 5, pace: Pace | None = None, gflops: float = 0.0) -> dict:
    """Latency per image in ms at batch 1 and 32 (None when batch 32 does not fit `share_s` seconds);
    `pace` learns the build and run costs (`gflops` per image) of this model."""
    pace = pace if pace is not None else Pace()
    start = time.perf_counter()
    model = _build(name, "cpu")
    pace.params += sum(p.numel() for p in model.parameters())
    pace.build_s += time.perf_counter() - start
    c, h, w = get_spec(name).input_size
    one = torch.randn(1, c, h, w)
    model(one)  # warm-up
    b1 = _runs(model, one, share_s * 0.3, most)
    pace.flops += gflops * 1e9 * len(b1)
    pace.run_s += sum(b1)
    left = share_s - (time.perf_counter() - start)
    guess = 32 * statistics.median(b1)  # batch 32 rarely costs more than 32 single images on a CPU
    result = {"latency_ms_b1": round(1e3 * statistics.median(b1), 3), "runs_b1": len(b1),
              "latency_ms_b32": None, "runs_b32": 0}
    if guess > left:
        return result
    batch = torch.randn(32, c, h, w)
    if 3 * guess < left:  # cheap: warm up at this batch size too
        model(batch)
        left -= guess
    b32 = _runs(model, batch, left, most)
    return {**result, "latency_ms_b32": round(1e3 * statistics.median(b32) / 32, 3), "runs_b32": len(b32)}


@contextlib.contextmanager
def num_threads(n: int | None):
    """Within the block, torch uses `n` intra-op threads (None: unchanged)."""
    before = torch.get_num_threads()
    if n is not None:
        if n < 1:
            raise CnnkitError(f"threads must be a positive integer, got {n}")
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def bench_rows(rows: list[dict], budget_s: float = BENCH_BUDGET_S, threads: int | None = None) -> None:
    """Add latency columns to `rows` in place, cheapest model first, sharing `budget_s` seconds; a model
    predicted (from the ones before) not to finish one batch-1 run in the time left is skipped."""
    with num_threads(threads):
        _bench_all(rows, budget_s)
        for row in rows:
            row["threads"] = torch.get_num_threads()


def _bench_all(rows: list[dict], budget_s: float) -> None:
    deadline, pace = time.perf_counter() + budget_s, Pace()
    skipped = {"latency_ms_b1": None, "latency_ms_b32": None, "runs_b1": 0, "runs_b32": 0}
    order = sorted((r for r in rows if r.get("gflops") is not None), key=lambda r: r["gflops"])
    for i, row in enumerate(order):
        left = deadline - time.perf_counter()
        if pace.predict(row["params"], row["gflops"]) > left:
            row.update(skipped)
            continue
        try:
            row.update(bench_model(row["name"], left / (len(order) - i), pace=pace, gflops=row["gflops"]))
        except _FAILURES as err:
            row.update({**skipped, "error": (str(err).strip().splitlines() or [type(err).__name__])[0]})
        log.debug("bench %s: %s", row["name"], row)


def _cell(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def format_table(rows: list[dict], bench: bool = False) -> str:
    """The table as text, with a header line stating the conventions."""
    width = max([len(r["name"]) for r in rows] + [4])
    head = f"{'name':<{width}} {'params':>12} {'depth':>5} {'size MB':>8} {'GFLOPs':>8}"
    head += f" {'ms/img b1':>9} {'ms/img b32':>10}" if bench else ""
    lines = [head + f"  {'input':<10} {'task':<9} paper"]
    for r in rows:
        line = (f"{r['name']:<{width}} {_cell(r['params'], ',d'):>12} {_cell(r['depth'], 'd'):>5} "
                f"{_cell(r['size_mb'], '.1f'):>8} {_cell(r['gflops'], '.3f'):>8}")
        if bench:
            line += f" {_cell(r.get('latency_ms_b1'), '.2f'):>9} {_cell(r.get('latency_ms_b32'), '.2f'):>10}"
        lines.append(line + f"  {'x'.join(map(str, r['input_size'])):<10} {r['task']:<9} {r['paper']}")
    lines += ["", "params at the factory's default classes; depth: longest chain of Conv/Linear layers; "
              "size: float32 parameters, MB = 2**20 bytes; GFLOPs: 2 x multiply-adds of convolutions and "
              "matmuls, one image at the input shown (torch.utils.flop_counter)"]
    if bench:
        m = machine()
        threads = next((r["threads"] for r in rows if "threads" in r), m["threads"])
        lines.append(f"latency: CPU ms per image, median of timed runs after a warm-up, eval + inference_mode; "
                     f"'-' = skipped to stay within the time budget; {m['cpu']}, {threads} threads, "
                     f"torch {m['torch']}")
    return "\n".join(lines)
