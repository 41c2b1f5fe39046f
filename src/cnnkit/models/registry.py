"""The model registry: one factory for every architecture, weights loaded in one place.

A name means the architecture only; weights are a file given to `create_model`, or a name of their own,
'<architecture>.<tag>' such as 'efficientnet_lite0.imagenet' (cnnkit.models.pretrained).
"""
from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from cnnkit.errors import CnnkitError, unknown_name

ModelFn = Callable[..., nn.Module]


@dataclass(frozen=True)
class ModelSpec:
    """What the registry knows about an architecture besides its constructor."""

    name: str
    fn: ModelFn
    task: str = "classify"
    paper: str = ""
    head: str | tuple[str, ...] = "fc"  # the classifier's path(s), dropped from weights when num_classes differs
    input_size: tuple[int, int, int] = (3, 224, 224)  # (C, H, W) the paper trains at
    defaults: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    task: str = "classify",
    paper: str = "",
    head: str | tuple[str, ...] = "fc",
    input_size: tuple[int, int, int] = (3, 224, 224),
    **defaults,
) -> Callable[[ModelFn], ModelFn]:
    """Decorator: add an architecture under `name`. Registering a name twice raises."""

    def add(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, fn, task, paper, head, input_size, dict(defaults))
        return fn

    return add


def _ensure_zoo() -> None:
    import cnnkit.models  # noqa: F401  (importing registers the zoo)


def get_spec(name: str) -> ModelSpec:
    """The spec of a registered name, or of a prefixed one ('tv/<name>', 'timm/<name>') built on the fly."""
    _ensure_zoo()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "." in name:  # named weights, 'efficientnet_lite0.imagenet': the spec of their architecture
        from cnnkit.models.pretrained import lookup

        return get_spec(lookup(name).architecture)
    if "/" in name:
        from cnnkit.models.external import external_spec

        return external_spec(name)
    raise unknown_name("model", name, _REGISTRY)


def list_models(pattern: str = "*", task: str | None = None, include_external: bool = False) -> list[str]:
    """Registered names matching a glob, optionally only those of one task; `include_external` adds the
    prefixed torchvision ('tv/...') and, where installed, timm ('timm/...') classifiers."""
    _ensure_zoo()
    tasks = {n: s.task for n, s in _REGISTRY.items()}
    if include_external:
        from cnnkit.models.external import external_names

        tasks.update(dict.fromkeys(external_names(), "classify"))
    return sorted(n for n, t in tasks.items() if fnmatch.fnmatch(n, pattern) and (task is None or t == task))


def create_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_channels: int | None = None,
    weights: str | Path | None = None,
    batch_norm_mode: str = "on",
    **kwargs,
) -> nn.Module:
    """Build `name`; load `weights` (a state-dict file) when given, dropping a head of another size; then
    `batch_norm_mode` "off" or "frozen" changes its BN layers (cnnkit.models.tweaks.set_batch_norm).
    A name of pretrained weights, 'efficientnet_lite0.imagenet' (cnnkit.models.pretrained), builds their
    architecture with those weights (a new head when `num_classes` differs)."""
    from cnnkit.models.tweaks import BATCH_NORM_MODES, set_batch_norm  # lazily: the zoo imports this module
    from cnnkit.models.pretrained import load_pretrained, lookup

    if batch_norm_mode not in BATCH_NORM_MODES:
        raise unknown_name("batch-norm mode", batch_norm_mode, BATCH_NORM_MODES)
    _ensure_zoo()
    pretrained = None if name in _REGISTRY else lookup(name)
    if pretrained is not None:
        if weights is not None:
            raise CnnkitError(f"{name!r} names its weights already; give the architecture "
                              f"{pretrained.architecture!r} with a weight file, or the name alone")
        name, kwargs = pretrained.architecture, {**pretrained.options, **kwargs}
    spec = get_spec(name)
    in_channels = spec.input_size[0] if in_channels is None else in_channels
    if num_classes < 1 or in_channels < 1:
        raise CnnkitError(f"num_classes and in_channels must be positive, got {num_classes} and {in_channels}")
    try:
        model = spec.fn(num_classes=num_classes, in_channels=in_channels, **{**spec.defaults, **kwargs})
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"bad option for model {name!r}: {err}") from None
    if weights is not None:
        load_weights(model, weights, head=spec.head)
    elif pretrained is not None:
        load_pretrained(model, pretrained, head=spec.head)
    set_batch_norm(model, batch_norm_mode)
    return model


def load_weights(model: nn.Module, path: str | Path, *, head: str | tuple[str, ...] = "fc") -> None:
    """Load a state-dict file (.pt/.pth/.bin, or .safetensors) strictly, except the head(s), skipped where
    their shape differs."""
    from cnnkit.models.pretrained import read_state_dict

    load_state(model, read_state_dict(path), head=head, source=Path(path))


def load_state(model: nn.Module, state: dict, *, head: str | tuple[str, ...] = "fc", source: Path) -> None:
    """Load `state` (read from `source`) strictly, except the head(s), skipped where their shape differs."""
    heads = (head,) if isinstance(head, str) else tuple(head)
    path, state = source, dict(state)
    own = model.state_dict()
    dropped = [k for k in state if k.startswith(tuple(h + "." for h in heads)) and k in own
               and state[k].shape != own[k].shape]
    for k in dropped:
        del state[k]
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k not in dropped]
    if bad_missing or unexpected:
        raise CnnkitError(
            f"weights in {path} do not match the architecture: {len(bad_missing)} missing keys "
            f"(e.g. {bad_missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )
    if dropped:
        names = ", ".join(sorted({k.rsplit(".", 1)[0] for k in dropped}))
        warnings.warn(f"head '{names}' has another shape in {path.name}; it starts from random weights", stacklevel=2)
