"""Learning-rate schedules by name: `cnnkit.engine.schedules.get('cosine', optimizer, steps_per_epoch=..., epochs=...)`.

Every schedule counts time t in units of its `interval`: epochs (`interval="epoch"`, the default of `get`) or
optimiser steps (`interval="batch"`). T is the length of the run in those units (`epochs`, or
`epochs · steps_per_epoch`) less the warm-up. lr0 is each parameter group's learning rate when the schedule is made.
A run (`for_run`) takes each schedule's own default interval, DEFAULT_INTERVALS, unless told otherwise.

    step_decay         lr = lr0 · γ^⌊t/n⌋                                    (gamma=0.1, step_size=⌈T/3⌉)
    linear_decay       lr = (1 − α) ε0 + α ετ, α = t/τ for t ≤ τ; ετ after τ  (tau=T, final_factor=0.01 | final_lr)
    exponential        lr = lr0 · γ^t                                        (gamma=0.95)
    decay              lr = lr0 / (1 + r · t/s), Keras' InverseTimeDecay        (decay_rate=r, decay_steps=s=1,
                       (staircase: ⌊t/s⌋); r defaults to 9/T, so that lr ends at lr0/10   staircase=False)
    cosine             lr = η_min + (lr0 − η_min) · ½(1 + cos(π t/T))          (eta_min=0, T_max=T)
    cosine_restarts    the same with T = T_i restarting at 0; T_{i+1} = T_mult · T_i (SGDR; T_0 required, T_mult=1)
    one_cycle          OneCycleLR (Smith 2018)                               (max_lr=lr0, pct_start=0.3, ...)
    reduce_on_plateau  lr ← max(lr · factor, min_lr) after `patience` epochs without improvement of the metric
    constant / none    lr = lr0

A warm-up of `warmup` units (option start_factor=0.1) comes first: lr = lr0 · (s + (1 − s) · t/warmup) for
t ≤ warmup, then the named schedule runs with t − warmup.
"""
from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    LRScheduler,
    OneCycleLR,
    ReduceLROnPlateau,
    SequentialLR,
    StepLR,
)

from cnnkit.errors import CnnkitError, did_you_mean, unknown_name

INTERVALS = ("epoch", "batch")


def _constant(optimizer: Optimizer, total: int) -> LRScheduler:
    """lr = lr0."""
    return LambdaLR(optimizer, _one)


def _one(t: int) -> float:
    return 1.0


def _step_decay(optimizer: Optimizer, total: int, *, gamma: float = 0.1, step_size: int | None = None) -> LRScheduler:
    """lr = lr0 · γ^⌊t/n⌋ with n = step_size (default ⌈T/3⌉): torch's StepLR."""
    size = _positive_int("step_size", step_size if step_size is not None else math.ceil(total / 3))
    return StepLR(optimizer, step_size=size, gamma=_positive("gamma", gamma))


def _linear_decay(optimizer: Optimizer, total: int, *, tau: int | None = None, final_lr: float | None = None,
                  final_factor: float | None = None) -> LRScheduler:
    """ε_k = (1 − α) ε_0 + α ε_τ with α = k/τ for k ≤ τ, then ε_τ (Goodfellow et al. §8.3.1).

    τ defaults to T; ε_τ is `final_lr`, or `final_factor` · ε_0 (default 0.01, "roughly 1% of ε_0").
    A closed-form LambdaLR, not LinearLR: LinearLR computes the same line recursively (rounding drifts) and
    cannot take an absolute `final_lr` for groups with different ε_0.
    """
    tau = _positive_int("tau", tau if tau is not None else total)
    if final_lr is not None and final_factor is not None:
        raise CnnkitError("linear_decay takes final_lr or final_factor, not both")
    if final_lr is not None and final_lr < 0:
        raise CnnkitError(f"final_lr must be at least 0, got {final_lr}")
    factor = 0.01 if final_factor is None else final_factor
    if factor < 0:
        raise CnnkitError(f"final_factor must be at least 0, got {factor}")
    ends = [factor if final_lr is None else final_lr / g["lr"] for g in optimizer.param_groups]
    return LambdaLR(optimizer, [_linear_factor(tau, end) for end in ends])


def _linear_factor(tau: int, end: float) -> Callable[[int], float]:
    """k ↦ (1 − α) + α · end with α = min(k, τ)/τ: the factor of ε_0 in the linear decay."""
    def factor(k: int) -> float:
        alpha = min(k, tau) / tau
        return (1 - alpha) + alpha * end
    return factor


def _exponential(optimizer: Optimizer, total: int, *, gamma: float = 0.95) -> LRScheduler:
    """lr = lr0 · γ^t: torch's ExponentialLR."""
    return ExponentialLR(optimizer, gamma=_positive("gamma", gamma))


def _inverse_time(optimizer: Optimizer, total: int, *, decay_rate: float | None = None, decay_steps: int = 1,
                  staircase: bool = False) -> LRScheduler:
    """lr = lr0 / (1 + r · t/s) (⌊t/s⌋ with `staircase`): Keras' InverseTimeDecay, and the `decay` argument of
    Keras' older optimisers (s = 1, t in optimiser steps). r defaults to 9·s/T: lr reaches lr0/10 at the end."""
    steps = _positive_int("decay_steps", decay_steps)
    rate = 9 * steps / total if decay_rate is None else decay_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or rate < 0:
        raise CnnkitError(f"decay_rate must be a number of at least 0, got {rate!r}")
    return LambdaLR(optimizer, _InverseTime(float(rate), steps, bool(staircase)))


class _InverseTime:
    """t ↦ 1 / (1 + r · t/s): the factor of lr0 (a class, so that the scheduler's state pickles)."""

    def __init__(self, rate: float, steps: int, staircase: bool):
        self.rate, self.steps, self.staircase = rate, steps, staircase

    def __call__(self, t: int) -> float:
        p = t // self.steps if self.staircase else t / self.steps
        return 1.0 / (1.0 + self.rate * p)


def _cosine(optimizer: Optimizer, total: int, *, eta_min: float = 0.0, T_max: int | None = None) -> LRScheduler:
    """lr = η_min + (lr0 − η_min) · ½(1 + cos(π t/T)), T = T_max (default: the run): CosineAnnealingLR."""
    period = _positive_int("T_max", T_max if T_max is not None else total)
    return CosineAnnealingLR(optimizer, T_max=period, eta_min=eta_min)


def _cosine_restarts(optimizer: Optimizer, total: int, *, T_0: int | None = None, T_mult: int = 1,
                     eta_min: float = 0.0) -> LRScheduler:
    """SGDR (Loshchilov & Hutter 2017): lr = η_min + (lr0 − η_min) · ½(1 + cos(π T_cur/T_i)).

    T_cur counts units since the last restart; the first period is T_0 and each next T_i = T_mult · T_{i−1}
    (torch's CosineAnnealingWarmRestarts).
    """
    if T_0 is None:
        raise CnnkitError("cosine_restarts needs T_0, the length of the first period (e.g. T_0=10)")
    if not isinstance(T_mult, int) or T_mult < 1:
        raise CnnkitError(f"T_mult must be an integer of at least 1, got {T_mult!r}")
    return CosineAnnealingWarmRestarts(optimizer, T_0=_positive_int("T_0", T_0), T_mult=T_mult, eta_min=eta_min)


def _one_cycle(optimizer: Optimizer, total: int, *, max_lr: float | None = None, pct_start: float = 0.3,
               div_factor: float = 25.0, final_div_factor: float = 1e4, anneal_strategy: str = "cos",
               three_phase: bool = False, cycle_momentum: bool = False) -> LRScheduler:
    """1cycle (Smith 2018), torch's OneCycleLR over T units.

    max_lr: the peak (default lr0); the cycle starts at max_lr / div_factor, rises to max_lr over the first
    pct_start · T units and anneals (cosine, or `anneal_strategy="linear"`) to
    max_lr / (div_factor · final_div_factor). cycle_momentum (off by default, so only the learning rate
    changes) also cycles the momentum inversely between 0.85 and 0.95.
    """
    peaks = [g["lr"] for g in optimizer.param_groups] if max_lr is None else max_lr
    return OneCycleLR(optimizer, max_lr=peaks, total_steps=total, pct_start=pct_start, div_factor=div_factor,
                      final_div_factor=final_div_factor, anneal_strategy=anneal_strategy, three_phase=three_phase,
                      cycle_momentum=cycle_momentum)


def _reduce_on_plateau(optimizer: Optimizer, total: int, *, mode: str = "min", factor: float = 0.1,
                       patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                       cooldown: int = 0, min_lr: float = 0.0) -> ReduceLROnPlateau:
    """lr ← max(lr · factor, min_lr) when the metric has not improved (by `threshold`, in `mode` 'min' or 'max')
    for more than `patience` epochs, then waits `cooldown` epochs: torch's ReduceLROnPlateau.
    """
    return ReduceLROnPlateau(optimizer, mode=mode, factor=factor, patience=patience, threshold=threshold,
                             threshold_mode=threshold_mode, cooldown=cooldown, min_lr=min_lr)


# What a run's schedule counts unless --schedule-interval says otherwise (docs/training.md has the table): the
# schedules whose options count time (step_size, tau, T_0, γ per unit) count epochs, as the notes do; those that
# shape the whole run smoothly (cosine, one_cycle) or follow Keras' per-iteration `decay` count optimiser steps.
DEFAULT_INTERVALS = {
    "constant": "epoch", "none": "epoch", "step_decay": "epoch", "linear_decay": "epoch", "exponential": "epoch",
    "cosine_restarts": "epoch", "reduce_on_plateau": "epoch",
    "cosine": "batch", "one_cycle": "batch", "decay": "batch",
}

SCHEDULES: dict[str, Callable[..., Any]] = {
    "constant": _constant,
    "none": _constant,
    "step_decay": _step_decay,
    "linear_decay": _linear_decay,
    "exponential": _exponential,
    "decay": _inverse_time,
    "cosine": _cosine,
    "cosine_restarts": _cosine_restarts,
    "one_cycle": _one_cycle,
    "reduce_on_plateau": _reduce_on_plateau,
}


def list_schedules() -> list[str]:
    """The schedule names `get` accepts, sorted."""
    return sorted(SCHEDULES)


class _WarmupThenPlateau:
    """A linear warm-up over `warmup` epochs, then ReduceLROnPlateau (SequentialLR cannot pass a metric)."""

    def __init__(self, warmup: LinearLR, plateau: ReduceLROnPlateau, length: int):
        self.warmup, self.plateau, self.length, self.t = warmup, plateau, length, 0

    def step(self, metric: float) -> None:
        self.t += 1
        if self.t <= self.length:
            self.warmup.step()
        else:
            self.plateau.step(metric)

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "warmup": self.warmup.state_dict(), "plateau": self.plateau.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t = state["t"]
        self.warmup.load_state_dict(state["warmup"])
        self.plateau.load_state_dict(state["plateau"])


class Schedule:
    """A named learning-rate schedule. The trainer calls `step()` once per `interval` ('epoch' or 'batch');
    reduce_on_plateau needs `step(metric)` with the monitored value.
    """

    def __init__(self, name: str, scheduler: Any, interval: str, needs_metric: bool = False):
        self.name, self.scheduler, self.interval, self.needs_metric = name, scheduler, interval, needs_metric
        self.optimizer: Optimizer = optimizer_of(scheduler)

    def step(self, metric: float | torch.Tensor | None = None) -> None:
        """Advance one unit of `interval`; `metric` is read by reduce_on_plateau only."""
        if not self.needs_metric:
            self.scheduler.step()
        elif metric is None:
            raise CnnkitError(f"schedule {self.name!r} needs the monitored metric: call step(metric) once per epoch")
        else:
            self.scheduler.step(float(metric))

    def get_last_lr(self) -> list[float]:
        """The current learning rate of each parameter group."""
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name, "interval": self.interval, "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("name", self.name) != self.name or state.get("interval", self.interval) != self.interval:
            raise CnnkitError(f"the saved schedule is {state.get('name')!r} per {state.get('interval')}, "
                              f"not {self.name!r} per {self.interval}")
        self.scheduler.load_state_dict(state["scheduler"])

    def __repr__(self) -> str:
        return f"Schedule({self.name!r}, interval={self.interval!r})"


def optimizer_of(scheduler: Any) -> Optimizer:
    """The optimiser a torch scheduler (or the warm-up + plateau pair) drives."""
    return scheduler.optimizer if hasattr(scheduler, "optimizer") else scheduler.plateau.optimizer


def get(name: str, optimizer: Optimizer, *, steps_per_epoch: int, epochs: int, interval: str = "epoch",
        warmup: int = 0, start_factor: float = 0.1, **options: Any) -> Schedule:
    """The schedule `name` for a run of `epochs` × `steps_per_epoch`, stepped per `interval`.

    `warmup` units (of the interval) of linear warm-up from lr0 · start_factor to lr0 come first; the named
    schedule then runs with t − warmup over the remaining T units. `options` go to the schedule (see the
    module docstring); an unknown or invalid option raises CnnkitError. A config's schedule_options must pass
    `check_options` first: one that repeats a keyword of this function (interval, warmup, epochs, ...) is a
    TypeError at the call, which `get` never sees.
    """
    check_options(name, options, reserved=False)
    if interval not in INTERVALS:
        raise unknown_name("schedule interval", interval, INTERVALS)
    _positive_int("steps_per_epoch", steps_per_epoch)
    _positive_int("epochs", epochs)
    total = epochs if interval == "epoch" else epochs * steps_per_epoch
    _check_warmup(name, interval, warmup, start_factor, total)
    builder = SCHEDULES[name]
    try:
        main = builder(optimizer, total - warmup, **options)
        scheduler = _with_warmup(optimizer, main, warmup, start_factor)
    except (TypeError, ValueError) as err:
        raise CnnkitError(f"bad option for schedule {name!r}: {err}") from None
    return Schedule(name, scheduler, interval, needs_metric=name == "reduce_on_plateau")


def _with_warmup(optimizer: Optimizer, main: Any, warmup: int, start_factor: float) -> Any:
    """`main` after a LinearLR warm-up of `warmup` units (SequentialLR), or `main` alone."""
    if warmup == 0:
        return main
    ramp = LinearLR(optimizer, start_factor=start_factor, end_factor=1.0, total_iters=warmup)
    if isinstance(main, ReduceLROnPlateau):
        return _WarmupThenPlateau(ramp, main, warmup)
    return SequentialLR(optimizer, [ramp, main], milestones=[warmup])


def _check_warmup(name: str, interval: str, warmup: int, start_factor: float, total: int) -> None:
    if not isinstance(warmup, int) or warmup < 0:
        raise CnnkitError(f"warmup must be a whole number of {interval}s (0 or more), got {warmup!r}")
    if warmup >= total:
        raise CnnkitError(f"warmup ({warmup} {interval}s) must be shorter than the run ({total} {interval}s)")
    if not 0 < start_factor <= 1:
        raise CnnkitError(f"start_factor must be in (0, 1], got {start_factor}")
    if warmup and name == "one_cycle":
        raise CnnkitError("one_cycle has its own warm-up: set pct_start instead of warmup")
    if name == "reduce_on_plateau" and interval != "epoch":
        raise CnnkitError("reduce_on_plateau is stepped once per epoch with the metric: use interval='epoch'")


# Keywords of `get` that cnnkit's runs set themselves (from train.epochs, the batch count, train.warmup_epochs,
# train.optimizer); a config's schedule_options holding one would end in Python's "got multiple values for
# keyword argument" TypeError at the call, before `get` runs. `interval` is an option (`for_run` takes it out
# of the options and passes it itself), the same as train.schedule_interval (--schedule-interval).
RESERVED = {
    "optimizer": "set train.optimizer (and train.optimizer_options)",
    "steps_per_epoch": "cnnkit counts it from the data and train.batch_size",
    "epochs": "set train.epochs",
    "warmup": "set train.warmup_epochs",
}
COMMON_OPTIONS = ("start_factor", "interval")  # for every schedule: the warm-up's start; epoch | batch


def default_interval(name: str) -> str:
    """What schedule `name` counts in a run unless told otherwise: 'epoch' or 'batch' (DEFAULT_INTERVALS)."""
    if name not in SCHEDULES:
        raise unknown_name("schedule", name, SCHEDULES)
    return DEFAULT_INTERVALS[name]


def run_interval(name: str, interval: str | None = None, options: dict | None = None) -> str:
    """The interval of a run's schedule: `interval` (--schedule-interval), else `options['interval']`, else the
    schedule's default; the two given and different is a one-line error."""
    own = (options or {}).get("interval")
    if interval is not None and own is not None and interval != own:
        raise CnnkitError(f"--schedule-interval {interval} and schedule option interval={own} disagree; give one")
    chosen = interval or own or default_interval(name)
    if chosen not in INTERVALS:
        raise unknown_name("schedule interval", chosen, INTERVALS)
    return chosen


def for_run(name: str, optimizer: Optimizer, *, steps_per_epoch: int, epochs: int, interval: str | None = None,
            warmup_epochs: float = 0.0, options: dict | None = None) -> Schedule:
    """A run's schedule: `get` with the run's interval (`run_interval`) and its warm-up of `warmup_epochs`
    converted to that unit (whole epochs per epoch; rounded to whole batches per batch)."""
    options = dict(options or {})
    check_options(name, options)
    unit = run_interval(name, interval, options)
    options.pop("interval", None)
    if unit == "epoch" and warmup_epochs != int(warmup_epochs):
        raise CnnkitError(f"a warm-up of {warmup_epochs} epochs is not whole epochs, and schedule {name!r} steps per "
                          "epoch; give whole epochs or --schedule-interval batch")
    warmup = int(warmup_epochs) if unit == "epoch" else round(warmup_epochs * steps_per_epoch)
    return get(name, optimizer, steps_per_epoch=steps_per_epoch, epochs=epochs, interval=unit, warmup=warmup,
               **options)


def options_of(name: str) -> list[str]:
    """The options schedule `name` takes (its own, then the warm-up's start_factor)."""
    if name not in SCHEDULES:
        raise unknown_name("schedule", name, SCHEDULES)
    builder = SCHEDULES[name]
    own = [p.name for p in inspect.signature(builder).parameters.values() if p.kind is p.KEYWORD_ONLY]
    return own + list(COMMON_OPTIONS)


def check_options(name: str, options: Any, *, reserved: bool = True) -> None:
    """Refuse, with a one-line CnnkitError, a config's schedule_options that `get` cannot take: not a mapping,
    an unknown schedule, a key cnnkit sets itself (see RESERVED: optimizer, steps_per_epoch, epochs, warmup;
    they are refused, not taken as overrides), or a key the schedule has no option of (naming the valid ones).
    Call it before `get(name, optimizer, ..., **options)`: a reserved key fails at that call as a TypeError
    before `get` can see it. `interval` is an option here (for_run takes it out), epoch or batch.
    """
    allowed = options_of(name)
    if options is None:
        return
    if not isinstance(options, dict):
        raise CnnkitError(f"schedule_options must be a mapping such as {{gamma: 0.5}}, got {options!r}")
    for key in options:
        if reserved and key in RESERVED:
            raise CnnkitError(f"schedule_options cannot set {key!r}: {RESERVED[key]}; remove it from "
                              "schedule_options")
        if key not in allowed:
            close = did_you_mean(str(key), allowed)
            hint = f" ({close[2:]})" if close.startswith("; did you mean") else ""
            own = [k for k in allowed if k not in COMMON_OPTIONS]
            takes = (f"it takes {', '.join(own)} (and start_factor, the warm-up's start; interval)" if own else
                     "it takes no options (only start_factor, the warm-up's start; interval)")
            raise CnnkitError(f"schedule {name!r} has no option {key!r}{hint}; {takes}")


def _positive(what: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise CnnkitError(f"{what} must be a positive number, got {value!r}")
    return float(value)


def _positive_int(what: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CnnkitError(f"{what} must be a positive whole number, got {value!r}")
    return value


def _torch_schedulers(scheduler: Any) -> list[Any]:
    """Every torch scheduler inside `scheduler` (a Schedule, the warm-up + plateau pair, SequentialLR's parts)."""
    if scheduler is None:
        return []
    if isinstance(scheduler, Schedule):
        return _torch_schedulers(scheduler.scheduler)
    if isinstance(scheduler, _WarmupThenPlateau):
        return [scheduler.warmup, scheduler.plateau]
    return [scheduler, *[s for part in getattr(scheduler, "_schedulers", []) for s in _torch_schedulers(part)]]


def scale_lr(optimizer: Optimizer, scheduler: Any, factor: float) -> None:
    """Multiply the learning rate by `factor` now and for the rest of the run: the optimiser's current rates and
    the values the schedule computes them from (base_lrs; OneCycleLR's initial, max and min rates in the groups).
    --on-nan skip halves the rate this way, so the schedule keeps its shape at half the height."""
    for group in optimizer.param_groups:
        for key in ("lr", "initial_lr", "max_lr", "min_lr"):
            if isinstance(group.get(key), float | int) and not isinstance(group.get(key), bool):
                group[key] *= factor
    for part in _torch_schedulers(scheduler):
        if hasattr(part, "base_lrs"):
            part.base_lrs = [base * factor for base in part.base_lrs]
