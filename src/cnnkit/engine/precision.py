"""The numeric precision of a run: fp32, or bf16/fp16 autocast with channels_last, chosen from the hardware.

    precision = Precision.resolve("auto", torch.device("cpu"))   # bf16 on a CPU with AMX or AVX512-BF16
    model = precision.prepare(model)                              # channels_last when it pays
    with precision.autocast():
        loss = task.training_step(batch.to(device))

`auto` is bf16 autocast with channels_last on a CPU whose oneDNN runs bf16 in hardware (AMX or AVX512-BF16)
and on a CUDA GPU that supports bf16; fp16 with a GradScaler on an older GPU; fp32 everywhere else. The CPU is
asked, never assumed (torch.cpu's feature checks). The environment variable CNNKIT_PRECISION, when set, is what
`auto` means on this machine (the test suite sets it to fp32, where tests compare exact numbers).

Autocast keeps losses, softmax and reductions in fp32 (PyTorch's autocast op lists); tasks compute their losses
and metrics from fp32 outputs.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch

from cnnkit.config import PRECISIONS
from cnnkit.errors import CnnkitError, unknown_name

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
ENV = "CNNKIT_PRECISION"


def cpu_bf16() -> bool:
    """True when this CPU computes bf16 in hardware: AMX tiles or AVX512-BF16 (what oneDNN uses for bf16)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # an older torch without the checks: read the flags
        return cpu_flags_bf16()


def cpu_flags_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """The same question from /proc/cpuinfo's flags (Linux): amx_bf16 or avx512_bf16."""
    try:
        with open(cpuinfo) as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def is_depthwise(module: torch.nn.Module) -> bool:
    """A Conv2d with one group per input channel (MobileNet's and EfficientNet's depthwise convolutions)."""
    return isinstance(module, torch.nn.Conv2d) and module.groups > 1 and module.groups == module.in_channels


def _fp32_conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """`conv` in fp32 outside autocast when a backward will follow (its output goes on in fp32; the next autocast
    op casts it back); without gradients (inference) the bf16 forward is the faster one, 2.2x here."""
    forward = type(conv).forward  # the class's own forward: e.g. TF "same" padding
    if not (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad)):
        return forward(conv, x)
    with torch.autocast(x.device.type, enabled=False):
        return forward(conv, x.float())


def _as_fp32(value):
    """Floating tensors (in lists, tuples and dicts too) as fp32; everything else as it is."""
    if isinstance(value, torch.Tensor):
        return value.float() if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _as_fp32(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
        return type(value)(_as_fp32(v) for v in value)
    return value


def _fp32_forward(module: torch.nn.Module, *args, **kwargs):
    """`module`'s own forward in fp32, outside autocast, on fp32 copies of its floating inputs."""
    device = next(module.parameters(), torch.empty(0)).device.type
    with torch.autocast(device, enabled=False):
        return type(module).forward(module, *_as_fp32(args), **_as_fp32(kwargs))


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise unknown_name("--precision", name, PRECISIONS)
    return name


def resolve(name: str, device: torch.device | str, amp: bool = False) -> str:
    """'fp32', 'bf16' or 'fp16': what `name` means on `device` (see the module docstring). `amp` (--amp, the
    older flag, an alias) asks for mixed precision even where `auto` would keep fp32: bf16 on any CPU."""
    device = torch.device(device)
    check_precision(name)
    if name == "auto" and amp and device.type != "cuda":
        name = "bf16"
    if name == "auto":
        forced = os.environ.get(ENV)
        if forced:
            if forced not in PRECISIONS[1:]:
                raise CnnkitError(f"{ENV}={forced!r} is not a precision; set it to fp32, bf16 or fp16, or unset it")
            name = forced
        elif device.type == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        elif device.type == "cpu" and cpu_bf16():
            name = "bf16"
        else:
            name = "fp32"
    if name == "fp16" and device.type == "cpu":
        raise CnnkitError("--precision fp16 needs a CUDA GPU (the CPU has no fast fp16 training); use bf16 or auto")
    return name


@dataclass(frozen=True)
class Precision:
    """A resolved precision on a device: the autocast dtype, whether the model runs channels_last, and whether
    the loss needs a GradScaler (fp16)."""

    name: str  # fp32 | bf16 | fp16
    device: torch.device

    @classmethod
    def resolve(cls, name: str, device: torch.device | str, amp: bool = False) -> Precision:
        return cls(resolve(name, device, amp), torch.device(device))

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.name]

    @property
    def channels_last(self) -> bool:
        """NHWC activations: what oneDNN's bf16 kernels and tensor cores want; plain NCHW for fp32 on a CPU."""
        return self.name != "fp32" or self.device.type == "cuda"

    @property
    def scaled(self) -> bool:
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model in this precision's memory format (in place; the weights stay fp32 for the optimiser). The
        submodules a model names in its `fp32_modules` (a detector's box heads: their coordinates need more than
        bf16's 8 bits) run in fp32 outside autocast, on fp32 copies of their inputs. On a CPU in bf16, depthwise
        convolutions that will get a backward run in fp32 (channels_last): oneDNN's bf16 depthwise backward is
        slower than its fp32 one (an EfficientNet-Lite0 step 2.1x fp32 against 1.4x, docs/benchmarks.md §14);
        their inference forward stays bf16, which is faster."""
        if self.channels_last:
            model.to(memory_format=torch.channels_last)
        if self.name != "fp32":
            for name in getattr(model, "fp32_modules", ()):
                module = model.get_submodule(name)
                if not isinstance(module.forward, functools.partial):
                    module.forward = functools.partial(_fp32_forward, module)
        if self.name == "bf16" and self.device.type == "cpu":
            for module in model.modules():
                if is_depthwise(module) and not isinstance(module.forward, functools.partial):
                    module.forward = functools.partial(_fp32_conv, module)  # an instance attribute: the state
                    #                                                         dict and the module tree stay as they are
        return model

    def input(self, images: torch.Tensor) -> torch.Tensor:
        """A (N, C, H, W) batch in the model's memory format."""
        if self.channels_last and images.dim() == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images
