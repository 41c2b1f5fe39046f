"""The model registry: every architecture registers its constructor here under a name (`register_model`).
Building one, with its weights, is cnnkit.models.factory's `create_model`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

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
    # the model's own training recipe: TrainConfig values (optimizer, lr, schedule, warmup_epochs, ...) that
    # apply where the run keeps cnnkit's global default (cnnkit.recipes.runner.model_train_defaults)
    train: dict = field(default_factory=dict)


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(
    name: str,
    *,
    task: str = "classify",
    paper: str = "",
    head: str | tuple[str, ...] = "fc",
    input_size: tuple[int, int, int] = (3, 224, 224),
    train: dict | None = None,
    **defaults,
) -> Callable[[ModelFn], ModelFn]:
    """Decorator: add an architecture under `name`. Registering a name twice raises."""

    def add(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, fn, task, paper, head, input_size, dict(defaults), dict(train or {}))
        return fn

    return add


def registered(name: str) -> ModelSpec | None:
    """The spec registered under `name`, or None (cnnkit.models.factory resolves the other kinds of name)."""
    return _REGISTRY.get(name)


def registered_names() -> dict[str, str]:
    """{name: task} of every registered architecture."""
    return {n: s.task for n, s in _REGISTRY.items()}
