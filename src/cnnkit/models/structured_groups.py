"""Residual widths of CIFAR ResNets pruned as dependency groups (network slimming, "torch-pruning" style groups).

    pruned = prune_model(model, 0.5, "l1", (3, 32, 32))  # in place: inner convs and residual streams
    fresh = create_model(...); rebuild(fresh, pruned, (3, 32, 32)); fresh.load_state_dict(state)

A stage's *residual stream* is one channel set that every block of the stage reads and adds to: in a CifarResNet
(resnet20..110) the stem conv1 → bn1 feeds stage 1, and each block's conv2 → bn2 (plus a projection shortcut's
conv → BN, option B/C) produces its stage's stream. The stream's channels are ranked by the criterion summed over
its producers (`l1`: Σ|w| of each producing conv's filter, `bn`: |γ| of each producing BN), the top (1 − amount)
kept, and sliced everywhere: the producers' out-channels and BNs, the readers' in-channels (each block's conv1, a
projection shortcut's conv, the fc's input columns after global pooling). Option A's shortcut (subsample,
channel i of stage s → channel i of stage s + 1, the rest zero) becomes a ChannelScatter that puts each kept
input channel where its target survived and drops the others, so the pruned network equals the original
exactly when the pruned channels were zero. The inner convs (cnnkit.models.structured) are pruned too.

The card's `pruned` entry keeps {conv path: filters kept} for the inner convs and adds
{"streams": [[kept channel indices of the stem and stage 1], [stage 2], [stage 3]]} (indices of the original
widths), from which `rebuild` reslices a fresh model and recomputes the scatter maps; entries without "streams"
(inner pruning only) load as before. torchvision-style ResNets and plain stacks keep inner pruning only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.resnet import ZeroPadShortcut
from cnnkit.models.resnet_cifar import CifarResNet
from cnnkit.models.structured import (
    CRITERIA,
    _check_between,
    _slice_conv_out,
    _slice_norm,
    _slice_reader,
    keep_count,
    prune_filters,
    shrink,
)

__all__ = ["STREAMS", "ChannelScatter", "Stream", "merge_pruned", "prune_model", "rebuild", "residual_streams",
           "stream_scores"]

STREAMS = "streams"  # the key of the card's `pruned` entry holding the kept stream indices


class ChannelScatter(nn.Module):
    """Option A's shortcut once the streams are pruned: subsample by `stride`, then input channel src[i] goes to
    output channel dst[i]; the other output channels are zero. No parameters (the maps are not in the state
    dict: the card's kept indices rebuild them)."""

    def __init__(self, src: Sequence[int], dst: Sequence[int], c_out: int, stride: int):
        super().__init__()
        self.register_buffer("src", torch.tensor(list(src), dtype=torch.long), persistent=False)
        self.register_buffer("dst", torch.tensor(list(dst), dtype=torch.long), persistent=False)
        self.c_out, self.stride = c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, c_in, H, W) → (N, c_out, H/stride, W/stride)
        x = x[:, :, :: self.stride, :: self.stride].index_select(1, self.src)  # (N, len(src), H', W')
        out = x.new_zeros(x.shape[0], self.c_out, x.shape[2], x.shape[3])
        return out.index_copy(1, self.dst, x)

    def extra_repr(self) -> str:
        return f"channels_kept={len(self.src)}, out_channels={self.c_out}, stride={self.stride}"


@dataclass
class Stream:
    """One residual stream: (conv, BN) producers, the layers reading it, and the option-A shortcut (its path)
    that carries the previous stream into this one, if any."""

    producers: list[tuple[str, str]] = field(default_factory=list)
    readers: list[str] = field(default_factory=list)
    scatter: str | None = None


def _is_projection(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Sequential) and isinstance(module[0], nn.Conv2d)


def residual_streams(model: nn.Module) -> list[Stream]:
    """The residual streams of a CifarResNet, the stem's and stage 1's first; refused in one line otherwise."""
    if not isinstance(model, CifarResNet):
        raise CnnkitError(f"residual widths are pruned in CIFAR ResNets (resnet20..110) only; {type(model).__name__}"
                          " keeps them (use --no-residual)")
    _check_between("act", model.act)
    streams = [Stream([("conv1", "bn1")])]
    for s in (1, 2, 3):
        for j, block in enumerate(getattr(model, f"layer{s}")):
            name, previous = f"layer{s}.{j}", streams[-1]
            _check_between(f"{name}.act2", block.act2)
            previous.readers.append(f"{name}.conv1")
            if s > 1 and j == 0:
                streams.append(Stream())
            current, shortcut = streams[-1], block.downsample
            if _is_projection(shortcut):
                previous.readers.append(f"{name}.downsample.0")
                current.producers.append((f"{name}.downsample.0", f"{name}.downsample.1"))
            elif isinstance(shortcut, (ZeroPadShortcut, ChannelScatter)):
                current.scatter = f"{name}.downsample"
            current.producers.append((f"{name}.conv2", f"{name}.bn2"))
    streams[-1].readers.append("fc")
    return streams


def stream_scores(model: nn.Module, stream: Stream, criterion: str) -> torch.Tensor:
    """One score per stream channel: the criterion summed over the stream's producers (low scores go first)."""
    if criterion == "l1":
        return sum(model.get_submodule(c).weight.detach().abs().sum(dim=(1, 2, 3)) for c, _ in stream.producers)
    if criterion == "bn":
        return sum(model.get_submodule(b).weight.detach().abs() for _, b in stream.producers)
    raise unknown_name("pruning criterion", criterion, CRITERIA)


def _targets(module: nn.Module) -> dict[int, int]:
    """{input channel: output channel} of an option-A shortcut as it stands (the identity for the original)."""
    if isinstance(module, ZeroPadShortcut):
        return {i: i for i in range(module.extra)}  # c_in = c_out − extra = extra: the width doubles
    return dict(zip(module.src.tolist(), module.dst.tolist()))


def _scatter(model: nn.Module, path: str, keep_in: list[int], keep_out: list[int]) -> ChannelScatter:
    """The option-A shortcut at `path` once its input keeps `keep_in` and its output `keep_out` (indices of
    its current channels): each kept input channel whose target survived goes to that target's new place."""
    old = model.get_submodule(path)
    targets, place = _targets(old), {c: i for i, c in enumerate(keep_out)}
    pairs = [(i, place[targets[c]]) for i, c in enumerate(keep_in) if targets.get(c) in place]
    return ChannelScatter([p[0] for p in pairs], [p[1] for p in pairs], len(keep_out), old.stride)


def _slice_streams(model: nn.Module, streams: list[Stream], keeps: list[torch.Tensor]) -> None:
    """Keep only the channels `keeps[s]` (sorted indices) of each stream, in place."""
    for s, (stream, keep) in enumerate(zip(streams, keeps)):
        channels = model.get_submodule(stream.producers[0][0]).out_channels
        if stream.scatter:
            parent, _, attr = stream.scatter.rpartition(".")
            new = _scatter(model, stream.scatter, keeps[s - 1].tolist(), keep.tolist())
            setattr(model.get_submodule(parent), attr, new)
        for conv, bn in stream.producers:
            _slice_conv_out(model.get_submodule(conv), keep)
            _slice_norm(model.get_submodule(bn), keep)
        for reader in stream.readers:
            _slice_reader(model.get_submodule(reader), keep, channels)


def _wants_residual(model: nn.Module, residual: bool | None) -> bool:
    if residual is None:
        return isinstance(model, CifarResNet)
    if residual:
        residual_streams(model)  # refused in one line where there are none
    return bool(residual)


def prune_model(model: nn.Module, amount: float, criterion: str = "l1", input_size: Sequence[int] = (3, 32, 32),
                residual: bool | None = None) -> dict:
    """Prune the inner convs (cnnkit.models.structured.prune_filters) and, where `residual` (None: wherever the
    architecture has understood streams, a CifarResNet), every residual stream by the same fraction `amount`, in
    place. Returns the card's `pruned` entry: {conv path: filters kept, "streams": [kept indices per stream]}."""
    do_streams = _wants_residual(model, residual)
    streams = residual_streams(model) if do_streams else []
    if criterion not in CRITERIA:
        raise unknown_name("pruning criterion", criterion, CRITERIA)
    scores = [stream_scores(model, st, criterion) for st in streams]  # before the inner convs are sliced
    pruned: dict = prune_filters(model, amount, criterion, input_size)
    keeps = [torch.topk(sc, keep_count(len(sc), float(amount))).indices.sort().values for sc in scores]
    _slice_streams(model, streams, keeps)
    if do_streams:
        pruned[STREAMS] = [k.tolist() for k in keeps]
    return pruned


def merge_pruned(old: dict | None, new: dict) -> dict:
    """The card entry of a run pruned again: inner widths replaced, stream indices composed (new ones index the
    already pruned streams; the card holds indices of the original widths)."""
    merged = {**(old or {}), **new}
    if old and STREAMS in old and STREAMS in new:
        merged[STREAMS] = [[before[i] for i in now] for before, now in zip(old[STREAMS], new[STREAMS])]
    return merged


def rebuild(model: nn.Module, pruned: dict, input_size: Sequence[int]) -> nn.Module:
    """Give a freshly built model the pruned shapes of the card's `pruned` entry so that a pruned state dict loads
    into it (the kept values come from that state dict; the stream indices rebuild the option-A maps)."""
    shrink(model, {k: v for k, v in pruned.items() if k != STREAMS}, input_size)
    if STREAMS in pruned:
        streams = residual_streams(model)
        if len(streams) != len(pruned[STREAMS]):
            raise CnnkitError(f"the card prunes {len(pruned[STREAMS])} residual streams; {type(model).__name__} "
                              f"has {len(streams)}")
        _slice_streams(model, streams, [torch.tensor(k, dtype=torch.long) for k in pruned[STREAMS]])
    return model

