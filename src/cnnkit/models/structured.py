"""Structured pruning: whole conv filters removed, the model made physically smaller (not masked).

    widths = prune_filters(model, 0.5, "l1", (3, 32, 32))  # in place; {conv path: filters kept}
    fresh = create_model(...); shrink(fresh, widths, (3, 32, 32)); fresh.load_state_dict(state)

A *group* is one conv whose filters can go, the BatchNorm2d layers that normalise its channels and the layers
that read them (a conv's input channels, or a Linear's input features after a channel-major flatten). Two
kinds of network are understood:

- ResNets (BasicBlock, Bottleneck): only the inner convs of each block (a BasicBlock's conv1; a Bottleneck's
  conv1 and conv2), so every block's output width, which the shortcut adds to, stays the same;
- plain stacks (LeNet, VGG, `spec:` networks): the leaf layers run one after the other, each reading the one
  before; every conv that some later conv or Linear reads is pruned, the output conv is not.

Anything else (a grouped or depthwise conv, a concatenation, a branch, a layer with per-channel weights
between a conv and its reader) is refused in one line that names the layer.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.resnet import BasicBlock, Bottleneck

__all__ = ["CRITERIA", "Group", "filter_scores", "keep_count", "prunable_groups", "prune_filters", "shrink"]

CRITERIA = ("l1", "bn")
_MIXING = (nn.LocalResponseNorm, nn.ChannelShuffle, nn.PixelShuffle, nn.PixelUnshuffle)  # mix channels


@dataclass
class Group:
    """A prunable conv, its BatchNorm2d layers and the layers that read its output channels."""

    conv: str
    norms: list[str] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)


def _refuse_grouped(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and m.groups > 1:
            raise CnnkitError(f"structured pruning cannot prune {name}: a grouped or depthwise convolution "
                              f"(groups={m.groups})")
        if isinstance(m, (nn.Conv1d, nn.Conv3d, nn.ConvTranspose2d)):
            raise CnnkitError(f"structured pruning takes Conv2d layers; {name} is a {type(m).__name__}")


def _check_between(name: str, module: nn.Module) -> None:
    """A layer between a pruned conv and its reader must act on each channel alone, without weights."""
    if isinstance(module, _MIXING):
        raise CnnkitError(f"structured pruning cannot prune through {name} ({type(module).__name__}): it mixes "
                          "channels")
    if any(True for _ in module.parameters()):
        raise CnnkitError(f"structured pruning cannot prune through {name} ({type(module).__name__}): it has "
                          "per-channel weights")


def _block_groups(name: str, block: nn.Module) -> list[Group]:
    """A BasicBlock's conv1 (read by conv2); a Bottleneck's conv1 and conv2 (read by conv2, conv3)."""
    inner = [("conv1", "bn1", "act1", "conv2")]
    if isinstance(block, Bottleneck):
        inner.append(("conv2", "bn2", "act2", "conv3"))
    groups = []
    for conv, bn, act, reader in inner:
        _check_between(f"{name}.{act}", getattr(block, act))
        norm = getattr(block, bn)
        if not isinstance(norm, nn.BatchNorm2d):
            _check_between(f"{name}.{bn}", norm)  # BN switched off: nn.Identity
        groups.append(Group(f"{name}.{conv}", [f"{name}.{bn}"] if isinstance(norm, nn.BatchNorm2d) else [],
                            [f"{name}.{reader}"]))
    return groups


def _leaf_calls(model: nn.Module, input_size: Sequence[int]) -> tuple[list[tuple], torch.Tensor]:
    """[(path, module, input, output)] of the leaf modules in the order a forward pass at batch 1 calls them,
    and the model's output."""
    calls: list[tuple] = []

    def hook(name: str):
        return lambda m, args, out: calls.append((name, m, args[0] if args else None, out))

    leaves = [(n, m) for n, m in model.named_modules() if not any(True for _ in m.children()) and n]
    handles = [m.register_forward_hook(hook(n)) for n, m in leaves]
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.randn(1, *input_size))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return calls, out


def _same_data(a: object, b: object) -> bool:
    """Whether tensor `a` is `b` or a view of it (a flatten between two leaves): the layers form a chain."""
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.numel() != b.numel():
        return False
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def _check_chain(calls: list[tuple], out: torch.Tensor, label: str) -> None:
    names = [c[0] for c in calls]
    for i in range(1, len(calls)):
        if names.count(names[i]) > 1 or not _same_data(calls[i][2], calls[i - 1][3]):
            raise CnnkitError(f"structured pruning takes plain conv stacks and ResNet blocks; in {label}, "
                              f"{names[i]} does not simply read {names[i - 1]} (a skip, branch or concatenation)")
    if calls and not _same_data(out, calls[-1][3]):
        raise CnnkitError(f"structured pruning takes plain conv stacks and ResNet blocks; {label}'s output is not "
                          f"the output of its last layer {names[-1]}")


def _reader_of(calls: list[tuple], i: int) -> Group | None:
    """The group of the conv calls[i]: the BNs after it and the conv or Linear that reads it; None for an
    output conv that nothing reads."""
    group = Group(calls[i][0])
    for name, module, _, _ in calls[i + 1:]:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            group.readers.append(name)
            return group
        if isinstance(module, nn.BatchNorm2d) and module.affine:
            group.norms.append(name)
        else:
            _check_between(name, module)
    return None


def _chain_groups(model: nn.Module, input_size: Sequence[int]) -> list[Group]:
    calls, out = _leaf_calls(model, input_size)
    _check_chain(calls, out, type(model).__name__)
    groups = [_reader_of(calls, i) for i, c in enumerate(calls) if isinstance(c[1], nn.Conv2d)]
    return [g for g in groups if g is not None]


def prunable_groups(model: nn.Module, input_size: Sequence[int]) -> list[Group]:
    """The groups of `model` (see the module's docstring); refused in one line where none can be pruned safely."""
    _refuse_grouped(model)
    blocks = [(n, m) for n, m in model.named_modules() if isinstance(m, (BasicBlock, Bottleneck))]
    groups = ([g for n, b in blocks for g in _block_groups(n, b)] if blocks
              else _chain_groups(model, input_size))
    if not groups:
        raise CnnkitError(f"structured pruning found no conv that another layer reads in {type(model).__name__}")
    return groups


def filter_scores(model: nn.Module, group: Group, criterion: str) -> torch.Tensor:
    """One score per filter of the group's conv, (C_out,): "l1" Σ|w| over the filter's (C_in, kh, kw) weights;
    "bn" |γ| of the BatchNorm that follows it (Liu et al. 2017, network slimming). Low scores go first."""
    if criterion == "l1":
        return model.get_submodule(group.conv).weight.detach().abs().sum(dim=(1, 2, 3))
    if criterion == "bn":
        if not group.norms:
            raise CnnkitError(f"--criterion bn needs a BatchNorm after {group.conv}, which has none; use "
                              "--criterion l1")
        return model.get_submodule(group.norms[0]).weight.detach().abs()
    raise unknown_name("pruning criterion", criterion, CRITERIA)


def keep_count(channels: int, amount: float) -> int:
    """Filters kept when the fraction `amount` of `channels` is removed (rounded; at least one stays)."""
    return max(1, channels - round(channels * amount))


def _param(t: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(t.detach().clone())


def _slice_conv_out(conv: nn.Conv2d, keep: torch.Tensor) -> None:
    conv.weight = _param(conv.weight[keep])  # (C_out, C_in, kh, kw) → (k, C_in, kh, kw)
    if conv.bias is not None:
        conv.bias = _param(conv.bias[keep])
    conv.out_channels = len(keep)


def _slice_norm(bn: nn.BatchNorm2d, keep: torch.Tensor) -> None:
    bn.weight, bn.bias = _param(bn.weight[keep]), _param(bn.bias[keep])
    if bn.running_mean is not None:
        bn.running_mean = bn.running_mean[keep].clone()
        bn.running_var = bn.running_var[keep].clone()
    bn.num_features = len(keep)


def _slice_reader(reader: nn.Module, keep: torch.Tensor, channels: int) -> None:
    if isinstance(reader, nn.Conv2d):
        reader.weight = _param(reader.weight[:, keep])  # (C_out, C, kh, kw) → (C_out, k, kh, kw)
        reader.in_channels = len(keep)
        return
    per_channel = reader.in_features // channels  # H·W of a channel-major flatten; 1 after global pooling
    if per_channel * channels != reader.in_features:
        raise CnnkitError(f"structured pruning: {reader} reads {reader.in_features} features, not a multiple of "
                          f"{channels} channels")
    w = reader.weight.view(reader.out_features, channels, per_channel)  # (out, C, H·W)
    reader.weight = _param(w[:, keep].reshape(reader.out_features, len(keep) * per_channel))
    reader.in_features = len(keep) * per_channel


def _slice_group(model: nn.Module, group: Group, keep: torch.Tensor) -> None:
    """Keep only the filters `keep` (sorted indices) of the group's conv, in its norms and readers, in place."""
    conv = model.get_submodule(group.conv)
    channels = conv.out_channels
    _slice_conv_out(conv, keep)
    for name in group.norms:
        _slice_norm(model.get_submodule(name), keep)
    for name in group.readers:
        _slice_reader(model.get_submodule(name), keep, channels)


def prune_filters(model: nn.Module, amount: float, criterion: str = "l1",
                  input_size: Sequence[int] = (3, 32, 32)) -> dict[str, int]:
    """Remove the `amount` fraction of filters with the lowest scores from every prunable conv (the same
    fraction in each), in place. Returns {conv path: filters kept}, what `shrink` rebuilds the shape from."""
    if not 0.0 <= float(amount) < 1.0:
        raise CnnkitError(f"sparsity must be in [0, 1) (the fraction of filters removed), got {amount:g}")
    if criterion not in CRITERIA:
        raise unknown_name("pruning criterion", criterion, CRITERIA)
    groups = prunable_groups(model, input_size)
    scores = [filter_scores(model, g, criterion) for g in groups]  # all scored before any slicing
    widths = {}
    for group, score in zip(groups, scores):
        k = keep_count(len(score), float(amount))
        keep = torch.topk(score, k).indices.sort().values
        _slice_group(model, group, keep)
        widths[group.conv] = k
    return widths


def shrink(model: nn.Module, widths: dict[str, int], input_size: Sequence[int]) -> nn.Module:
    """Give a freshly built model the pruned shapes `widths` ({conv path: filters kept}) so that a pruned state
    dict loads into it; the kept values themselves come from that state dict. Returns the model."""
    groups = {g.conv: g for g in prunable_groups(model, input_size)}
    for name, k in widths.items():
        if name not in groups:
            raise CnnkitError(f"the card prunes {name}, which is not a prunable conv of {type(model).__name__}")
        _slice_group(model, groups[name], torch.arange(int(k)))
    return model
