"""`cnnkit bench MODEL|RUN`: training and inference images/s at fp32 and at `auto`, the MFU against this
machine's measured peak (cnnkit.experiments.peak), and where a training step's time goes (torch.profiler).

    result = bench("resnet18", input_size="3x128x128", batch_size=32)
    result["train"]["auto"], result["mfu"]["train"]["auto"], result["breakdown"]["auto"]["conv"]

What is timed is what the verbs run, on synthetic batches of the input size made once (so no decoding and no
augmentation: the model's speed alone):

- training: cnnkit's own Trainer (the precision's autocast and channels_last, the default optimiser, a multiclass
  task over the model's outputs) for `steps` steps after WARMUP steps, timed from step end to step end;
- inference: the model as `predict` runs it (cnnkit.engine.inference.for_inference: eval mode, batch norm folded
  into the convolutions, the precision's memory format), `task.predict_step` under inference mode and autocast,
  the probabilities copied to the CPU;
- the FLOPs: torch.utils.flop_counter on one image's forward pass (convolutions and matrix products, a
  multiply-add is 2 FLOPs); a training step counts 3× the forward (forward, the gradients of the inputs and
  of the weights). MFU = FLOPs per image × images/s ÷ the peak of the precision (cnnkit.experiments.peak);
- the breakdown: PROFILE_STEPS more training steps under torch.profiler; every op's self time goes to a category
  (`op_category`; an op that is none of them takes its caller's, e.g. the buffers a convolution allocates), in
  ms per step beside the step's wall time under the profiler. The categories sum to at most the step: the rest
  is Python between the ops. The data wait is the loader's time (near zero: the batches are made once).

`auto` is measured as what it resolves to (cnnkit.engine.precision); where that is fp32, the fp32 numbers are
reported for both.
"""
from __future__ import annotations

import copy
import os
import re
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.config import Config
from cnnkit.data.batch import Batch
from cnnkit.diagnose.inspect import default_num_classes, parse_input_size
from cnnkit.diagnose.zoo import num_threads
from cnnkit.engine import optimizers
from cnnkit.engine.distributed import DistInfo, resolve_device
from cnnkit.engine.hooks import Callback
from cnnkit.engine.precision import Precision
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.experiments.peak import SECONDS, measured_peaks, peak_gflops
from cnnkit.models.factory import create_model, get_spec
from cnnkit.models.registry import registered
from cnnkit.models.spec import is_spec
from cnnkit.runs.folder import open_model
from cnnkit.tasks import Task, make_task

WARMUP = 3  # untimed steps first: oneDNN builds its kernels, the allocator warms up
PROFILE_STEPS = 3
TRAIN_FLOPS_PER_FORWARD = 3  # forward + input gradients + weight gradients
CATEGORIES = ("conv", "gemm", "norm", "elementwise", "other", "data_wait")
DATA_WAIT = "cnnkit::data_wait"  # the profiler's mark of the loader's time

_CONV = {"conv", "conv1d", "conv2d", "conv3d", "convolution"}
_GEMM = {"mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "addmv", "mv", "dot", "gemm"}
_NORM_KINDS = {"batch", "layer", "group", "instance", "rms", "batchnorm", "layernorm", "groupnorm"}
_ELEMENTWISE = {
    "add", "sub", "rsub", "mul", "div", "neg", "abs", "sqrt", "rsqrt", "exp", "pow", "reciprocal", "sign", "lerp",
    "addcmul", "addcdiv", "maximum", "minimum", "clamp", "clip", "where", "relu", "relu6", "silu", "gelu", "elu",
    "selu", "leaky", "sigmoid", "tanh", "hardswish", "hardsigmoid", "hardtanh", "threshold", "softplus", "mish",
    "dropout", "copy", "clone", "to", "fill", "zero", "zeros", "ones", "contiguous", "foreach",
}


# ---------------------------------------------------------------- which op is what

def _tokens(name: str) -> list[str]:
    """'aten::native_batch_norm' → [aten, native, batch, norm]; 'AddmmBackward0' → [addmm, backward0]."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [t for t in re.split(r"[^a-z0-9]+", spaced.lower()) if t]


def op_category(name: str) -> str:
    """The category of a profiler event's name: conv (convolution, its backward, oneDNN's and cuDNN's), gemm
    (mm, addmm, linear, ...), norm (batch/layer/group/instance norm and their backwards), elementwise (arithmetic,
    activations and their backwards, copies and casts, the optimiser's foreach updates), data_wait (the loader),
    else other (pooling, the loss, reductions, Python)."""
    if name == DATA_WAIT:
        return "data_wait"
    tokens = _tokens(name.removeprefix("autograd::engine::evaluate_function:"))
    words = set(tokens)
    if words & _CONV or any(t.startswith(("conv2d", "conv3d", "convolution")) for t in tokens):
        return "conv"
    if words & _GEMM:
        return "gemm"
    if "norm" in words and words & _NORM_KINDS or words & {"batchnorm", "layernorm", "groupnorm"}:
        return "norm"
    if words & _ELEMENTWISE:
        return "elementwise"
    return "other"


def event_category(event) -> str:
    """A profiler event's category: data_wait inside the loader's mark, else its own, else its nearest caller's
    (an aten::empty inside a convolution is the convolution's time)."""
    found = []
    while event is not None:
        found.append(op_category(event.name))
        event = event.cpu_parent
    if "data_wait" in found:
        return "data_wait"
    return next((c for c in found if c != "other"), "other")


def breakdown(events: Iterable, wall_s: float, steps: int, cuda: bool = False) -> dict[str, float]:
    """{"step_ms": wall time per step, category: ms per step} from the profiler's events: each event's self time
    (device time on a GPU) in its category."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    for event in events:
        us = event.self_device_time_total if cuda else event.self_cpu_time_total
        totals[event_category(event)] += us
    return {"step_ms": wall_s * 1e3 / steps, **{c: totals[c] / 1e3 / steps for c in CATEGORIES}}


# ---------------------------------------------------------------- the model

def open_subject(target: str | Path, input_size: str | tuple | None = None) -> tuple[nn.Module, str, tuple]:
    """(model, label, (C, H, W)) of a run folder (its model.pt, the size from its card), named pretrained weights
    (efficientnet_lite0.imagenet) or a zoo name (random weights, the architecture's size); `input_size`
    ('3x128x128') overrides the size. Only classifiers: their outputs meet a multiclass loss."""
    size = parse_input_size(input_size) if input_size is not None else None
    name = str(target)
    if Path(target).exists() or (registered(name) is None and "." in name and not is_spec(name)):
        model, card = open_model(target)
        if card.problem in ("detect", "segment", "instance"):
            raise CnnkitError(f"bench measures classifiers; {name} is a {card.problem} model")
        label = f"{card.architecture} ({name})" if Path(target).exists() else name
        return model, label, size or tuple(card.input_size)
    spec = get_spec(name)
    if spec.task != "classify":
        raise CnnkitError(f"bench measures classifiers; {name} is a {spec.task} model (see `cnnkit models`)")
    size = size or tuple(spec.input_size)
    return create_model(name, num_classes=default_num_classes(spec), in_channels=size[0], input_size=size), name, size


def probe(model: nn.Module, size: tuple, label: str) -> tuple[int, int]:
    """(the number of outputs, the FLOPs of one image's forward pass) from one forward in eval mode; an input
    the model cannot take is a one-line error."""
    counter = FlopCounterMode(display=False)
    try:
        with torch.no_grad(), counter:
            out = model.eval()(torch.zeros(1, *size))
    except (RuntimeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise CnnkitError(f"input {'x'.join(map(str, size))} does not fit {label}: {reason}") from None
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise CnnkitError(f"bench measures classifiers; {label} does not output (N, classes) scores")
    return int(out.shape[1]), int(counter.get_total_flops())


# ---------------------------------------------------------------- timing

def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class SyntheticLoader:
    """`steps` batches of the same random images and labels, made once; handing each out is marked as the
    data wait for the profiler (and summed in `wait`, seconds)."""

    def __init__(self, batch: Batch, steps: int):
        self.batch, self.steps, self.wait = batch, steps, 0.0

    def __len__(self) -> int:
        return self.steps

    def __iter__(self) -> Iterator[Batch]:
        for _ in range(self.steps):
            start = time.perf_counter()
            with record_function(DATA_WAIT):
                batch = Batch(self.batch.images, self.batch.targets)
            self.wait += time.perf_counter() - start
            yield batch


class StepClock(Callback):
    """The time at the start of fit and at the end of every training step (the device synchronised)."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def on_fit_start(self, trainer) -> None:
        self.times = [_now(self.device)]

    def on_train_batch_end(self, trainer) -> None:
        self.times.append(_now(self.device))


def synthetic_batch(size: tuple, batch_size: int, classes: int) -> Batch:
    g = torch.Generator().manual_seed(0)
    return Batch(torch.randn(batch_size, *size, generator=g), torch.randint(0, classes, (batch_size,), generator=g))


def _training(model: nn.Module) -> tuple[Task, torch.optim.Optimizer]:
    """A multiclass task and `cnnkit train`'s default optimiser."""
    defaults = Config().train
    return make_task("multiclass", model), optimizers.get(defaults.optimizer, model.parameters(), defaults.lr)


def measure_training(model: nn.Module, batch: Batch, steps: int, precision: str, device: torch.device,
                     profile_steps: int = PROFILE_STEPS) -> tuple[float, dict[str, float]]:
    """(training images/s over `steps` steps after WARMUP, the breakdown of `profile_steps` more steps)."""
    task, optimizer = _training(model)
    clock = StepClock(device)
    Trainer(task, optimizer, epochs=1, device=str(device), precision=precision, callbacks=[clock]).fit(
        SyntheticLoader(batch, WARMUP + steps))
    rate = len(batch) * steps / (clock.times[-1] - clock.times[WARMUP])
    trainer = Trainer(task, optimizer, epochs=1, device=str(device), precision=precision)
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # kineto's log: no "ERROR ... gpuGetDeviceCount" on a CPU
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        start = _now(device)
        trainer.fit(SyntheticLoader(batch, profile_steps))
        wall = _now(device) - start
    return rate, breakdown(prof.events(), wall, profile_steps, cuda=device.type == "cuda")


def inference_model(model: nn.Module, precision: str, device: torch.device) -> tuple[nn.Module, Precision, bool]:
    """(the model as predict runs it, its Precision, whether batch norm was folded): cnnkit.engine.inference's
    for_inference (a folded copy in eval mode, in the precision's memory format) where that module exists, else
    the model in eval mode in the precision's memory format."""
    try:
        from cnnkit.engine.inference import for_inference
    except ImportError:
        chosen = Precision.resolve(precision, device)
        return chosen.prepare(model.eval().to(device)), chosen, False
    folded, chosen = for_inference(model, precision, device)
    return folded, chosen, True


def measure_inference(model: nn.Module, batch: Batch, steps: int, precision: str,
                      device: torch.device) -> tuple[float, bool]:
    """(inference images/s over `steps` batches after WARMUP, whether batch norm was folded)."""
    model, chosen, folded = inference_model(model, precision, device)
    task = make_task("multiclass", model)
    with torch.inference_mode(), chosen.autocast():
        for i in range(WARMUP + steps):
            if i == WARMUP:
                start = _now(device)
            task.predict_step(chosen.input(batch.images.to(device))).float().cpu()
        seconds = _now(device) - start
    return len(batch) * steps / seconds, folded


# ---------------------------------------------------------------- the verb

def _device(name: str | None) -> torch.device:
    try:
        device = resolve_device(name, DistInfo())
    except RuntimeError:
        raise CnnkitError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CnnkitError(f"--device {name} asks for a GPU, but torch sees none; use cpu or auto")
    return device


def _check(batch_size: int, steps: int, profile_steps: int) -> None:
    for what, n in (("batch size", batch_size), ("steps", steps), ("profile steps", profile_steps)):
        if not isinstance(n, int) or n < 1:
            raise CnnkitError(f"the {what} must be a positive integer, got {n!r}")


def bench(target: str | Path, *, input_size: str | tuple | None = None, batch_size: int = 32, steps: int = 10,
          device: str | None = "auto", threads: int | None = None, remeasure: bool = False,
          peak_seconds: float = SECONDS, profile_steps: int = PROFILE_STEPS) -> dict:
    """Measure `target` (a zoo name, named weights or a run folder) with `threads` CPU threads (None: torch's):
    see the module docstring. Returns {"model", "input", "batch_size", "steps", "device", "threads",
    "precision" (what auto is), "train" and "infer" ({"fp32": images/s, "auto": images/s}), "flops" (per image),
    "peak" ({precision: {"gemm", "conv"}} GFLOP/s), "mfu" ({"train": {"fp32", "auto"}, "infer": {...}}),
    "breakdown" ({"fp32" | "auto": {"step_ms", category: ms per step}}), "bn_folded"}."""
    _check(batch_size, steps, profile_steps)
    where = _device(device)
    model, label, size = open_subject(target, input_size)
    with num_threads(threads):
        classes, forward = probe(model, size, label)
        auto = Precision.resolve("auto", where).name
        peaks = measured_peaks(["fp32", auto], where, remeasure=remeasure, seconds=peak_seconds)
        result = {"model": label, "input": list(size), "batch_size": batch_size, "steps": steps,
                  "device": str(where), "threads": torch.get_num_threads(), "precision": auto, "train": {},
                  "infer": {}, "flops": {"forward_per_image": forward,
                                         "train_per_image": TRAIN_FLOPS_PER_FORWARD * forward},
                  "peak": peaks, "mfu": {"train": {}, "infer": {}}, "breakdown": {}}
        _measure(result, model, synthetic_batch(size, batch_size, classes), where, profile_steps)
    return result


def _measure(result: dict, model: nn.Module, batch: Batch, device: torch.device, profile_steps: int) -> None:
    """Fill `result`'s train, infer, mfu, breakdown and bn_folded, fp32 then auto (once where auto is fp32)."""
    measured: dict[str, tuple] = {}
    forward, steps = result["flops"]["forward_per_image"], result["steps"]
    for key, name in (("fp32", "fp32"), ("auto", result["precision"])):
        if name not in measured:
            train, profiled = measure_training(copy.deepcopy(model), batch, steps, name, device, profile_steps)
            infer, folded = measure_inference(copy.deepcopy(model), batch, steps, name, device)
            measured[name] = train, profiled, infer, folded
        train, result["breakdown"][key], infer, result["bn_folded"] = measured[name]
        result["train"][key], result["infer"][key] = train, infer
        peak = peak_gflops(result["peak"][name]) * 1e9
        result["mfu"]["train"][key] = TRAIN_FLOPS_PER_FORWARD * forward * train / peak
        result["mfu"]["infer"][key] = forward * infer / peak


# ---------------------------------------------------------------- printing

def format_bench(result: dict) -> str:
    """The result as a table: images/s and MFU per mode and precision, the peak, the breakdown per step."""
    c, h, w = result["input"]
    threads = f"{result['threads']} thread" + "s" * (result["threads"] != 1)
    steps = f"{result['steps']} timed step" + "s" * (result["steps"] != 1)
    lines = [f"{result['model']} at {c}x{h}x{w}, batch {result['batch_size']}, {steps} on {result['device']}, "
             f"{threads} (auto = {result['precision']})", "",
             f"{'':12}{'images/s':>10}{'MFU':>8}"]
    for mode in ("train", "infer"):
        for key in ("fp32", "auto"):
            lines.append(f"{mode + ' ' + key:12}{result[mode][key]:10.1f}{result['mfu'][mode][key]:8.1%}")
    peaks = "; ".join(f"{p} GEMM {v['gemm']:.0f}, conv {v['conv']:.0f}" for p, v in result["peak"].items())
    lines += [f"peak GFLOP/s: {peaks}",
              f"forward {result['flops']['forward_per_image'] / 1e9:.3g} GFLOPs per image (a training step: 3×)",
              "", "where a training step goes (ms per step, under the profiler; rest: Python between ops)",
              f"{'':6}" + "".join(f"{n:>12}" for n in ("step", *CATEGORIES, "rest"))]
    for key, row in result["breakdown"].items():
        rest = row["step_ms"] - sum(row[cat] for cat in CATEGORIES)
        lines.append(f"{key:6}" + "".join(f"{row[n]:12.1f}" for n in ("step_ms", *CATEGORIES)) + f"{rest:12.1f}")
    return "\n".join(lines)
