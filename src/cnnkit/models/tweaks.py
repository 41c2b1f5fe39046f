"""Regularisation switches on a built model: dropout rates per layer, batch norm on | off | frozen.

    set_dropout(model, 0.3)                                   # every dropout module
    set_dropout(model, {"classifier.*": 0.5, "fc6": 0.3})     # fnmatch globs over model.named_modules() names
    set_batch_norm(model, "off")      # every BatchNorm1d/2d/3d becomes nn.Identity (the state-dict keys change)
    set_batch_norm(model, "frozen")   # BN uses its running statistics, never updates them; γ and β do not train
    insert_dropout(model, {"features.*.conv": 0.1})  # new dropout after the matching modules (spatial on 4-D maps)

Dropout only acts in training, so a saved model need not remember its rates; "off" changes the architecture,
so `registry.create_model(..., batch_norm_mode="off")` applies it and a run's model card carries it. Inserted
dropout adds modules, so `create_model(..., insert_dropout={glob: rate})` applies it and the card carries it
too; it adds no parameter or buffer, so the state-dict keys (and pretrained weights) stay as they are.
"""
from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cnnkit.config import check_dropout_spec
from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["BATCH_NORM_MODES", "PlacedDropout", "batch_norm_layers", "check_dropout_spec", "dropout_layers",
           "insert_dropout", "set_batch_norm", "set_dropout"]

BATCH_NORM_MODES = ("on", "off", "frozen")
_DROPOUT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
_BATCH_NORM = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") or "(none)"


def dropout_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{module path: module} for every dropout module of `model`."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _DROPOUT)}


def batch_norm_layers(model: nn.Module) -> dict[str, nn.Module]:
    """{module path: module} for every BatchNorm1d/2d/3d (and SyncBatchNorm) of `model`."""
    return {name: m for name, m in model.named_modules() if isinstance(m, _BATCH_NORM)}


def set_dropout(model: nn.Module, spec: float | Mapping[str, float]) -> dict[str, float]:
    """Set p of every dropout module (a float) or of those whose path matches each glob (a mapping; a later
    glob wins where two match). Returns {module path: rate} of the modules set."""
    spec = check_dropout_spec(spec)
    layers = dropout_layers(model)
    if not layers:
        raise CnnkitError(f"{type(model).__name__} has no dropout layers to set; choose an architecture with "
                          "dropout (e.g. lenet5, alexnet, vgg11, resnet18) or leave the dropout rate out")
    if isinstance(spec, float):
        rates = dict.fromkeys(layers, spec)
    else:
        rates = {}
        for glob, rate in spec.items():
            hits = [name for name in layers if fnmatch.fnmatchcase(name, glob)]
            if not hits:
                raise CnnkitError(f"no dropout layer matches {glob!r}; the dropout layers are: {_shown(list(layers))}")
            rates.update(dict.fromkeys(hits, rate))
    for name, rate in rates.items():
        layers[name].p = rate
    return rates


def _keep_eval(module: nn.Module, args: tuple) -> None:
    """Forward pre-hook of a frozen BN layer: whatever model.train() said, normalise with the running
    statistics and leave them as they are."""
    module.training = False


def _freeze(module: nn.Module) -> None:
    for param in module.parameters(recurse=False):
        param.requires_grad_(False)
    if not getattr(module, "_cnnkit_frozen", False):
        module.register_forward_pre_hook(_keep_eval)
        module._cnnkit_frozen = True


def set_batch_norm(model: nn.Module, mode: str) -> int:
    """"on": nothing; "off": every BN layer becomes nn.Identity; "frozen": every BN layer keeps eval behaviour
    through model.train() (a forward pre-hook) and its affine parameters stop training. Returns how many
    BN layers changed; a model without any gives a warning."""
    if mode not in BATCH_NORM_MODES:
        raise unknown_name("batch-norm mode", mode, BATCH_NORM_MODES)
    if mode == "on":
        return 0
    found = batch_norm_layers(model)
    if not found:
        warnings.warn(f"{type(model).__name__} has no batch-norm layers; batch norm {mode!r} changes nothing",
                      stacklevel=2)
        return 0
    if mode == "frozen":
        for module in found.values():
            _freeze(module)
        return len(found)
    paths = [name for name, m in model.named_modules(remove_duplicate=False)  # every path, also of a shared layer
             if name and isinstance(m, _BATCH_NORM)]
    for name in paths:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, nn.Identity())
    return len(found)


class PlacedDropout(nn.Dropout):
    """Dropout inserted after a module (`insert_dropout`): spatial (Dropout2d: whole channels) on a 4-D feature
    map, element-wise on anything else; the identity in eval mode. An nn.Dropout, so --dropout re-rates it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        if x.dim() == 4:
            return F.dropout2d(x, self.p, True, self.inplace)
        return F.dropout(x, self.p, True, self.inplace)


PLACED = "placed_dropout"  # the child's name on the module it follows


def _drop_output(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook of a module with inserted dropout: its output through that dropout (tensors only)."""
    return getattr(module, PLACED)(output) if isinstance(output, torch.Tensor) else output


def insert_dropout(model: nn.Module, spec: Mapping[str, float]) -> dict[str, float]:
    """Add dropout after every module whose qualified name matches a glob of `spec` ({glob: rate}; a later glob
    wins where two match): a PlacedDropout child applied to the module's output by a forward hook (appended
    as its last layer to an nn.Sequential), so no state-dict key changes. A glob that matches nothing is a
    one-line error naming some modules. Returns {module path: rate}."""
    spec = check_dropout_spec(spec)
    if not isinstance(spec, Mapping):
        raise CnnkitError(f"insert_dropout takes GLOB=RATE pairs such as features.*.conv=0.1, got {spec!r}")
    skip = (*_DROPOUT, nn.ModuleList, nn.ModuleDict)  # no output of their own to drop
    names = [name for name, m in model.named_modules() if name and not isinstance(m, skip)]
    rates: dict[str, float] = {}
    for glob, rate in spec.items():
        hits = [name for name in names if fnmatch.fnmatchcase(name, glob)]
        if not hits:
            raise CnnkitError(f"--insert-dropout {glob}={rate}: no module matches {glob!r}; the modules include "
                              f"{_shown(names)}")
        rates.update(dict.fromkeys(hits, rate))
    for name, rate in rates.items():
        _place(model.get_submodule(name), rate)
    return rates


def _place(module: nn.Module, rate: float) -> None:
    """Dropout at `rate` after `module`, or the rate of the one placed there already."""
    if isinstance(module, nn.Sequential):
        if len(module) and isinstance(module[-1], PlacedDropout):
            module[-1].p = rate
        else:
            module.append(PlacedDropout(rate))
    elif hasattr(module, PLACED):
        getattr(module, PLACED).p = rate
    else:
        module.add_module(PLACED, PlacedDropout(rate))
        module.register_forward_hook(_drop_output)
