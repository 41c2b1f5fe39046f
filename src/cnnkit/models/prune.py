"""Magnitude pruning (L1, unstructured) of Conv/Linear weights, with torch.nn.utils.prune.

    info = prune_model(model, 0.8)            # 80 % of the selected weights set to zero, globally
    overall, per_layer = sparsity(model)
    ... fine-tune: the masks stay, so pruned weights stay exactly zero ...
    make_permanent(model)                     # plain `weight` keys again, e.g. before save_model

`scope="global"` ranks all selected weights together (layers end up with different sparsities);
`scope="layer"` removes the same fraction from each layer. `layers` is an fnmatch glob over module
paths (as in `model.named_modules()`), e.g. "features.*".
"""
from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.utils import prune

from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["SCOPES", "make_permanent", "prune_model", "prunable_layers", "sparsity", "sparsity_table"]

SCOPES = ("global", "layer")
_PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
             nn.Linear)


def _is_prunable(module: nn.Module) -> bool:
    return isinstance(module, _PRUNABLE) and (
        hasattr(module, "weight_orig") or isinstance(getattr(module, "weight", None), torch.Tensor))


def prunable_layers(model: nn.Module, layers: str = "*") -> dict[str, nn.Module]:
    """{module path: module} for the Conv*/Linear modules whose path matches the glob `layers`."""
    found = {name: m for name, m in model.named_modules() if _is_prunable(m) and fnmatch.fnmatchcase(name, layers)}
    if not found:
        every = [name for name, m in model.named_modules() if _is_prunable(m)]
        shown = ", ".join(every[:12]) + (", ..." if len(every) > 12 else "")
        raise CnnkitError(f"no Conv/Linear layer matches {layers!r}; the layers are: {shown or '(none)'}")
    return found


def _weight(module: nn.Module) -> torch.Tensor:
    """The effective weight: weight_orig * weight_mask while pruned (module.weight is only refreshed by a
    forward pass, so after an optimiser step it may be stale), else the plain weight."""
    if hasattr(module, "weight_orig") and hasattr(module, "weight_mask"):
        return module.weight_orig.detach() * module.weight_mask
    return module.weight.detach()


@torch.no_grad()
def sparsity(model: nn.Module, layers: str = "*") -> tuple[float, dict[str, float]]:
    """(fraction of exact zeros among all selected weights, {layer: its fraction}). Biases are not counted."""
    zeros = total = 0
    per_layer: dict[str, float] = {}
    for name, module in prunable_layers(model, layers).items():
        w = _weight(module)
        z = int((w == 0).sum())
        per_layer[name] = z / w.numel()
        zeros, total = zeros + z, total + w.numel()
    return zeros / total, per_layer


def prune_model(model: nn.Module, amount: float, scope: str = "global", layers: str = "*") -> dict:
    """Set the `amount` fraction of smallest-|w| weights of the selected Conv*/Linear layers to zero (in place,
    through a mask kept by torch.nn.utils.prune). Returns {"sparsity": overall, "layers": {name: sparsity}}."""
    amount = float(amount)
    if not 0.0 <= amount < 1.0:
        raise CnnkitError(f"amount must be in [0, 1) (the fraction of weights to prune), got {amount}")
    if scope not in SCOPES:
        raise unknown_name("pruning scope", scope, SCOPES)
    selected = prunable_layers(model, layers)
    if scope == "global":
        prune.global_unstructured([(m, "weight") for m in selected.values()], pruning_method=prune.L1Unstructured,
                                  amount=amount)
    else:
        for module in selected.values():
            prune.l1_unstructured(module, "weight", amount=amount)
    overall, per_layer = sparsity(model, layers)
    return {"scope": scope, "amount": amount, "sparsity": overall, "layers": per_layer}


def make_permanent(model: nn.Module) -> nn.Module:
    """Fold every pruning mask into its weight (prune.remove): the state dict has plain `weight` keys again
    and the zeros stay. Returns the model."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, prune.BasePruningMethod):
                prune.remove(module, hook._tensor_name)
    return model


def sparsity_table(model: nn.Module | Callable[[], nn.Module], amounts: Sequence[float],
                   evaluate: Callable[[nn.Module], float], fine_tune: Callable[[nn.Module], None] | None = None,
                   scope: str = "global", layers: str = "*") -> list[dict]:
    """For each amount, a deep copy of the trained model (or a fresh one from the factory) is pruned, evaluated,
    optionally fine-tuned with the masks kept (pruned weights stay zero) and evaluated again. Rows:
    {"sparsity_target", "sparsity", "accuracy_before_ft", "accuracy"} (accuracy = after fine-tuning, or the
    same as before when there is none)."""
    rows = []
    for amount in amounts:
        m = copy.deepcopy(model) if isinstance(model, nn.Module) else model()
        prune_model(m, amount, scope=scope, layers=layers)
        before = float(evaluate(m))
        after = before
        if fine_tune is not None:
            fine_tune(m)
            after = float(evaluate(m))
        rows.append({"sparsity_target": float(amount), "sparsity": sparsity(m, layers)[0],
                     "accuracy_before_ft": before, "accuracy": after})
    return rows
