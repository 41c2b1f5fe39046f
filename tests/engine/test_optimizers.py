"""cnnkit.engine.optimizers against Keras 3 (torch backend): 20 steps on a quadratic and on a tiny network."""
from __future__ import annotations

import math
import os

os.environ["KERAS_BACKEND"] = "torch"

import numpy as np
import pytest
import torch

from cnnkit.engine import optimizers
from cnnkit.errors import CnnkitError

keras = pytest.importorskip("keras")

STEPS = 20
TINY = 1e-12  # ε for the optimisers whose ε sits differently in torch and Keras (see module notes)


# ---------------------------------------------------------------- problems: loss(list of tensors)

A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 2.0, -0.3], [0.0, -0.3, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
QUAD_INIT = [np.array([0.8, -0.4, 1.5])]


def quadratic(ws: list[torch.Tensor]) -> torch.Tensor:
    """f(w) = ½ wᵀAw − bᵀw."""
    w = ws[0]
    return 0.5 * w @ A @ w - B @ w


_rng = np.random.default_rng(0)
X = torch.tensor(_rng.normal(size=(8, 4)))
Y = torch.tensor(_rng.normal(size=(8, 1)))
NET_INIT = [_rng.normal(scale=0.5, size=(3, 4)), _rng.normal(scale=0.1, size=3),
            _rng.normal(scale=0.5, size=(1, 3)), _rng.normal(scale=0.1, size=1)]


def network(ws: list[torch.Tensor]) -> torch.Tensor:
    """MSE of Linear(4→3) · tanh · Linear(3→1) on fixed data."""
    w1, b1, w2, b2 = ws
    return ((torch.tanh(X @ w1.T + b1) @ w2.T + b2 - Y) ** 2).mean()


PROBLEMS = {"quadratic": (quadratic, QUAD_INIT), "network": (network, NET_INIT)}


def gradients(loss, values: list[np.ndarray]) -> list[torch.Tensor]:
    ws = [torch.tensor(v, requires_grad=True) for v in values]
    return list(torch.autograd.grad(loss(ws), ws))


def run_ours(name: str, problem: str, steps: int = STEPS, **options) -> list[np.ndarray]:
    loss, init = PROBLEMS[problem]
    params = [torch.nn.Parameter(torch.tensor(v)) for v in init]
    opt = optimizers.get(name, params, **options)
    for _ in range(steps):
        opt.zero_grad()
        loss(params).backward()
        opt.step()
    return [p.detach().numpy() for p in params]


def run_keras(opt, problem: str, steps: int = STEPS) -> list[np.ndarray]:
    loss, init = PROBLEMS[problem]
    variables = [keras.Variable(v.copy(), dtype="float64") for v in init]
    for _ in range(steps):
        grads = gradients(loss, [v.value.detach().cpu().numpy() for v in variables])
        opt.apply_gradients(zip(grads, variables))
    return [v.value.detach().cpu().numpy() for v in variables]


# (our name, our options, Keras class name, Keras options); each row runs on both problems.
CASES = [
    ("sgd", {}, "SGD", {}),
    ("sgd", {"lr": 0.05, "momentum": 0.9}, "SGD", {"learning_rate": 0.05, "momentum": 0.9}),
    ("sgd", {"lr": 0.05, "momentum": 0.9, "nesterov": True}, "SGD",
     {"learning_rate": 0.05, "momentum": 0.9, "nesterov": True}),
    # ε outside √ (torch) vs inside (Keras): negligible next to the 0.1 initial accumulator.
    ("adagrad", {}, "Adagrad", {}),
    ("adagrad", {"lr": 0.1}, "Adagrad", {"learning_rate": 0.1}),
    ("adadelta", {}, "Adadelta", {}),
    ("adadelta", {"lr": 1.0}, "Adadelta", {"learning_rate": 1.0}),
    # RMSprop, Adam, Adamax, NAdam: ε placed differently, so both use a negligible ε.
    ("rmsprop", {"lr": 0.01, "eps": TINY}, "RMSprop", {"learning_rate": 0.01, "epsilon": TINY}),
    ("rmsprop", {"lr": 0.01, "eps": TINY, "momentum": 0.5, "centered": True}, "RMSprop",
     {"learning_rate": 0.01, "epsilon": TINY, "momentum": 0.5, "centered": True}),
    ("adam", {"lr": 0.05, "eps": TINY}, "Adam", {"learning_rate": 0.05, "epsilon": TINY}),
    ("adam", {"lr": 0.05, "eps": TINY, "amsgrad": True}, "Adam",
     {"learning_rate": 0.05, "epsilon": TINY, "amsgrad": True}),
    ("adamw", {"lr": 0.05, "eps": TINY}, "AdamW", {"learning_rate": 0.05, "epsilon": TINY}),
    ("adamw", {"lr": 0.05, "eps": TINY, "weight_decay": 0.1}, "AdamW",
     {"learning_rate": 0.05, "epsilon": TINY, "weight_decay": 0.1}),
    ("adamax", {"lr": 0.05, "eps": TINY}, "Adamax", {"learning_rate": 0.05, "epsilon": TINY}),
    # NAdam: Keras' schedule is 0.96^t, i.e. torch's momentum_decay = 1.
    ("nadam", {"lr": 0.05, "eps": TINY, "momentum_decay": 1.0}, "Nadam", {"learning_rate": 0.05, "epsilon": TINY}),
    ("ftrl", {}, "Ftrl", {}),
    ("ftrl", {"lr": 0.1}, "Ftrl", {"learning_rate": 0.1}),
    ("ftrl", {"lr": 0.1, "l1_regularization_strength": 0.05, "l2_regularization_strength": 0.1,
              "l2_shrinkage_regularization_strength": 0.02, "beta": 0.3, "learning_rate_power": -0.6,
              "initial_accumulator_value": 0.2},
     "Ftrl", {"learning_rate": 0.1, "l1_regularization_strength": 0.05, "l2_regularization_strength": 0.1,
              "l2_shrinkage_regularization_strength": 0.02, "beta": 0.3, "learning_rate_power": -0.6,
              "initial_accumulator_value": 0.2}),
]


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name,ours,kname,theirs", CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_matches_keras(problem: str, name: str, ours: dict, kname: str, theirs: dict) -> None:
    got = run_ours(name, problem, **ours)
    want = run_keras(getattr(keras.optimizers, kname)(**theirs), problem)
    moved = max(np.abs(w - w0).max() for w, w0 in zip(got, PROBLEMS[problem][1]))
    assert moved > 1e-5, "the test should move the weights"
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-8)


def test_ftrl_l1_sets_weights_to_exactly_zero() -> None:
    got = run_ours("ftrl", "quadratic", lr=0.1, l1_regularization_strength=100.0)
    assert np.all(got[0] == 0.0)


# ---------------------------------------------------------------- defaults

KERAS_CLASS = {"sgd": "SGD", "adagrad": "Adagrad", "adadelta": "Adadelta", "rmsprop": "RMSprop",
               "adam": "Adam", "adamw": "AdamW", "adamax": "Adamax", "nadam": "Nadam", "ftrl": "Ftrl"}
# our option → Keras config key (betas is split into beta_1, beta_2)
KERAS_KEY = {"eps": "epsilon", "alpha": "rho", "rho": "rho", "momentum": "momentum", "nesterov": "nesterov",
             "centered": "centered", "amsgrad": "amsgrad", "weight_decay": "weight_decay",
             "initial_accumulator_value": "initial_accumulator_value"}


@pytest.mark.parametrize("name", sorted(KERAS_CLASS))
def test_defaults_are_keras_defaults(name: str) -> None:
    _, lr, defaults = optimizers.OPTIMIZERS[name]
    config = getattr(keras.optimizers, KERAS_CLASS[name])().get_config()
    assert lr == pytest.approx(config["learning_rate"])
    for key, value in defaults.items():
        if key == "betas":
            assert value == pytest.approx((config["beta_1"], config["beta_2"]))
        elif key in config or key in KERAS_KEY:
            assert value == pytest.approx(config[KERAS_KEY.get(key, key)]), key


def test_names_and_table() -> None:
    assert optimizers.list_optimizers() == sorted(KERAS_CLASS)
    w = torch.nn.Parameter(torch.zeros(2))
    for name in optimizers.list_optimizers():
        opt = optimizers.get(name, [w])
        assert isinstance(opt, optimizers.OPTIMIZERS[name][0])
        assert opt.param_groups[0]["lr"] == optimizers.OPTIMIZERS[name][1]
    assert optimizers.get("sgd", [w], lr=0.5, weight_decay=0.1).param_groups[0]["weight_decay"] == 0.1


# ---------------------------------------------------------------- by formula, where definitions differ

def hand_steps(update, state: dict, steps: int = 3) -> np.ndarray:
    """Run `update(w, g, t, state) -> w` for `steps` steps on the quadratic (g = Aw − b)."""
    w = QUAD_INIT[0].copy()
    a, b = A.numpy(), B.numpy()
    for t in range(1, steps + 1):
        w = update(w, a @ w - b, t, state)
    return w


def test_adam_default_epsilon_by_formula() -> None:
    """torch: w ← w − η m̂ / (√v̂ + ε) (Keras adds ε to √v, not √v̂)."""
    lr, (b1, b2), eps = 0.05, (0.9, 0.999), 1e-7

    def update(w, g, t, s):
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        m_hat, v_hat = s["m"] / (1 - b1 ** t), s["v"] / (1 - b2 ** t)
        return w - lr * m_hat / (np.sqrt(v_hat) + eps)

    want = hand_steps(update, {"m": 0.0, "v": 0.0})
    np.testing.assert_allclose(run_ours("adam", "quadratic", steps=3, lr=lr), [want], rtol=1e-10)


def test_rmsprop_default_epsilon_by_formula() -> None:
    """torch: w ← w − η g / (√v + ε) (Keras: √(v + ε)); ρ = 0.9 as in Keras (torch's own default is 0.99)."""
    lr, rho, eps = 0.01, 0.9, 1e-7

    def update(w, g, t, s):
        s["v"] = rho * s["v"] + (1 - rho) * g * g
        return w - lr * g / (np.sqrt(s["v"]) + eps)

    want = hand_steps(update, {"v": 0.0})
    np.testing.assert_allclose(run_ours("rmsprop", "quadratic", steps=3, lr=lr), [want], rtol=1e-10)


def test_adagrad_default_epsilon_by_formula() -> None:
    """torch: n ← n + g²; w ← w − η g / (√n + ε), n₀ = 0.1 (Keras: √(n + ε))."""
    lr, eps = 0.1, 1e-7

    def update(w, g, t, s):
        s["n"] = s["n"] + g * g
        return w - lr * g / (np.sqrt(s["n"]) + eps)

    want = hand_steps(update, {"n": 0.1})
    np.testing.assert_allclose(run_ours("adagrad", "quadratic", steps=3, lr=lr), [want], rtol=1e-10)


def test_nadam_default_schedule_by_formula() -> None:
    """Dozat (2016): μ_t = β₁(1 − ½·0.96^(0.004 t)) (Keras: 0.96^t);
    w ← w − η(1−μ_t) g / ((1−Πμ) d) − η μ_{t+1} m / ((1 − Πμ·μ_{t+1}) d), d = √v̂ + ε."""
    lr, (b1, b2), eps, psi = 0.05, (0.9, 0.999), 1e-7, 4e-3

    def mu(t: int) -> float:
        return b1 * (1 - 0.5 * 0.96 ** (t * psi))

    def update(w, g, t, s):
        s["prod"] *= mu(t)
        s["m"] = b1 * s["m"] + (1 - b1) * g
        s["v"] = b2 * s["v"] + (1 - b2) * g * g
        d = np.sqrt(s["v"] / (1 - b2 ** t)) + eps
        return (w - lr * (1 - mu(t)) * g / ((1 - s["prod"]) * d)
                - lr * mu(t + 1) * s["m"] / ((1 - s["prod"] * mu(t + 1)) * d))

    want = hand_steps(update, {"m": 0.0, "v": 0.0, "prod": 1.0})
    # torch keeps Πμ as a float32 tensor, hence 1e-7 (Keras' ψ = 1 differs by ~1e-3 after 3 steps)
    np.testing.assert_allclose(run_ours("nadam", "quadratic", steps=3, lr=lr), [want], rtol=1e-7)


def test_adamw_decay_is_scaled_by_lr() -> None:
    """Zero gradient: AdamW only decays, w ← (1 − ηλ)w per step, as Keras' decoupled weight_decay."""
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = optimizers.get("adamw", [w], lr=0.1, weight_decay=0.5)
    for _ in range(3):
        w.grad = torch.zeros_like(w)
        opt.step()
    np.testing.assert_allclose(w.detach().numpy(), (1 - 0.05) ** 3)
    assert math.isclose(optimizers.OPTIMIZERS["adamw"][2]["weight_decay"], 0.004)


# ---------------------------------------------------------------- errors

def test_unknown_name_suggests() -> None:
    with pytest.raises(CnnkitError, match="did you mean .*'adam'"):
        optimizers.get("adma", [torch.nn.Parameter(torch.zeros(1))])


@pytest.mark.parametrize("name,options", [("sgd", {"lr": -1.0}), ("sgd", {"nesterov": True}),
                                          ("adam", {"bogus": 1}), ("ftrl", {"learning_rate_power": 0.5}),
                                          ("ftrl", {"l1_regularization_strength": -1.0})])
def test_bad_options_are_cnnkit_errors(name: str, options: dict) -> None:
    with pytest.raises(CnnkitError):
        optimizers.get(name, [torch.nn.Parameter(torch.zeros(1))], **options)
