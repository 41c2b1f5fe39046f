"""Learning-rate schedules by name: each one against its formula written out here."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from cnnkit.engine import schedules
from cnnkit.errors import CnnkitError

LR0 = 0.1


def sgd(lr: float = LR0, groups: int = 1) -> torch.optim.Optimizer:
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr * (i + 1)} for i in range(groups)]
    return torch.optim.SGD(params, lr=lr)


def advance(schedule: schedules.Schedule, metric=None) -> None:
    """One optimiser step, then one schedule step (the trainer's order; no torch warning)."""
    schedule.optimizer.step()
    schedule.step(metric)


def lrs(schedule: schedules.Schedule, n: int, metric=None) -> list[float]:
    """The first group's learning rate at t = 0 .. n: lrs[t] is the rate after t calls of step()."""
    out = [schedule.get_last_lr()[0]]
    for _ in range(n):
        advance(schedule, metric)
        out.append(schedule.get_last_lr()[0])
    return out


def approx(x: float):
    return pytest.approx(x, rel=1e-12, abs=1e-15)


def cosine(t: float, T: float, lr0: float = LR0, eta_min: float = 0.0) -> float:
    return eta_min + (lr0 - eta_min) * 0.5 * (1 + math.cos(math.pi * t / T))


def test_names_and_interval():
    assert schedules.list_schedules() == sorted(schedules.SCHEDULES)
    for name in ("step_decay", "linear_decay", "exponential", "cosine", "cosine_restarts", "one_cycle",
                 "reduce_on_plateau", "constant", "none"):
        assert name in schedules.SCHEDULES
    s = schedules.get("cosine", sgd(), steps_per_epoch=4, epochs=3, interval="batch")
    assert s.interval == "batch"
    assert schedules.get("cosine", sgd(), steps_per_epoch=4, epochs=3).interval == "epoch"


@pytest.mark.parametrize("name", ["constant", "none"])
def test_constant(name):
    assert lrs(schedules.get(name, sgd(), steps_per_epoch=3, epochs=4), 6) == [LR0] * 7


def test_step_decay_per_epoch():
    seq = lrs(schedules.get("step_decay", sgd(), steps_per_epoch=7, epochs=12, gamma=0.5, step_size=3), 11)
    for t in (0, 1, 2, 3, 5, 6, 9, 11):
        assert seq[t] == approx(LR0 * 0.5 ** (t // 3))


def test_step_decay_per_batch():
    s = schedules.get("step_decay", sgd(), steps_per_epoch=4, epochs=3, interval="batch", step_size=5)
    seq = lrs(s, 12)  # default gamma 0.1; t counts batches
    for t in (0, 1, 4, 5, 9, 10, 12):
        assert seq[t] == approx(LR0 * 0.1 ** (t // 5))


def notes_linear(k: int, eps0: float, eps_tau: float, tau: int) -> float:
    """ε_k = (1 − α) ε_0 + α ε_τ with α = k/τ, and ε_τ after τ."""
    if k > tau:
        return eps_tau
    alpha = k / tau
    return (1 - alpha) * eps0 + alpha * eps_tau


def test_linear_decay_matches_the_notes():
    tau = 5
    seq = lrs(schedules.get("linear_decay", sgd(), steps_per_epoch=2, epochs=10, tau=tau, final_lr=0.004), 10)
    for k in (0, 1, 3, tau, tau + 3, 10):
        assert seq[k] == approx(notes_linear(k, LR0, 0.004, tau))


def test_linear_decay_defaults_per_batch_and_groups():
    # τ defaults to the whole run (here 3 · 4 batches) and ε_τ to 1% of ε_0, per parameter group
    opt = sgd(groups=2)
    s = schedules.get("linear_decay", opt, steps_per_epoch=4, epochs=3, interval="batch")
    seq = [s.get_last_lr()]
    for _ in range(14):
        advance(s)
        seq.append(s.get_last_lr())
    for k in (0, 1, 5, 12, 14):
        for g, eps0 in enumerate((LR0, 2 * LR0)):
            assert seq[k][g] == approx(notes_linear(k, eps0, 0.01 * eps0, 12))
    # an absolute final_lr is the same ε_τ for every group
    opt = sgd(groups=2)
    s = schedules.get("linear_decay", opt, steps_per_epoch=4, epochs=3, tau=2, final_factor=None, final_lr=0.01)
    for _ in range(3):
        advance(s)
    assert s.get_last_lr() == [approx(0.01), approx(0.01)]


def test_exponential():
    seq = lrs(schedules.get("exponential", sgd(), steps_per_epoch=3, epochs=10, gamma=0.8), 9)
    for t in (0, 1, 5, 9):
        assert seq[t] == approx(LR0 * 0.8 ** t)


def test_cosine_per_epoch_and_per_batch():
    seq = lrs(schedules.get("cosine", sgd(), steps_per_epoch=3, epochs=10, eta_min=0.001), 10)
    for t in (0, 1, 5, 9, 10):
        assert seq[t] == approx(cosine(t, 10, eta_min=0.001))
    seq = lrs(schedules.get("cosine", sgd(), steps_per_epoch=3, epochs=4, interval="batch"), 12)
    for t in (0, 1, 6, 11, 12):
        assert seq[t] == approx(cosine(t, 12))
    assert seq[6] == approx(LR0 / 2)


def test_warmup_then_cosine():
    w, s0, T = 3, 0.1, 10
    seq = lrs(schedules.get("cosine", sgd(), steps_per_epoch=5, epochs=w + T, warmup=w, start_factor=s0), w + T)
    for t in range(w + 1):
        assert seq[t] == approx(LR0 * (s0 + (1 - s0) * t / w))
    for t in (w, w + 1, w + 5, w + T - 1, w + T):
        assert seq[t] == approx(cosine(t - w, T))


def test_warmup_per_batch_then_step_decay():
    s = schedules.get("step_decay", sgd(), steps_per_epoch=4, epochs=3, interval="batch", warmup=4, step_size=3,
                      gamma=0.5)
    seq = lrs(s, 12)
    assert seq[0] == approx(LR0 * 0.1) and seq[2] == approx(LR0 * (0.1 + 0.9 * 2 / 4))
    for t in (4, 5, 7, 10, 12):
        assert seq[t] == approx(LR0 * 0.5 ** ((t - 4) // 3))


def test_cosine_restarts_periods_double():
    # T_0 = 2, T_mult = 2: periods of 2, 4, 8 units, restarting at t = 2, 6, 14
    seq = lrs(schedules.get("cosine_restarts", sgd(), steps_per_epoch=1, epochs=20, T_0=2, T_mult=2,
                            eta_min=0.001), 16)
    start, period = 0, 2
    for t in range(17):
        if t - start >= period:
            start, period = start + period, period * 2
        assert seq[t] == approx(cosine(t - start, period, eta_min=0.001)), t
    for restart in (0, 2, 6, 14):
        assert seq[restart] == approx(LR0)
    assert seq[4] == approx(cosine(2, 4, eta_min=0.001)) and seq[10] == approx(cosine(4, 8, eta_min=0.001))


def test_one_cycle_formula():
    max_lr, pct, div, final_div, total = 0.5, 0.25, 10.0, 100.0, 20

    def expected(t: int) -> float:  # Smith's 1cycle with cosine annealing, as OneCycleLR counts steps
        def anneal(a: float, b: float, p: float) -> float:
            return b + (a - b) / 2 * (1 + math.cos(math.pi * p))
        up = pct * total - 1
        if t <= up:
            return anneal(max_lr / div, max_lr, t / up)
        return anneal(max_lr, max_lr / div / final_div, (t - up) / (total - 1 - up))

    s = schedules.get("one_cycle", sgd(), steps_per_epoch=5, epochs=4, interval="batch", max_lr=max_lr,
                      pct_start=pct, div_factor=div, final_div_factor=final_div)
    seq = lrs(s, total - 1)
    for t in (0, 1, 4, 10, 19):
        assert seq[t] == approx(expected(t))
    assert seq[0] == approx(0.05) and seq[4] == approx(max_lr) and seq[19] == approx(5e-4)


def test_reduce_on_plateau_after_patience_bad_epochs():
    s = schedules.get("reduce_on_plateau", sgd(), steps_per_epoch=5, epochs=20, patience=2, factor=0.5)
    assert lrs(s, 3, metric=1.0) == [LR0] * 4  # first epoch sets the best, then 2 bad epochs: no change yet
    advance(s, 1.0)  # the third bad epoch in a row (> patience) lowers it
    assert s.get_last_lr() == [approx(LR0 * 0.5)]
    improving = schedules.get("reduce_on_plateau", sgd(), steps_per_epoch=5, epochs=20, patience=0)
    for m in (5.0, 4.0, 3.0, 2.0):
        advance(improving, m)
    assert improving.get_last_lr() == [LR0]
    with pytest.raises(CnnkitError, match="metric"):
        advance(improving)


def test_reduce_on_plateau_mode_max_min_lr_and_warmup():
    s = schedules.get("reduce_on_plateau", sgd(), steps_per_epoch=1, epochs=20, mode="max", patience=0,
                      factor=0.1, min_lr=0.002, warmup=2)
    assert lrs(s, 2, metric=0.9) == [approx(LR0 * 0.1), approx(LR0 * 0.55), approx(LR0)]
    advance(s, 0.9)  # first epoch after warm-up: the best so far
    advance(s, 0.8)  # worse in mode max
    assert s.get_last_lr() == [approx(0.01)]
    advance(s, 0.7)
    assert s.get_last_lr() == [approx(0.002)]  # floored at min_lr


RESUMABLE = [
    ("cosine", {"warmup": 2}),
    ("step_decay", {"step_size": 2, "gamma": 0.5}),
    ("linear_decay", {"tau": 6}),
    ("exponential", {"gamma": 0.9}),
    ("cosine_restarts", {"T_0": 2, "T_mult": 2}),
    ("one_cycle", {}),
    ("reduce_on_plateau", {"patience": 1, "warmup": 1}),
    ("constant", {"warmup": 3}),
]


@pytest.mark.parametrize("name,options", RESUMABLE, ids=[n for n, _ in RESUMABLE])
def test_state_dict_round_trip_resumes(name, options):
    def make():
        opt = sgd()
        return opt, schedules.get(name, opt, steps_per_epoch=2, epochs=12, **options)

    metrics = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0, 1.5, 1.6, 1.7, 1.8, 1.9]
    full = [make()[1].get_last_lr()[0]]
    _, s = make()
    for m in metrics:
        advance(s, m)
        full.append(s.get_last_lr()[0])

    opt, s = make()
    for m in metrics[:4]:
        advance(s, m)
    saved = copy.deepcopy({"optimizer": opt.state_dict(), "scheduler": s.state_dict()})
    opt, s = make()  # a fresh run, as the trainer does on resume
    opt.load_state_dict(saved["optimizer"])
    s.load_state_dict(saved["scheduler"])
    resumed = [s.get_last_lr()[0]]
    for m in metrics[4:]:
        advance(s, m)
        resumed.append(s.get_last_lr()[0])
    assert resumed == [approx(x) for x in full[4:]]


def test_load_state_dict_of_another_schedule_is_refused():
    state = schedules.get("cosine", sgd(), steps_per_epoch=2, epochs=5).state_dict()
    with pytest.raises(CnnkitError, match="saved schedule"):
        schedules.get("exponential", sgd(), steps_per_epoch=2, epochs=5).load_state_dict(state)


def test_unknown_name_did_you_mean():
    with pytest.raises(CnnkitError, match="did you mean 'cosine'"):
        schedules.get("cosin", sgd(), steps_per_epoch=2, epochs=5)
    with pytest.raises(CnnkitError, match="did you mean 'batch'"):
        schedules.get("cosine", sgd(), steps_per_epoch=2, epochs=5, interval="batches")


@pytest.mark.parametrize("name,kwargs,message", [
    ("cosine", {"gamma": 0.5}, "no option 'gamma'"),
    ("constant", {"tau": 3}, "no options"),
    ("step_decay", {"gamma": -1.0}, "gamma must be a positive"),
    ("step_decay", {"step_size": 0}, "step_size"),
    ("exponential", {"gamma": 0}, "gamma"),
    ("linear_decay", {"final_lr": 0.01, "final_factor": 0.1}, "not both"),
    ("linear_decay", {"tau": 2.5}, "tau"),
    ("cosine_restarts", {}, "needs T_0"),
    ("cosine_restarts", {"T_0": 2, "T_mult": 1.5}, "T_mult"),
    ("one_cycle", {"warmup": 2}, "pct_start"),
    ("one_cycle", {"pct_start": 2.0}, "bad option"),
    ("reduce_on_plateau", {"mode": "sideways"}, "bad option"),
    ("reduce_on_plateau", {"interval": "batch"}, "interval='epoch'"),
    ("cosine", {"warmup": 5}, "shorter than the run"),
    ("cosine", {"warmup": -1}, "warmup"),
    ("cosine", {"warmup": 1, "start_factor": 0.0}, "start_factor"),
    ("cosine", {"epochs": 0}, "epochs"),
    ("cosine", {"steps_per_epoch": 0}, "steps_per_epoch"),
])
def test_bad_options(name, kwargs, message):
    kwargs = {"steps_per_epoch": 2, "epochs": 5, **kwargs}
    with pytest.raises(CnnkitError, match=message):
        schedules.get(name, sgd(), **kwargs)


@pytest.mark.parametrize("key", ["warmup", "epochs", "steps_per_epoch", "optimizer"])
def test_check_options_refuses_the_keys_cnnkit_sets(key):
    with pytest.raises(CnnkitError, match=f"schedule_options cannot set '{key}'") as info:
        schedules.check_options("step_decay", {key: "epoch", "gamma": 0.5})
    assert "\n" not in str(info.value) and "remove it" in str(info.value)


def test_a_reserved_key_would_otherwise_be_a_traceback_at_the_call():
    """Why check_options exists: the runs' call repeats the keyword before `get` can see it."""
    options = {"epochs": 3}
    with pytest.raises(TypeError, match="multiple values"):
        schedules.get("cosine", sgd(), steps_per_epoch=2, epochs=5, **options)
    with pytest.raises(CnnkitError, match="set train.epochs"):
        schedules.check_options("cosine", options)


def test_interval_in_the_options_is_the_runs_interval_not_a_collision():
    """schedule_options {interval: batch} used to repeat the keyword that the run passes itself."""
    s = schedules.for_run("step_decay", sgd(), steps_per_epoch=4, epochs=3, options={"interval": "batch",
                                                                                    "step_size": 5})
    assert s.interval == "batch"
    seq = lrs(s, 10)
    assert seq[4] == approx(LR0) and seq[5] == approx(LR0 * 0.1)  # t counts batches
    with pytest.raises(CnnkitError, match="disagree"):
        schedules.for_run("cosine", sgd(), steps_per_epoch=4, epochs=3, interval="epoch",
                          options={"interval": "batch"})
    with pytest.raises(CnnkitError, match="did you mean 'epoch'"):
        schedules.for_run("cosine", sgd(), steps_per_epoch=4, epochs=3, options={"interval": "epochs"})


@pytest.mark.parametrize("name", sorted(schedules.SCHEDULES))
def test_every_schedule_has_a_default_interval_that_the_interval_switches(name):
    """Each schedule counts its documented default (docs/training.md) and the other unit when told."""
    expected = "batch" if name in ("cosine", "one_cycle", "decay") else "epoch"
    options = {"T_0": 2} if name == "cosine_restarts" else {}
    assert schedules.default_interval(name) == expected
    assert schedules.for_run(name, sgd(), steps_per_epoch=3, epochs=4, options=options).interval == expected
    other = "batch" if expected == "epoch" else "epoch"
    if name == "reduce_on_plateau":  # needs the epoch's metric: the switch is refused in one line
        with pytest.raises(CnnkitError, match="interval='epoch'"):
            schedules.for_run(name, sgd(), steps_per_epoch=3, epochs=4, interval=other)
        return
    switched = schedules.for_run(name, sgd(), steps_per_epoch=3, epochs=4, interval=other, options=options)
    assert switched.interval == other


def test_step_decay_counts_epochs_in_a_run_by_default():
    s = schedules.for_run("step_decay", sgd(), steps_per_epoch=50, epochs=7, options={"step_size": 3, "gamma": 0.5})
    assert lrs(s, 6) == [approx(LR0 * 0.5 ** (t // 3)) for t in range(7)]


def test_warmup_epochs_in_the_runs_unit():
    s = schedules.for_run("cosine", sgd(), steps_per_epoch=4, epochs=3, warmup_epochs=0.5)  # 2 batches
    assert lrs(s, 2) == [approx(LR0 * 0.1), approx(LR0 * 0.55), approx(LR0)]
    s = schedules.for_run("step_decay", sgd(), steps_per_epoch=4, epochs=5, warmup_epochs=1, options={"step_size": 2})
    assert lrs(s, 3)[:2] == [approx(LR0 * 0.1), approx(LR0)]  # one epoch of warm-up
    with pytest.raises(CnnkitError, match="not whole epochs"):
        schedules.for_run("step_decay", sgd(), steps_per_epoch=4, epochs=5, warmup_epochs=0.5)


@pytest.mark.parametrize("rate,steps,staircase", [(0.5, 1, False), (0.3, 4, False), (0.3, 4, True)])
def test_decay_is_keras_inverse_time_decay(rate, steps, staircase):
    """Keras' InverseTimeDecay: lr0 / (1 + decay_rate · step / decay_steps), floor with staircase."""
    s = schedules.get("decay", sgd(), steps_per_epoch=5, epochs=4, interval="batch", decay_rate=rate,
                      decay_steps=steps, staircase=staircase)
    for t, lr in enumerate(lrs(s, 19)):
        p = t // steps if staircase else t / steps
        assert lr == approx(LR0 / (1 + rate * p))


def test_decay_defaults_to_a_tenth_at_the_end():
    s = schedules.get("decay", sgd(), steps_per_epoch=5, epochs=4, interval="batch")
    assert lrs(s, 20)[-1] == approx(LR0 / 10)
    with pytest.raises(CnnkitError, match="decay_rate"):
        schedules.get("decay", sgd(), steps_per_epoch=5, epochs=4, decay_rate=-1.0)
    state = copy.deepcopy(s.state_dict())  # the factor is a class: the state copies and pickles
    assert state["name"] == "decay"


@pytest.mark.parametrize("name,options,parts", [
    ("step_decay", {"gama": 0.5}, ["no option 'gama'", "did you mean 'gamma'", "gamma, step_size"]),
    ("cosine", {"gamma": 0.5}, ["no option 'gamma'", "eta_min, T_max"]),
    ("constant", {"tau": 3}, ["no options"]),
    ("cosnie", {}, ["unknown schedule 'cosnie'", "did you mean 'cosine'"]),
    ("cosine", ["T_max", 3], ["must be a mapping"]),
])
def test_check_options_names_the_valid_options(name, options, parts):
    with pytest.raises(CnnkitError) as info:
        schedules.check_options(name, options)
    message = str(info.value)
    assert "\n" not in message and all(p in message for p in parts), message


def test_check_options_accepts_the_valid_ones_and_get_agrees():
    for name, options in [("step_decay", {"gamma": 0.5, "step_size": 2}), ("cosine", {}), ("cosine", None),
                          ("cosine", {"eta_min": 0.01, "start_factor": 0.5}), ("reduce_on_plateau", {"patience": 1})]:
        schedules.check_options(name, options)
        schedules.get(name, sgd(), steps_per_epoch=2, epochs=5, **(options or {}))
    with pytest.raises(CnnkitError, match="did you mean 'gamma'"):  # get itself: a one-liner, not a TypeError
        schedules.get("step_decay", sgd(), steps_per_epoch=2, epochs=5, gama=0.5)


@pytest.mark.parametrize(("name", "warmup"), [("one_cycle", 0), ("cosine", 3), ("step_decay", 0), ("linear_decay", 2),
                                              ("reduce_on_plateau", 2)])
def test_scale_lr_halves_the_rest_of_the_schedule(name: str, warmup: int) -> None:
    """--on-nan skip's halving: from the moment it happens, every rate is half the unscaled twin's."""
    from cnnkit.engine.schedules import scale_lr

    def make():
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.4)
        return opt, schedules.get(name, opt, steps_per_epoch=4, epochs=5, interval="batch" if name == "one_cycle"
                                  else "epoch", warmup=warmup)

    (opt_a, a), (opt_b, b) = make(), make()
    for t in range(12 if name == "one_cycle" else 8):
        if t == 2:
            scale_lr(opt_b, b, 0.5)
        assert opt_b.param_groups[0]["lr"] == pytest.approx(opt_a.param_groups[0]["lr"] * (0.5 if t >= 2 else 1))
        for opt in (opt_a, opt_b):
            opt.step()
        a.step(1.0)
        b.step(1.0)
