"""cnnkit.losses.core against Keras 3 (torch backend) where the definitions agree, else against the formula by hand."""
from __future__ import annotations

import os

os.environ["KERAS_BACKEND"] = "torch"

import pytest
import torch
import torch.nn.functional as F

from cnnkit import losses
from cnnkit.errors import CnnkitError
from cnnkit.losses.core import LOSSES

N, K = 6, 5
RTOL = 1e-5


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logits(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=torch.float64)


def probs(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed), dtype=torch.float64) * 0.9 + 0.05


def labels(*shape: int, k: int = K, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, shape, generator=gen(seed))


def one_hot(y: torch.Tensor, k: int = K) -> torch.Tensor:
    return F.one_hot(y, k).to(torch.float64)


def assert_near(ours: torch.Tensor, expected, rtol: float = RTOL) -> None:
    expected = torch.as_tensor(expected, dtype=torch.float64).cpu()
    torch.testing.assert_close(ours.detach().to(torch.float64).cpu(), expected, rtol=rtol, atol=1e-12)


# (our name, our options, Keras class, Keras options, make (prediction, target))
def _binary(seed: int = 0):
    return logits(N, K, seed=seed), (torch.rand(N, K, generator=gen(seed + 1), dtype=torch.float64) > 0.5).double()


def _binary_probs(seed: int = 0):
    return probs(N, K, seed=seed), (torch.rand(N, K, generator=gen(seed + 1), dtype=torch.float64) > 0.5).double()


def _soft(seed: int = 0):
    return logits(N, K, seed=seed), torch.softmax(logits(N, K, seed=seed + 1), dim=1)


def _dist(seed: int = 0):
    return torch.softmax(logits(N, K, seed=seed), 1), torch.softmax(logits(N, K, seed=seed + 1), 1)


def _sparse(seed: int = 0):
    return logits(N, K, seed=seed), labels(N, seed=seed + 1)


def _regression(seed: int = 0):
    return logits(N, K, seed=seed), logits(N, K, seed=seed + 1)


def _positive(seed: int = 0):
    return probs(N, K, seed=seed) * 3, probs(N, K, seed=seed + 1) * 3


def _pm1(seed: int = 0):
    return logits(N, K, seed=seed), _binary(seed)[1] * 2 - 1


KERAS_CASES = [
    ("binary_crossentropy", {"from_logits": True}, "BinaryCrossentropy", {"from_logits": True}, _binary),
    ("binary_crossentropy", {"from_logits": True, "label_smoothing": 0.2}, "BinaryCrossentropy",
     {"from_logits": True, "label_smoothing": 0.2}, _binary),
    ("binary_crossentropy", {"from_logits": False}, "BinaryCrossentropy", {"from_logits": False}, _binary_probs),
    ("categorical_crossentropy", {"from_logits": True}, "CategoricalCrossentropy", {"from_logits": True}, _soft),
    ("categorical_crossentropy", {"from_logits": True, "label_smoothing": 0.1}, "CategoricalCrossentropy",
     {"from_logits": True, "label_smoothing": 0.1}, _soft),
    ("categorical_crossentropy", {"from_logits": False}, "CategoricalCrossentropy", {"from_logits": False}, _dist),
    ("sparse_categorical_crossentropy", {"from_logits": True}, "SparseCategoricalCrossentropy",
     {"from_logits": True}, _sparse),
    ("cross_entropy", {"from_logits": True}, "SparseCategoricalCrossentropy", {"from_logits": True}, _sparse),
    ("poisson", {}, "Poisson", {}, _positive),
    ("kl_divergence", {}, "KLDivergence", {}, _dist),
    ("mse", {}, "MeanSquaredError", {}, _regression),
    ("mean_squared_error", {}, "MeanSquaredError", {}, _regression),
    ("mae", {}, "MeanAbsoluteError", {}, _regression),
    ("mape", {}, "MeanAbsolutePercentageError", {}, _regression),
    ("msle", {}, "MeanSquaredLogarithmicError", {}, _positive),
    ("cosine_similarity", {}, "CosineSimilarity", {}, _regression),
    ("huber", {}, "Huber", {}, _regression),
    ("huber", {"delta": 0.5}, "Huber", {"delta": 0.5}, _regression),
    ("log_cosh", {}, "LogCosh", {}, _regression),
    ("hinge", {}, "Hinge", {}, _binary),
    ("hinge", {}, "Hinge", {}, _pm1),
    ("squared_hinge", {}, "SquaredHinge", {}, _binary),
    # categorical_hinge agrees with Keras when the best wrong score is >= 0 (probabilities here).
    ("categorical_hinge", {}, "CategoricalHinge", {}, lambda seed=0: (_dist(seed)[0], one_hot(labels(N)))),
]


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras", reason="keras not installed: Keras comparisons skipped")


def keras_value(keras, cls: str, options: dict, prediction, target, sample_weight=None) -> torch.Tensor:
    loss = getattr(keras.losses, cls)(**options, reduction="sum_over_batch_size", dtype="float64")
    numpy = [None if v is None else torch.as_tensor(v).numpy() for v in (target, prediction, sample_weight)]
    value = loss(*numpy[:2], sample_weight=numpy[2])
    return torch.as_tensor(value).detach().cpu()  # the torch backend returns a torch tensor


@pytest.mark.parametrize("name, ours, cls, theirs, make", KERAS_CASES, ids=[c[0] for c in KERAS_CASES])
def test_matches_keras(keras, name, ours, cls, theirs, make) -> None:
    prediction, target = make()
    assert_near(losses.get(name, **ours)(prediction, target), keras_value(keras, cls, theirs, prediction, target))


@pytest.mark.parametrize("name, ours, cls, theirs, make", KERAS_CASES[::3], ids=[c[0] for c in KERAS_CASES[::3]])
def test_sample_weight_matches_keras(keras, name, ours, cls, theirs, make) -> None:
    prediction, target = make(seed=3)
    weight = torch.rand(N, generator=gen(9), dtype=torch.float64) * 2
    ours_value = losses.get(name, **ours)(prediction, target, sample_weight=weight)
    assert_near(ours_value, keras_value(keras, cls, theirs, prediction, target, sample_weight=weight))


def test_per_pixel_matches_keras(keras) -> None:
    """(N, K, H, W) logits, (N, H, W) targets: Keras has classes last, so move the axis for it."""
    x, y = logits(2, K, 3, 4), labels(2, 3, 4)
    expected = keras_value(keras, "SparseCategoricalCrossentropy", {"from_logits": True}, x.movedim(1, -1), y)
    assert_near(losses.get("cross_entropy")(x, y), expected)
    expected = keras_value(keras, "CategoricalCrossentropy", {"from_logits": True}, x.movedim(1, -1),
                           one_hot(y))
    assert_near(losses.get("categorical_crossentropy")(x, one_hot(y).movedim(-1, 1)), expected)


def test_sparse_label_smoothing_matches_keras_and_torch(keras) -> None:
    """Keras' sparse loss has no label_smoothing: compare with its categorical loss on one-hot targets."""
    x, y = _sparse()
    ours = losses.get("sparse_categorical_crossentropy", label_smoothing=0.1)(x, y)
    theirs = {"from_logits": True, "label_smoothing": 0.1}
    assert_near(ours, keras_value(keras, "CategoricalCrossentropy", theirs, x, one_hot(y)))
    assert_near(ours, F.cross_entropy(x, y, label_smoothing=0.1))


def test_focal_multiclass_matches_keras(keras) -> None:
    """Keras' CategoricalFocalCrossentropy clips softmax to [ε, 1-ε]; moderate logits never reach the clip."""
    x, y = _sparse()
    ours = losses.get("focal", gamma=2.0, alpha=0.25, from_logits=True)(x, y)
    theirs = {"gamma": 2.0, "alpha": 0.25, "from_logits": True}
    assert_near(ours, keras_value(keras, "CategoricalFocalCrossentropy", theirs, x, one_hot(y)))


def test_focal_binary_matches_keras(keras) -> None:
    """Keras clips σ(x) before its BCE; for moderate logits that is below the tolerance."""
    x, y = _binary()
    ours = losses.get("focal", gamma=2.0, alpha=0.25, from_logits=True)(x, y)
    theirs = {"gamma": 2.0, "alpha": 0.25, "from_logits": True, "apply_class_balancing": True}
    assert_near(ours, keras_value(keras, "BinaryFocalCrossentropy", theirs, x, y))


# --- against the formula by hand (no torch-agnostic Keras equivalent) -----------------------


def test_probability_clipping_formula() -> None:
    """Probabilities are clipped to [1e-7, 1 - 1e-7] (Keras' ε); torch instead clamps log at -100."""
    p = torch.tensor([[0.0, 1.0, 0.3]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
    eps = 1e-7
    expected = -(torch.log(torch.tensor(eps)) * 2 + torch.log(torch.tensor(0.3))) / 3
    assert_near(losses.get("binary_crossentropy", from_logits=False)(p, y), expected)


def test_cosine_similarity_sign() -> None:
    """Keras' sign: the loss is −cos (−1 when aligned); torch's cosine_embedding_loss(label 1) is 1 − cos."""
    x, t = _regression()
    ours = losses.get("cosine_similarity", reduction="none")(x, t)
    assert_near(ours, -F.cosine_similarity(x, t, dim=1))
    assert_near(ours + 1, F.cosine_embedding_loss(x, t, torch.ones(N), reduction="none"))
    assert_near(losses.get("cosine_similarity")(x, x), -1.0)


def test_categorical_hinge_formula() -> None:
    """Crammer–Singer max(0, 1 + max_{j≠y} f_j − f_y); Keras' max((1−y) f) counts the true class as 0."""
    f = torch.tensor([[-2.0, -3.0, 0.5], [1.0, 2.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    ours = losses.get("categorical_hinge", reduction="none")(f, one_hot(y, 3))
    assert_near(ours, [max(0.0, 1 - 2.0 - 0.5), max(0.0, 1 + 2.0 - 1.0)])  # Keras would give 0.5 for the first


def test_multiclass_svm_formula() -> None:
    """Σ_{j≠y} max(0, f_j − f_y + margin); Keras has no such loss. torch's multi_margin_loss divides by K."""
    f, y = _sparse()
    for margin in (1.0, 0.5):
        ours = losses.get("multiclass_svm", margin=margin, reduction="none")(f, y)
        by_hand = [sum(max(0.0, float(f[i, j] - f[i, y[i]] + margin)) for j in range(K) if j != y[i])
                   for i in range(N)]
        assert_near(ours, by_hand)
        assert_near(ours, K * F.multi_margin_loss(f, y, margin=margin, reduction="none"))
    w = torch.rand(K, generator=gen(4), dtype=torch.float64)
    assert_near(losses.get("multiclass_svm", class_weight=w, reduction="none")(f, y),
          K * F.multi_margin_loss(f, y, weight=w, reduction="none"))


def test_focal_formula() -> None:
    """Lin et al. 2017: −α_t (1 − p_t)^γ log p_t, α_t = α for y = 1 and 1 − α for y = 0."""
    x, y = _binary()
    p = torch.sigmoid(x)
    p_t = torch.where(y == 1, p, 1 - p)
    alpha_t = torch.where(y == 1, 0.25, 0.75)
    expected = (-alpha_t * (1 - p_t) ** 2 * torch.log(p_t)).mean(dim=1)
    assert_near(losses.get("focal", reduction="none")(x, y), expected)
    f, t = _sparse()
    p_y = torch.softmax(f, 1)[torch.arange(N), t]
    assert_near(losses.get("focal", gamma=1.5, alpha=0.5, reduction="none")(f, t),
                -0.5 * (1 - p_y) ** 1.5 * torch.log(p_y))
    assert_near(losses.get("focal", gamma=0.0, alpha=None)(f, t), F.cross_entropy(f, t))


# --- class weights, reductions, errors -------------------------------------------------------


def test_class_weight_sparse_equals_torch_per_sample() -> None:
    x, y = _sparse()
    w = torch.rand(K, generator=gen(5), dtype=torch.float64) + 0.1
    ours = losses.get("sparse_categorical_crossentropy", class_weight=w, reduction="none")(x, y)
    assert_near(ours, F.cross_entropy(x, y, weight=w, reduction="none"))
    smoothed = losses.get("cross_entropy", class_weight=w, label_smoothing=0.2, reduction="none")(x, y)
    assert_near(smoothed, F.cross_entropy(x, y, weight=w, label_smoothing=0.2, reduction="none"))
    soft = torch.softmax(logits(N, K, seed=7), 1)
    assert_near(losses.get("categorical_crossentropy", class_weight=w, reduction="none")(x, soft),
          F.cross_entropy(x, soft, weight=w, reduction="none"))


def test_class_weight_per_pixel() -> None:
    """Dense targets: per-sample value is the mean over pixels of w_y · CE."""
    x, y = logits(2, K, 3, 4), labels(2, 3, 4)
    w = torch.arange(1, K + 1, dtype=torch.float64)
    pixels = F.cross_entropy(x, y, weight=w, reduction="none")
    assert_near(losses.get("cross_entropy", class_weight=w, reduction="none")(x, y), pixels.mean(dim=(1, 2)))
    assert_near(losses.get("cross_entropy", class_weight=w)(x, y), pixels.mean())
    focal = losses.get("focal", class_weight=w, gamma=0.0, alpha=None, reduction="none")(x, y)
    assert_near(focal, pixels.mean(dim=(1, 2)))
    svm = losses.get("multiclass_svm", class_weight=w, reduction="none")(x, y)
    assert_near(svm, (K * F.multi_margin_loss(x.movedim(1, -1).reshape(-1, K), y.reshape(-1), weight=w,
                                       reduction="none")).reshape(2, 12).mean(1))


def test_class_weight_binary() -> None:
    x, y = _binary()
    bce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    ours = losses.get("binary_crossentropy", class_weight=torch.tensor([0.5, 2.0]), reduction="none")(x, y)
    assert_near(ours, (bce * torch.where(y == 1, 2.0, 0.5)).mean(dim=1))


def test_reductions_and_sample_weight() -> None:
    x, t = _regression()
    per_sample = ((x - t) ** 2).mean(dim=1)
    w = torch.linspace(0, 1, N, dtype=torch.float64)
    assert_near(losses.get("mse", reduction="none")(x, t), per_sample)
    assert_near(losses.get("mse", reduction="sum")(x, t), per_sample.sum())
    assert_near(losses.get("mse")(x, t), F.mse_loss(x, t))
    assert_near(losses.get("mse", reduction="sum")(x, t, sample_weight=w), (per_sample * w).sum())
    assert_near(losses.get("huber", delta=0.7)(x, t), F.huber_loss(x, t, delta=0.7))
    assert losses.get("mse", reduction="none")(logits(N, 2, 3), logits(N, 2, 3, seed=2)).shape == (N,)


def test_registry_and_errors() -> None:
    names = losses.list_losses()
    assert {"mse", "mean_squared_error", "cross_entropy", "focal", "multiclass_svm"} <= set(names)
    assert set(names) == set(LOSSES)
    for name in names:
        assert isinstance(losses.get(name), torch.nn.Module)
    with pytest.raises(CnnkitError, match="did you mean 'binary_crossentropy'"):
        losses.get("binary_crossentropi")
    with pytest.raises(CnnkitError, match="reduction"):
        losses.get("mse", reduction="average")
    with pytest.raises(CnnkitError, match="class_weight"):
        losses.get("mse", class_weight=torch.ones(3))
    with pytest.raises(CnnkitError, match="bad option"):
        losses.get("mse", delta=1.0)
    with pytest.raises(CnnkitError, match="same shape"):
        losses.get("mse")(torch.zeros(2, 3), torch.zeros(2, 4))
