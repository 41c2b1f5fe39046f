"""One factory for every architecture (timm's `create_model`, torchvision's `get_model`): a name means the
architecture only; weights are a file given to `create_model`, or a name of their own, '<architecture>.<tag>'
such as 'efficientnet_lite0.imagenet' (cnnkit.models.pretrained). Loading weights, dropping a mismatched head
and the batch-norm mode happen here, in one place.

The zoo registers itself when the cnnkit.models package is imported, which Python does before this module.
"""
from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Sequence
from pathlib import Path

from torch import nn

from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.external import external_names, external_spec
from cnnkit.models.pretrained import load_pretrained, load_state, lookup, read_state_dict
from cnnkit.models.registry import ModelSpec, registered, registered_names
from cnnkit.models.spec import is_spec, spec_model
from cnnkit.models.tweaks import BATCH_NORM_MODES, set_batch_norm
from cnnkit.models.tweaks import insert_dropout as place_dropout


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered name, or of a prefixed one ('tv/<name>', 'timm/<name>', 'spec:<layers>' or
    'spec:<file.yaml>', cnnkit.models.spec) built on the fly."""
    spec = registered(name)
    if spec is not None:
        return spec
    if is_spec(name):
        return spec_model(name)
    if "." in name:  # named weights, 'efficientnet_lite0.imagenet': the spec of their architecture
        return get_spec(lookup(name).architecture)
    if "/" in name:
        return external_spec(name)
    raise unknown_name("model", name, registered_names())


def list_models(pattern: str = "*", task: str | None = None, include_external: bool = False) -> list[str]:
    """Registered names matching a glob, optionally only those of one task; `include_external` adds the
    prefixed torchvision ('tv/...') and, where installed, timm ('timm/...') classifiers."""
    tasks = registered_names()
    if include_external:
        tasks.update(dict.fromkeys(external_names(), "classify"))
    return sorted(n for n, t in tasks.items() if fnmatch.fnmatch(n, pattern) and (task is None or t == task))


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_channels: int | None = None,
    weights: str | Path | None = None,
    batch_norm_mode: str = "on",
    input_size: Sequence[int] | None = None,
    insert_dropout: dict[str, float] | None = None,
    **kwargs,
) -> nn.Module:
    """Build `name`; load `weights` (a state-dict file) when given, dropping a head of another size; then
    `batch_norm_mode` "off" or "frozen" changes its BN layers (cnnkit.models.tweaks.set_batch_norm).
    `input_size` (C, H, W) of the images reaches the architectures whose layers depend on it (a spec network's
    first fc after its maps); the others ignore it. `insert_dropout` {module glob: rate} adds dropout after the
    matching modules (cnnkit.models.tweaks.insert_dropout), as a run's card asks.
    A name of pretrained weights, 'efficientnet_lite0.imagenet' (cnnkit.models.pretrained), builds their
    architecture with those weights (a new head when `num_classes` differs)."""
    if batch_norm_mode not in BATCH_NORM_MODES:
        raise unknown_name("batch-norm mode", batch_norm_mode, BATCH_NORM_MODES)
    pretrained = None if registered(name) is not None or is_spec(name) else lookup(name)
    if pretrained is not None:
        if weights is not None:
            raise CnnkitError(f"{name!r} names its weights already; give the architecture "
                              f"{pretrained.architecture!r} with a weight file, or the name alone")
        name, kwargs = pretrained.architecture, {**pretrained.options, **kwargs}
    spec = get_spec(name)
    in_channels = spec.input_size[0] if in_channels is None else in_channels
    if num_classes < 1 or in_channels < 1:
        raise CnnkitError(f"num_classes and in_channels must be positive, got {num_classes} and {in_channels}")
    if input_size is not None and "input_size" in inspect.signature(spec.fn).parameters:
        kwargs = {"input_size": tuple(input_size)[-2:], **kwargs}
    try:
        model = spec.fn(num_classes=num_classes, in_channels=in_channels, **{**spec.defaults, **kwargs})
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"bad option for model {name!r}: {err}") from None
    if weights is not None:
        load_weights(model, weights, head=spec.head)
    elif pretrained is not None:
        load_pretrained(model, pretrained, head=spec.head)
    set_batch_norm(model, batch_norm_mode)
    if insert_dropout:
        place_dropout(model, insert_dropout)
    return model


def load_weights(model: nn.Module, path: str | Path, *, head: str | tuple[str, ...] = "fc") -> None:
    """Load a state-dict file (.pt/.pth/.bin, or .safetensors) strictly, except the head(s), skipped where
    their shape differs."""
    load_state(model, read_state_dict(path), head=head, source=Path(path))
