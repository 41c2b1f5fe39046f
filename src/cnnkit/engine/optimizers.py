"""Every optimiser by name, with Keras 3's documented defaults.

`get('adam', model.parameters(), lr=3e-4)` builds a `torch.optim.Optimizer`. The defaults in
`OPTIMIZERS` are Keras 3's (learning rate, momentum, rho, epsilon, initial accumulator, weight
decay), so a run named the same way starts from the same hyper-parameters in both libraries.
Options use torch's names (`eps`, `betas`, `alpha` for RMSprop's rho, ...); FTRL, which torch
lacks, is implemented here with Keras' option names.

Known differences from Keras by definition (tests/engine/test_optimizers.py checks each one):

* epsilon: torch adds it outside the square root (`g / (√v + ε)`) for Adagrad, RMSprop and
  Adam-type optimisers, and to the bias-corrected `√v̂` for Adam/AdamW/NAdam; Keras adds it inside
  (`√(v + ε)`) for Adagrad/RMSprop and to the uncorrected `√v` for Adam. Adamax: torch puts ε
  inside the max (`max(β₂u, |g| + ε)`), Keras outside (`u + ε`). The two agree as ε → 0.
* NAdam: the momentum schedule is μ_t = β₁(1 − ½·0.96^(t·ψ)); torch/Dozat (2016) use ψ = 0.004
  (our default), Keras uses ψ = 1 (pass `momentum_decay=1.0` to reproduce Keras).
* weight_decay: for sgd/adagrad/adadelta/rmsprop/adam/adamax/nadam it is torch's coupled L2
  (`g ← g + λw`); Keras' `weight_decay` is decoupled (`w ← w − ηλw`), like our adamw, which
  matches Keras' AdamW exactly (decay scaled by the learning rate, applied before the step).
* Adadelta has ε inside the square roots in both and matches Keras directly.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from cnnkit.errors import CnnkitError, did_you_mean, unknown_name

__all__ = ["FTRL", "OPTIMIZERS", "build", "get", "list_optimizers", "options_of"]


class FTRL(torch.optim.Optimizer):
    """Per-coordinate FTRL-Proximal (McMahan et al. 2013, "Ad Click Prediction"), as in Keras' Ftrl.

    With accumulator n (starting at `initial_accumulator_value`), linear term z (starting at 0),
    learning rate α, power p = `learning_rate_power` (≤ 0), L1 λ₁, L2 λ₂, shrinkage λ₂ₛ and β:

        g̃ = g + 2·λ₂ₛ·w                       (shrinkage-type L2, a penalty on the loss)
        n' = n + g²
        z ← z + g̃ − (n'^(−p) − n^(−p)) / α · w
        w ← (clip(z, −λ₁, λ₁) − z) / (n'^(−p) / α + 2·(λ₂ + β / (2α)))
        n ← n'

    i.e. w = 0 where |z| ≤ λ₁, else −(z − sign(z)·λ₁) / (...). With p = −½ and β = 0 this is the
    paper's update with per-coordinate rate α / √n. `weight_decay` λ adds λ·w to g̃ (coupled L2).
    """

    def __init__(self, params: Iterable, lr: float = 1e-3, learning_rate_power: float = -0.5,
                 initial_accumulator_value: float = 0.1, l1_regularization_strength: float = 0.0,
                 l2_regularization_strength: float = 0.0, l2_shrinkage_regularization_strength: float = 0.0,
                 beta: float = 0.0, weight_decay: float = 0.0) -> None:
        _check_ftrl(lr, learning_rate_power, initial_accumulator_value, l1_regularization_strength,
                    l2_regularization_strength, l2_shrinkage_regularization_strength, weight_decay)
        defaults = dict(lr=lr, learning_rate_power=learning_rate_power,
                        initial_accumulator_value=initial_accumulator_value,
                        l1_regularization_strength=l1_regularization_strength,
                        l2_regularization_strength=l2_regularization_strength,
                        l2_shrinkage_regularization_strength=l2_shrinkage_regularization_strength,
                        beta=beta, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One FTRL-Proximal update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, param.grad, group)
        return loss

    def _update(self, param: torch.Tensor, grad: torch.Tensor, group: dict[str, Any]) -> None:
        """The update rule of the class docstring for one parameter."""
        if grad.is_sparse:
            raise CnnkitError("FTRL does not support sparse gradients")
        state = self.state[param]
        if not state:
            state["accumulator"] = torch.full_like(param, group["initial_accumulator_value"])
            state["linear"] = torch.zeros_like(param)
        lr, power = group["lr"], -group["learning_rate_power"]
        accum, linear = state["accumulator"], state["linear"]
        shrink = 2 * group["l2_shrinkage_regularization_strength"] + group["weight_decay"]
        new_accum = accum + grad * grad
        sigma = (new_accum.pow(power) - accum.pow(power)) / lr
        linear.add_(grad + shrink * param - sigma * param)
        l1 = group["l1_regularization_strength"]
        l2 = group["l2_regularization_strength"] + group["beta"] / (2 * lr)
        quadratic = new_accum.pow(power) / lr + 2 * l2
        param.copy_((linear.clamp(-l1, l1) - linear) / quadratic)
        accum.copy_(new_accum)


def _check_ftrl(lr: float, power: float, initial: float, *strengths: float) -> None:
    """Keras' argument checks: positive rate, power ≤ 0, non-negative accumulator and strengths."""
    if lr <= 0:
        raise CnnkitError(f"the learning rate must be positive, got {lr}")
    if power > 0:
        raise CnnkitError(f"FTRL learning_rate_power must be ≤ 0, got {power}")
    if initial < 0 or min(strengths) < 0:
        raise CnnkitError("FTRL initial_accumulator_value and regularisation strengths must be ≥ 0")


# name → (class, default learning rate, default options): Keras 3's defaults in torch's names.
OPTIMIZERS: dict[str, tuple[type[torch.optim.Optimizer], float, dict[str, Any]]] = {
    # w ← w − η(g + μ·b) with nesterov, else w ← w − η·b; b ← μb + (1 − dampening)g
    "sgd": (torch.optim.SGD, 0.01, {"momentum": 0.0, "nesterov": False, "dampening": 0.0}),
    # n ← n + g²; w ← w − η g / (√n + ε)
    "adagrad": (torch.optim.Adagrad, 1e-3, {"initial_accumulator_value": 0.1, "eps": 1e-7}),
    # v ← ρv + (1−ρ)g²; Δ = √(u + ε)/√(v + ε)·g; u ← ρu + (1−ρ)Δ²; w ← w − ηΔ
    "adadelta": (torch.optim.Adadelta, 1e-3, {"rho": 0.95, "eps": 1e-7}),
    # v ← αv + (1−α)g²; w ← w − η g / (√v + ε)  (α is Keras' rho; optional momentum, centered)
    "rmsprop": (torch.optim.RMSprop, 1e-3, {"alpha": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False}),
    # m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; w ← w − η m̂ / (√v̂ + ε)
    "adam": (torch.optim.Adam, 1e-3, {"betas": (0.9, 0.999), "eps": 1e-7, "amsgrad": False}),
    # w ← w − ηλw, then the Adam step (decoupled decay, Loshchilov & Hutter 2019)
    "adamw": (torch.optim.AdamW, 1e-3, {"betas": (0.9, 0.999), "eps": 1e-7, "weight_decay": 0.004,
                                        "amsgrad": False}),
    # m ← β₁m + (1−β₁)g; u ← max(β₂u, |g| + ε); w ← w − η m / ((1 − β₁ᵗ) u)
    "adamax": (torch.optim.Adamax, 1e-3, {"betas": (0.9, 0.999), "eps": 1e-7}),
    # Adam with Nesterov momentum and the μ_t = β₁(1 − ½·0.96^(tψ)) schedule (Dozat 2016)
    "nadam": (torch.optim.NAdam, 1e-3, {"betas": (0.9, 0.999), "eps": 1e-7, "momentum_decay": 4e-3}),
    # see FTRL
    "ftrl": (FTRL, 1e-3, {"learning_rate_power": -0.5, "initial_accumulator_value": 0.1,
                          "l1_regularization_strength": 0.0, "l2_regularization_strength": 0.0,
                          "l2_shrinkage_regularization_strength": 0.0, "beta": 0.0}),
}


def list_optimizers() -> list[str]:
    """The optimiser names `get` accepts, sorted."""
    return sorted(OPTIMIZERS)


def get(name: str, params: Iterable, lr: float | None = None, weight_decay: float | None = None,
        **options: Any) -> torch.optim.Optimizer:
    """The optimiser `name` over `params`; unset options take the defaults in `OPTIMIZERS`.

    `weight_decay` is coupled L2 except for adamw (decoupled, scaled by `lr`) — see the module notes.
    """
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    cls, default_lr, defaults = OPTIMIZERS[name]
    _check_options(name, options)
    kwargs = {**defaults, **options}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    lr = default_lr if lr is None else lr
    if lr <= 0:
        raise CnnkitError(f"the learning rate must be positive, got {lr}")
    try:
        return cls(params, lr=lr, **kwargs)
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"bad option for optimizer {name!r}: {err}") from None


def options_of(name: str) -> list[str]:
    """The options optimiser `name` takes besides lr and weight_decay (torch's names), e.g. sgd: momentum,
    dampening, nesterov, ..."""
    if name not in OPTIMIZERS:
        raise unknown_name("optimizer", name, OPTIMIZERS)
    params = inspect.signature(OPTIMIZERS[name][0].__init__).parameters
    return [k for k, p in params.items() if k not in ("self", "params", "lr", "weight_decay")
            and p.kind is not p.VAR_KEYWORD and p.kind is not p.VAR_POSITIONAL]


def _check_options(name: str, options: dict[str, Any]) -> None:
    """One line for an option the optimiser has not, naming those it has (--momentum goes with sgd, rmsprop)."""
    allowed = options_of(name)
    for key in options:
        if key not in allowed:
            raise CnnkitError(f"optimizer {name!r} has no option {key!r}{did_you_mean(str(key), allowed)}; it takes "
                              f"{', '.join(allowed)} (momentum: sgd, rmsprop; nesterov: sgd)")


def build(optimizer: str | type[torch.optim.Optimizer] | Callable[..., Any] | torch.optim.Optimizer,
          params: Iterable, lr: float | None = None, weight_decay: float | None = None,
          **options: Any) -> torch.optim.Optimizer:
    """An optimiser from a name (`get`), a torch.optim.Optimizer class (`cls(params, lr=..., **options)`), a
    factory (`factory(params, **options)`, e.g. functools.partial(torch.optim.SGD, lr=0.1)) or an optimiser
    already made over `params`."""
    params = list(params)
    if isinstance(optimizer, str):
        return get(optimizer, params, lr=lr, weight_decay=weight_decay, **options)
    if isinstance(optimizer, torch.optim.Optimizer):
        return _made(optimizer, params, lr, weight_decay, options)
    if not callable(optimizer):
        raise CnnkitError(f"optimizer must be a name, a torch.optim.Optimizer class or a factory, got {optimizer!r}")
    extra = {k: v for k, v in (("lr", lr), ("weight_decay", weight_decay)) if v is not None}
    try:
        made = optimizer(params, **extra, **options)
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"bad option for optimizer {getattr(optimizer, '__name__', optimizer)!r}: {err}") from None
    if not isinstance(made, torch.optim.Optimizer):
        raise CnnkitError(f"the optimizer factory gave {type(made).__name__}, not a torch.optim.Optimizer")
    return made


def _made(optimizer: torch.optim.Optimizer, params: list, lr: float | None, weight_decay: float | None,
          options: dict[str, Any]) -> torch.optim.Optimizer:
    """An optimiser made by the caller: it must drive these parameters, and takes no further options."""
    if lr is not None or weight_decay is not None or options:
        raise CnnkitError("an optimizer object has its options already; give lr and the others to its constructor")
    own = {id(p) for group in optimizer.param_groups for p in group["params"]}
    if not own or not {id(p) for p in params} <= own:
        raise CnnkitError("the optimizer object does not hold this model's parameters; make it over "
                          "model.network.parameters(), or pass its class instead")
    return optimizer
