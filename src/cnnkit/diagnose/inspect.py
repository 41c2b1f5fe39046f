"""Look inside a model: per-layer shapes, parameters, FLOPs and receptive fields (pictures: diagnose/pictures.py).

One forward pass of one image, with a forward hook on every leaf module (a module without children) and
torch.utils.flop_counter.FlopCounterMode around it, gives for each layer, in the order the forward runs it:
its output shape, its parameters, its FLOPs, its receptive field and the output size the formula
out = floor((in + 2p - d(k-1) - 1) / s) + 1 predicts (flagged when the forward disagrees).

Conventions:
- FLOPs are FlopCounterMode's: 2 × multiply-adds of convolutions and matrix products; bias additions,
  normalisation, activations and pooling count 0.
- Depth is the longest chain of weight layers (Conv*/Linear modules) from the input to the output, so the
  projection shortcuts of a ResNet do not add to it (ResNet-18 → 18) and a separable convolution counts 2.
- Size in MB is float32 parameter bytes / 2**20 (MiB), buffers (batch-norm statistics) excluded.
"""
from __future__ import annotations

import inspect as pyinspect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec
from cnnkit.models.registry import ModelSpec

_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
             nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
RF_CAVEAT = ("receptive field and depth follow the tensors between layers; a tensor made outside a layer "
             "(a residual sum, a concatenation) takes the largest values among the layer outputs of its spatial "
             "size so far: exact for residual, Inception and dense blocks, an upper bound in general")


# ---------------------------------------------------------------- formulas

def parse_input_size(text: str | Sequence[int]) -> tuple[int, int, int]:
    """'3x224x224' or (3, 224, 224) → (3, 224, 224); anything else is a CnnkitError."""
    parts = text.lower().split("x") if isinstance(text, str) else list(text)
    try:
        size = tuple(int(p) for p in parts)
    except (TypeError, ValueError):
        size = ()
    if len(size) != 3 or min(size) < 1:
        raise CnnkitError(f"expected CxHxW like 3x224x224, got {text!r}")
    return size  # type: ignore[return-value]


def conv_output_size(size: int, kernel: int, stride: int = 1, padding: int = 0, dilation: int = 1,
                     ceil_mode: bool = False) -> int:
    """out = floor((in + 2p - d(k-1) - 1) / s) + 1, i.e. floor((in + 2p - k) / s) + 1 when d = 1.

    With ceil_mode (pooling) the division rounds up, but the last window must start inside the input or
    its left padding, as PyTorch does.
    """
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1
    return out


def connection_params(c_in: int, h: int, w: int, c_out: int, h_out: int, w_out: int, kh: int, kw: int,
                      groups: int = 1) -> dict[str, int]:
    """Weights + biases a layer mapping (c_in, h, w) to (c_out, h_out, w_out) needs when it is:

    - fully connected: every output unit sees every input value, (c_in·h·w + 1)·c_out·h_out·w_out;
    - locally connected: every output unit sees its own kh×kw window, no sharing,
      (c_in/groups·kh·kw + 1)·c_out·h_out·w_out;
    - a convolution: the window's weights are shared over positions, (c_in/groups·kh·kw + 1)·c_out.

    One bias per output unit (per output channel for the convolution), whether or not the layer has one.
    For one M×M image mapped to M×M units with N×N windows: M²(M²+1), (N²+1)M² and N²+1.
    """
    units = c_out * h_out * w_out
    window = c_in // groups * kh * kw
    return {"fully_connected": (c_in * h * w + 1) * units, "locally_connected": (window + 1) * units,
            "convolution": (window + 1) * c_out}


def _tuple(value, n: int) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * n


def _geometry(module: nn.Module, spatial_in: Sequence[int], spatial_out: Sequence[int]) -> tuple | None:
    """(kernel, stride, dilation) per spatial axis of a convolution or pooling layer, else None."""
    n = len(spatial_in)
    if isinstance(module, nn.modules.conv._ConvNd) and not module.transposed:
        return _tuple(module.kernel_size, n), _tuple(module.stride, n), _tuple(module.dilation, n)
    if isinstance(module, _POOLS):
        dilation = getattr(module, "dilation", 1)
        return _tuple(module.kernel_size, n), _tuple(module.stride or module.kernel_size, n), _tuple(dilation, n)
    if isinstance(module, _ADAPTIVE) and all(o > 0 and i % o == 0 for i, o in zip(spatial_in, spatial_out)):
        k = tuple(i // o for i, o in zip(spatial_in, spatial_out))  # an even split is a plain pooling
        return k, k, (1,) * n
    return None


def formula_size(module: nn.Module, spatial_in: Sequence[int]) -> list[int] | None:
    """The output size the textbook formula gives for a convolution or pooling layer, else None."""
    n = len(spatial_in)
    if isinstance(module, nn.modules.conv._ConvNd):
        k, s, d = _tuple(module.kernel_size, n), _tuple(module.stride, n), _tuple(module.dilation, n)
        if module.transposed:
            p, op = _tuple(module.padding, n), _tuple(module.output_padding, n)
            return [(i - 1) * s[a] - 2 * p[a] + d[a] * (k[a] - 1) + op[a] + 1 for a, i in enumerate(spatial_in)]
        if module.padding == "same":
            return list(spatial_in)
        p = (0,) * n if module.padding == "valid" else _tuple(module.padding, n)
        return [conv_output_size(i, k[a], s[a], p[a], d[a]) for a, i in enumerate(spatial_in)]
    if isinstance(module, _POOLS):
        k = _tuple(module.kernel_size, n)
        s, p = _tuple(module.stride or module.kernel_size, n), _tuple(module.padding, n)
        d = _tuple(getattr(module, "dilation", 1), n)
        return [conv_output_size(i, k[a], s[a], p[a], d[a], module.ceil_mode) for a, i in enumerate(spatial_in)]
    if isinstance(module, _ADAPTIVE):
        return [i if o is None else o for i, o in zip(spatial_in, _tuple(module.output_size, n))]
    return None


def is_weight_layer(module: nn.Module) -> bool:
    """A Conv*/ConvTranspose*/Linear module with a weight: what depth counts."""
    return isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)) and getattr(module, "weight", None) is not None


# ---------------------------------------------------------------- tracing one forward pass

@dataclass(frozen=True)
class Flow:
    """What reaches a tensor from the input: receptive field and jump per spatial axis (None when
    unknown), and the number of weight layers on the longest path."""

    rf: tuple[int, ...] | None
    jump: tuple[int, ...] | None
    depth: int


def first_tensor(value) -> torch.Tensor | None:
    if isinstance(value, torch.Tensor):
        return value
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (tuple, list)) else ()
    return next((t for t in (first_tensor(v) for v in items) if t is not None), None)


def _step(module: nn.Module, flow: Flow, x: torch.Tensor | None, y: torch.Tensor | None) -> Flow:
    """The flow after `module` maps x to y."""
    depth = flow.depth + is_weight_layer(module)
    if x is None or y is None or flow.rf is None or x.ndim != y.ndim:
        return Flow(None, None, depth)
    geometry = _geometry(module, x.shape[2:], y.shape[2:]) if x.ndim > 2 else None
    if geometry is not None and len(flow.rf) == x.ndim - 2:
        k, s, d = geometry
        rf = tuple(r + (kk - 1) * dd * j for r, kk, dd, j in zip(flow.rf, k, d, flow.jump))
        return Flow(rf, tuple(j * ss for j, ss in zip(flow.jump, s)), depth)
    if x.shape[2:] == y.shape[2:]:
        return Flow(flow.rf, flow.jump, depth)
    return Flow(None, None, depth)  # upsampling, transposed convolution, ...: not followed


def _wider(a: Flow, b: Flow) -> Flow:
    """The larger receptive field (unknown wins: it may be anything) and the longer path of two flows."""
    depth = max(a.depth, b.depth)
    if a.rf is None or b.rf is None:
        return Flow(None, None, depth)
    wide = a if math.prod(a.rf) >= math.prod(b.rf) else b
    return Flow(wide.rf, wide.jump, depth)


class _Tracer:
    """Forward hooks on every leaf module: one row per module (first call), and the flow of each tensor."""

    def __init__(self, model: nn.Module):
        self.rows: dict[str, dict] = {}
        self.flows: dict[int, tuple[torch.Tensor, Flow]] = {}  # id → (tensor kept alive, flow)
        self.widest: dict[tuple, Flow] = {}  # (ndim, spatial size) → the largest flow among layer outputs
        self.last: Flow | None = None
        self.guessed = False
        leaves = [(n, m) for n, m in model.named_modules() if n and next(m.children(), None) is None]
        self.handles = [m.register_forward_hook(self._hook(n)) for n, m in leaves]

    def remember(self, t: torch.Tensor, flow: Flow) -> None:
        self.flows[id(t)] = (t, flow)
        self.last = flow
        key = (t.ndim, tuple(t.shape[2:]))
        self.widest[key] = _wider(self.widest[key], flow) if key in self.widest else flow

    def flow_of(self, t: torch.Tensor) -> Flow:
        known = self.flows.get(id(t))
        if known is not None and known[0] is t:
            return known[1]
        guess = self._guess(t)
        self.guessed |= guess != self.last  # a branch merged: not simply the previous layer's output
        self.flows[id(t)] = (t, guess)  # the next branch that reads t gets the same flow
        return guess

    def _guess(self, t: torch.Tensor) -> Flow:
        """For a tensor made outside a layer: the largest flow among the layer outputs of its size."""
        return self.widest.get((t.ndim, tuple(t.shape[2:])), self.last)

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, output) -> None:
            x = next((a for a in args if isinstance(a, torch.Tensor)), None)
            y = first_tensor(output)
            flow = _step(module, self.flow_of(x) if x is not None else self.last, x, y)
            if y is not None:
                self.remember(y, flow)
            if name in self.rows:
                self.rows[name]["calls"] += 1
            else:
                self.rows[name] = _row(name, module, x, y, flow)
        return hook

    def close(self) -> None:
        for h in self.handles:
            h.remove()
        self.flows.clear()


def _row(name: str, module: nn.Module, x: torch.Tensor | None, y: torch.Tensor | None, flow: Flow) -> dict:
    spatial = y is not None and y.ndim > 2
    row = {"name": name, "type": type(module).__name__,
           "input_shape": list(x.shape) if x is not None else None,
           "output_shape": list(y.shape) if y is not None else None,
           "params": sum(p.numel() for p in module.parameters()), "flops": 0, "calls": 1,
           "receptive_field": list(flow.rf) if spatial and flow.rf else None,
           "jump": list(flow.jump) if spatial and flow.jump else None, "depth": flow.depth}
    expected = formula_size(module, x.shape[2:]) if x is not None and y is not None and x.ndim > 2 else None
    if expected is not None:
        row["formula_size"], row["size_ok"] = expected, expected == list(y.shape[2:])
    if isinstance(module, nn.Conv2d) and y is not None and y.ndim == 4:
        (c, h, w), (co, ho, wo) = x.shape[1:], y.shape[1:]
        row["connections"] = connection_params(c, h, w, co, ho, wo, *module.kernel_size, groups=module.groups)
    return row


@dataclass
class Trace:
    """The result of one traced forward: rows in forward order, and the totals."""

    rows: list[dict]
    total_flops: int
    depth: int
    guessed: bool  # some flow was inferred for a tensor made outside a layer (see RF_CAVEAT)


def trace_model(model: nn.Module, input_size: Sequence[int], *, label: str = "the model") -> Trace:
    """Run one zero image of `input_size` (C, H, W) through `model` in eval mode, on the model's device
    (the meta device works: shapes and FLOPs without arithmetic); the model's mode is restored after."""
    param = next(model.parameters(), None)
    x = torch.zeros(1, *input_size, device=param.device if param is not None else "cpu")
    tracer, was_training = _Tracer(model), model.training
    tracer.remember(x, Flow((1,) * (x.ndim - 2), (1,) * (x.ndim - 2), 0))
    try:
        with FlopCounterMode(display=False) as counter, torch.inference_mode():
            model.eval()(x)
    except (RuntimeError, ValueError, IndexError, TypeError, AssertionError) as err:
        raise _input_error(input_size, label, err) from None
    finally:
        tracer.close()
        model.train(was_training)
    counts = counter.get_flop_counts()
    root = type(model).__name__  # FlopCounterMode names modules '<root class>.<path>'
    for name, row in tracer.rows.items():
        row["flops"] = int(sum(counts.get(f"{root}.{name}", {}).values()))
    rows = list(tracer.rows.values())
    depth = max((r["depth"] for r in rows), default=0)
    return Trace(rows, int(counter.get_total_flops()), depth, tracer.guessed)


def _input_error(input_size: Sequence[int], label: str, err: Exception) -> CnnkitError:
    shape = "x".join(map(str, input_size))
    reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
    small = "too small" in reason.lower() or "greater than actual input size" in reason
    verb = "is too small for" if small else "does not fit"
    return CnnkitError(f"input {shape} {verb} {label}: {reason}")


# ---------------------------------------------------------------- models by name or run folder

def default_num_classes(spec: ModelSpec) -> int:
    """The class count the architecture's factory defaults to (LeNet-5: 10), else 1000."""
    param = pyinspect.signature(spec.fn).parameters.get("num_classes")
    default = param.default if param is not None else None
    return default if isinstance(default, int) else 1000


def resolve(target: str | Path | nn.Module, input_size=None, num_classes: int | None = None):
    """(model, label, (C, H, W), card, run folder) from a model name (registered or 'tv/...'), a run folder
    (a folder with model.pt or model.safetensors) or a module; card and run folder are None unless it is a run."""
    from cnnkit.runs.folder import find_model_file, load_model

    if isinstance(target, nn.Module):
        if input_size is None:
            raise CnnkitError("pass input_size (C, H, W) with a module")
        return target, type(target).__name__, parse_input_size(input_size), None, None
    name, folder = str(target), Path(target)
    if find_model_file(folder) is None:
        try:
            spec = get_spec(name)
        except CnnkitError:
            if not folder.is_dir():
                raise  # unknown model, with did-you-mean
        else:
            size = parse_input_size(input_size) if input_size is not None else spec.input_size
            model = create_model(name, num_classes=num_classes or default_num_classes(spec), in_channels=size[0],
                                 input_size=size)
            return model.eval(), name, size, None, None
    model, card = load_model(folder)  # a folder without model.pt: the run-folder error says so
    size = parse_input_size(input_size) if input_size is not None else tuple(card.input_size)
    return model, f"{card.architecture} ({name})", size, card, folder


# ---------------------------------------------------------------- the report

def inspect_model(target: str | Path | nn.Module, input_size: str | Sequence[int] | None = None, *,
                  num_classes: int | None = None, top: int = 5) -> dict:
    """Per-layer anatomy of a model name, run folder or module at `input_size` (default: the model's).

    Returns {"model", "input_size", "layers": [{"name", "type", "input_shape", "output_shape", "params",
    "flops", "calls", "receptive_field", "jump", "depth", "formula_size"?, "size_ok"?, "connections"?}],
    "total_params", "total_flops", "unattributed_flops", "gflops", "depth", "size_mb", "receptive_field",
    "jump", "size_mismatches", "top_params", "notes"}. Shapes include the batch of 1.
    """
    model, label, size, _, _ = resolve(target, input_size, num_classes)
    trace = trace_model(model, size, label=label)
    rows = trace.rows
    total_params = sum(p.numel() for p in model.parameters())
    spatial = [r for r in rows if r["receptive_field"] and r.get("formula_size") is not None
               and not r["type"].startswith("Adaptive")]  # global pooling would add the whole map
    notes = [RF_CAVEAT] if trace.guessed else []
    outside = total_params - sum(r["params"] for r in rows)
    if outside:
        notes.append(f"{outside:,} parameters sit outside the layers run (unused or non-leaf modules)")
    top_rows = sorted((r for r in rows if r["params"]), key=lambda r: -r["params"])[:top]
    return {
        "model": label, "input_size": list(size), "layers": rows,
        "total_params": total_params, "total_flops": trace.total_flops,
        "unattributed_flops": trace.total_flops - sum(r["flops"] for r in rows),
        "gflops": trace.total_flops / 1e9, "depth": trace.depth, "size_mb": total_params * 4 / 2**20,
        "receptive_field": spatial[-1]["receptive_field"] if spatial else None,
        "jump": spatial[-1]["jump"] if spatial else None,
        "size_mismatches": [r["name"] for r in rows if r.get("size_ok") is False],
        "top_params": [{"name": r["name"], "type": r["type"], "params": r["params"],
                        "share": r["params"] / max(total_params, 1)} for r in top_rows],
        "notes": notes,
    }


def human(n: float) -> str:
    """173412864 → '173.4M'."""
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.1f}{unit}"
    return f"{n:g}"


def _pair(v: list[int] | None) -> str:
    return "-" if not v else str(v[0]) if len(set(v)) == 1 else "x".join(map(str, v))


def _shape(s: list[int] | None) -> str:
    return "-" if s is None else "x".join(map(str, s[1:])) or "scalar"


def _check(r: dict) -> str:
    if "size_ok" not in r:
        return ""
    return "ok" if r["size_ok"] else f"MISMATCH: formula {_pair(r['formula_size'])}"


def format_report(report: dict) -> str:
    """The report as text: the layer table, totals, the biggest layers, and the connection comparison."""
    rows = report["layers"]
    width = max([len(r["name"]) for r in rows] + [5])
    lines = [f"{report['model']} at {_shape([1, *report['input_size']])} (one image)",
             f"{'layer':<{width}}  {'type':<18} {'output':<14} {'params':>12} {'FLOPs':>8} {'RF/jump':>9}  formula"]
    for r in rows:
        rf = f"{_pair(r['receptive_field'])}/{_pair(r['jump'])}" if r["receptive_field"] else "-"
        lines.append(f"{r['name']:<{width}}  {r['type'][:18]:<18} {_shape(r['output_shape']):<14} "
                     f"{r['params']:>12,} {human(r['flops']):>8} {rf:>9}  {_check(r)}")
    lines += ["", f"total: {report['total_params']:,} parameters ({report['size_mb']:.1f} MB float32, "
              f"MB = 2**20 bytes), {report['gflops']:.3f} GFLOPs (2 x multiply-adds of convolutions and matmuls), "
              f"depth {report['depth']} weight layers, receptive field {_pair(report['receptive_field'])} "
              f"(jump {_pair(report['jump'])})"]
    if report["unattributed_flops"]:
        lines.append(f"FLOPs outside the listed layers: {human(report['unattributed_flops'])}")
    checked = sum("size_ok" in r for r in rows)
    bad = report["size_mismatches"]
    lines.append(f"output sizes: formula and forward agree on {checked - len(bad)} of {checked} conv/pool layers"
                 + (f"; MISMATCH at {', '.join(bad)}" if bad else ""))
    lines.append("most parameters: " + ", ".join(
        f"{t['name']} {t['params']:,} ({t['share']:.1%})" for t in report["top_params"]))
    lines += _connection_lines(rows, width)
    return "\n".join(lines + [f"note: {n}" for n in report["notes"]])


def _connection_lines(rows: list[dict], width: int) -> list[str]:
    convs = [r for r in rows if "connections" in r]
    if not convs:
        return []
    lines = ["", "weights + biases each Conv2d would need as a fully connected layer, (Cin·H·W + 1)·Cout·H'·W'; "
             "locally connected (its windows, no sharing), (Cin/groups·kh·kw + 1)·Cout·H'·W'; and as the "
             "convolution it is, (Cin/groups·kh·kw + 1)·Cout:",
             f"{'layer':<{width}}  {'fully connected':>18} {'locally connected':>18} {'convolution':>12}"]
    for r in convs:
        c = r["connections"]
        lines.append(f"{r['name']:<{width}}  {c['fully_connected']:>18,} {c['locally_connected']:>18,} "
                     f"{c['convolution']:>12,}")
    return lines
