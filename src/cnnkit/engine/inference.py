"""Fast inference: the model with its batch norms folded into the convolutions, on its device, in the chosen
precision (cnnkit.engine.precision) and memory format. predict, evaluate, test, embed and diagnose run so.

    model, precision = for_inference(model, "auto", device="auto")   # bf16 + channels_last where it pays
    with torch.inference_mode(), precision.autocast():
        logits = model(precision.input(images.to(precision.device))).float()

A BatchNorm2d in eval mode is a fixed affine map per channel, so a Conv2d whose output only it reads can absorb
it: W' = W·γ/√(σ²+ε), b' = (b − μ)·γ/√(σ²+ε) + β (torch.nn.utils.fusion.fuse_conv_bn_eval). The fused conv takes
the conv's place and the BatchNorm2d becomes nn.Identity, so the model keeps its class, its methods and its
module names, and every module's output is what it was except the conv's own (now after the BN). The pairs are
found by torch.fx tracing (any wiring: ResNet's attributes, EfficientNet's blocks); a model fx cannot trace
(torchvision's detectors, control flow on values) falls back to consecutive Conv2d, BatchNorm2d children of
nn.Sequential containers. Subclasses (timm's BatchNormAct2d, FrozenBatchNorm2d, weight-standardised convs),
modules with hooks or parametrisations, and shared modules are left alone.
"""
from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from cnnkit.engine.distributed import DistInfo, resolve_device
from cnnkit.engine.precision import Precision

__all__ = ["fold_batch_norm", "folded_pairs", "for_inference", "fp32_outputs"]

FOLDED = "_cnnkit_folded"  # set on a folded copy: the `keep` it was folded with


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    """A plain Conv2d and a plain BatchNorm2d with running statistics, neither hooked nor parametrised."""
    if type(conv) is not nn.Conv2d or type(bn) is not nn.BatchNorm2d or bn.running_mean is None:
        return False
    hooked = any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "parametrizations") for m in (conv, bn))
    return not hooked


def _fx_pairs(model: nn.Module) -> list[tuple[str, str]] | None:
    """(conv name, bn name) of every BatchNorm2d call whose only input is a conv call read by nothing else;
    None when fx cannot trace the model. A shallow copy is traced (its modules copied, its tensors shared): a
    forward that sets attributes (torchvision's MultiScaleRoIAlign) would otherwise keep fx's proxies."""
    shared = {id(t): t for t in (*model.parameters(), *model.buffers())}
    try:
        graph = fx.symbolic_trace(copy.deepcopy(model, shared)).graph
    except Exception:  # noqa: BLE001  (fx fails in many ways: data-dependent control flow, custom types ...)
        return None
    modules = dict(model.named_modules())
    calls = Counter(n.target for n in graph.nodes if n.op == "call_module")
    pairs = []
    for node in graph.nodes:
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        source = node.args[0]
        if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
            continue
        if calls[node.target] == 1 and calls[source.target] == 1:
            pairs.append((str(source.target), str(node.target)))
    return [(c, b) for c, b in pairs if _foldable(modules[c], modules[b])]


def _sequential_pairs(module: nn.Module) -> list[tuple[str, str]]:
    """(conv name, bn name) of consecutive Conv2d, BatchNorm2d children of `module` when it is an nn.Sequential
    that runs its children in order (nn.Sequential's own forward)."""
    if not isinstance(module, nn.Sequential) or type(module).forward is not nn.Sequential.forward:
        return []
    children = list(module.named_children())
    return [(a, b) for (a, conv), (b, bn) in zip(children, children[1:]) if _foldable(conv, bn)]


def _find_pairs(module: nn.Module, prefix: str = "") -> list[tuple[str, str]]:
    """fx's pairs of `module` when it traces; else the nn.Sequential pairs among its children and, recursively,
    the pairs of each child (a traceable backbone inside an untraceable detector is traced on its own)."""
    if not any(type(m) is nn.BatchNorm2d for m in module.modules()):
        return []
    pairs = _fx_pairs(module)
    if pairs is None:
        pairs = _sequential_pairs(module)
        for name, child in module.named_children():
            pairs += [(f"{name}.{c}", f"{name}.{b}") for c, b in _find_pairs(child)]
    return [(prefix + c, prefix + b) for c, b in pairs]


def folded_pairs(model: nn.Module) -> list[tuple[str, str]]:
    """The (conv, batch norm) module names fold_batch_norm fuses in `model`: fx's when it traces, else those of
    the nn.Sequential walk and of its traceable parts; a module used at more than one place is left out."""
    was_training = model.training
    model.eval()
    try:
        pairs = _find_pairs(model)
    finally:
        model.train(was_training)
    uses = Counter(id(m) for _, m in model.named_modules(remove_duplicate=False))
    get = model.get_submodule
    return [(c, b) for c, b in pairs if uses[id(get(c))] == 1 and uses[id(get(b))] == 1]


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)


def fold_batch_norm(model: nn.Module, keep: Iterable[str] = ()) -> nn.Module:
    """A copy of `model` in eval mode with each Conv2d → BatchNorm2d pair fused into one Conv2d and the
    BatchNorm2d replaced by nn.Identity (see the module docstring); `model` itself is left as it was. Pairs
    naming a module in `keep` stay unfused (e.g. a layer whose output is read by a hook), and so do the pairs
    inside the submodules the model names in its `unfolded` attribute (R-CNN's frozen backbone, whose features
    are cached on disk under a hash of its weights: folded weights would miss that cache). A model this
    function made (with the same `keep`) is returned as it is: there is nothing left to fold."""
    keep = frozenset(keep)
    if getattr(model, FOLDED, None) == keep:  # already folded so (a server folds once, then predicts per batch)
        return model.eval()
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, even when called in inference mode
        folded = copy.deepcopy(model).eval()
        kept = tuple(f"{name}." for name in getattr(model, "unfolded", ()))  # e.g. a backbone whose outputs are cached
        for conv_name, bn_name in folded_pairs(folded):
            if conv_name in keep or bn_name in keep or conv_name.startswith(kept):
                continue
            fused = fuse_conv_bn_eval(folded.get_submodule(conv_name), folded.get_submodule(bn_name))
            _replace(folded, conv_name, fused)
            _replace(folded, bn_name, nn.Identity())
    setattr(folded, FOLDED, keep)
    return folded


def for_inference(model: nn.Module, precision: str = "auto", device: str | torch.device | None = "auto",
                  keep: Iterable[str] = ()) -> tuple[nn.Module, Precision]:
    """(`model` folded (a copy, in eval mode), on `device` ('auto': the GPU when there is one), in the memory
    format of the precision; the resolved Precision). Run it under `precision.autocast()` with inputs through
    `precision.input(...)`, and read its outputs as fp32 (fp32_outputs)."""
    device = resolve_device(device if isinstance(device, str) or device is None else str(device), DistInfo())
    resolved = Precision.resolve(precision, device)
    folded = fold_batch_norm(model, keep).to(device)
    return resolved.prepare(folded), resolved


def fp32_outputs(outputs):
    """Model outputs (a tensor, or lists/tuples/dicts of them) with every reduced-precision float tensor as fp32."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float() if outputs.is_floating_point() else outputs
    if isinstance(outputs, dict):
        return {k: fp32_outputs(v) for k, v in outputs.items()}
    if isinstance(outputs, tuple) and hasattr(outputs, "_fields"):  # a named tuple
        return type(outputs)(*(fp32_outputs(v) for v in outputs))
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(fp32_outputs(v) for v in outputs)
    return outputs
