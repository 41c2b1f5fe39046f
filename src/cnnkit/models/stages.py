"""A registry model seen as stages: top-level children in forward order, grouped (stem, stage 1, ...), the head
(ModelSpec.head) left out; its last linear layers; the first k stages as a smaller network (PartialNet); the
input of a layer captured (pooled features). Transfer strategies (cnnkit.engine.transfer), the detectors' and
segmenters' backbones and `cnnkit embed` read models through these."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.registry import ModelSpec

_POOLS = (nn.MaxPool2d, nn.AvgPool2d)
# model class → its stages, where definition order is not forward order (LeNet-5 defines its activations last)
_STAGE_OVERRIDES: dict[str, list[list[str]]] = {
    "LeNet5": [["c1", "act1", "s2"], ["c3", "act3", "s4"], ["c5", "act5"], ["f6", "act6", "dropout"]],
}


def _heads(spec: ModelSpec) -> tuple[str, ...]:
    return (spec.head,) if isinstance(spec.head, str) else tuple(spec.head)


def _is_head(path: str, heads: tuple[str, ...]) -> bool:
    """Whether module `path` is a head or holds one (e.g. VGG's `classifier` holds `classifier.6`)."""
    return any(h == path or h.startswith(path + ".") for h in heads)


def stages(model: nn.Module, spec: ModelSpec) -> list[list[str]]:
    """Module paths of each stage, in forward order, without the head. A container child (layer1, ...) starts
    a stage; leaf children (conv1, bn1, pools) join the stage before them, or the stem. A child whose children
    are all nn.Sequential (EfficientNet's `blocks`) is one stage per child; a flat nn.Sequential with several
    pooling layers (VGG's `features`) is split after each pooling layer."""
    if type(model).__name__ in _STAGE_OVERRIDES:
        return [list(s) for s in _STAGE_OVERRIDES[type(model).__name__]]
    heads, groups = _heads(spec), []
    for name, child in model.named_children():
        if _is_head(name, heads):
            continue
        inner = list(child.named_children())
        if inner and all(isinstance(m, nn.Sequential) for _, m in inner):
            groups += [[f"{name}.{n}"] for n, _ in inner]
        elif isinstance(child, nn.Sequential) and sum(isinstance(m, _POOLS) for _, m in inner) > 1:
            groups += _split_at_pools(name, inner)  # VGG's `features`: one stage per pooling layer
        elif inner or not groups:
            groups.append([name])
        else:
            groups[-1].append(name)
    return groups


def _split_at_pools(name: str, inner: list[tuple[str, nn.Module]]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    for n, m in inner:
        groups[-1].append(f"{name}.{n}")
        if isinstance(m, _POOLS):
            groups.append([])
    return [g for g in groups if g]


def parameter_names(model: nn.Module, paths: list[str]) -> list[str]:
    return [f"{p}.{n}" for p in paths for n, _ in model.get_submodule(p).named_parameters()]


def last_linears(model: nn.Module, spec: ModelSpec) -> list[str]:
    """The last nn.Linear of each head path: the FC layer(s) "head-only" replaces and linear-probe writes."""
    if isinstance(model, PartialNet):
        return ["fc"]
    found = []
    for h in _heads(spec):
        linears = [f"{h}.{n}" if n else h for n, m in model.get_submodule(h).named_modules()
                   if isinstance(m, nn.Linear)]
        if not linears:
            raise CnnkitError(f"{spec.name}'s head {h!r} has no linear layer to replace; choose another strategy")
        found.append(linears[-1])
    return found


def classifier_layers(model: nn.Module, spec: ModelSpec) -> list[str]:
    """The fully connected part: top-level children holding a head, and stages with a linear layer
    (LeNet-5's f6). "feature-extractor" replaces all of it; the rest is the convolutional base."""
    heads = _heads(spec)
    tops = [name for name, _ in model.named_children() if _is_head(name, heads)]
    fc_stages = [p for s in stages(model, spec) for p in s
                 if any(isinstance(m, nn.Linear) for m in model.get_submodule(p).modules())]
    return tops + fc_stages


class _Body(nn.Module):
    """The kept stages run in order; a linear layer gets its input flattened (LeNet-5's f6 after c5)."""

    def __init__(self, modules: OrderedDict[str, nn.Module]):
        super().__init__()
        self.layers = nn.ModuleDict(modules)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers.values():
            x = layer(x.flatten(1) if isinstance(layer, nn.Linear) and x.dim() > 2 else x)
        return x


class PartialNet(nn.Module):
    """The first k stages of a network, global average pooling and a new linear head."""

    def __init__(self, body: _Body, features: int, num_classes: int):
        super().__init__()
        self.body, self.pool, self.fc = body, nn.AdaptiveAvgPool2d(1), nn.Linear(features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, C, H, W)
        x = self.body(x)  # (N, C', H', W') or (N, F)
        return self.fc(self.pool(x).flatten(1) if x.dim() == 4 else x)  # (N, num_classes)


def truncate(model: nn.Module, spec: ModelSpec, k: int | None, input_size: tuple[int, ...]) -> PartialNet:
    """`model`'s first k stages + pooling + a new head sized by a dummy forward at `input_size` (C, H, W)."""
    all_stages = stages(model, spec)
    if k is None or not 1 <= k <= len(all_stages):
        raise CnnkitError(f"--keep-stages must be between 1 and {len(all_stages)} for {spec.name} "
                          f"(its stages: {', '.join('+'.join(s) for s in all_stages)}), got {k}")
    kept = OrderedDict((p.replace(".", "_"), model.get_submodule(p)) for s in all_stages[:k] for p in s)
    body = _Body(kept)
    was_training = body.training
    with torch.no_grad():
        out = body.eval()(torch.zeros(1, *input_size))  # (1, C', H', W') or (1, F)
    body.train(was_training)
    heads = [model.get_submodule(h) for h in last_linears(model, spec)]
    return PartialNet(body, out.shape[1], heads[0].out_features)


@contextmanager
def capture_input(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Within the block, each forward of `layer` appends its input, as (N, F) float on the CPU, to the yielded
    list: for a last linear layer, the pooled features (extract_features, cnnkit.export.embed)."""
    seen: list[torch.Tensor] = []
    hook = layer.register_forward_pre_hook(lambda m, args: seen.append(args[0].flatten(1).float().cpu()))
    try:
        yield seen
    finally:
        hook.remove()
