"""Regularisation switches on a built model: dropout rates per layer, batch norm on | off | frozen.

    set_dropout(model, 0.3)                                   # every dropout module
    set_dropout(model, {"classifier.*": 0.5, "fc6": 0.3})     # fnmatch globs over model.named_modules() names
    set_batch_norm(model, "off")      # every BatchNorm1d/2d/3d becomes nn.Identity (the state-dict keys change)
    set_batch_norm(model, "frozen")   # BN uses its running statistics, never updates them; γ and β do not train

Dropout only acts in training, so a saved model need not remember its rates; "off" changes the architecture,
so `registry.create_model(..., batch_norm_mode="off")` applies it and a run's model card carries it.
"""
from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Mapping

from torch import nn

from cnnkit.config import check_dropout_spec
from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["BATCH_NORM_MODES", "batch_norm_layers", "check_dropout_spec", "dropout_layers", "set_batch_norm",
           "set_dropout"]

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
