"""Losses by name, in PyTorch's calling order, with the formulas of Keras 3.

Every loss is an ``nn.Module`` called as ``loss(prediction, target, sample_weight=None)``.
It first computes element losses (one per sample and position; the class axis, dim 1,
is already reduced for the classification losses), averages them over all non-batch
dims into per-sample values ``l_i`` of shape (N,), multiplies by ``sample_weight`` (N,),
and then reduces:

    reduction="mean":  (1/N) Σ_i w_i l_i      (Keras' "sum_over_batch_size")
    reduction="sum":   Σ_i w_i l_i
    reduction="none":  (w_i l_i)_i, shape (N,)

Classes live on dim 1 (PyTorch), so segmentation logits (N, K, H, W) with integer
targets (N, H, W) work and the per-sample value is the mean over pixels.

Defaults differ from Keras in one place: ``from_logits=True`` for the cross-entropies
and focal (the PyTorch habit: models end in raw scores); Keras defaults to False.
Probabilities (``from_logits=False``) are clipped to [ε, 1 − ε] with ε = 1e-7, as Keras does.

``class_weight`` (a tensor of K) is taken by the classification losses. Binary losses
(binary_crossentropy, binary focal, hinge, squared_hinge) take K = 2: the weight of
target 0 and of target 1, applied as w_0 (1 − y) + w_1 y per element.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkit.errors import CnnkitError, unknown_name

EPSILON = 1e-7
REDUCTIONS = ("mean", "sum", "none")


def _as_weight(class_weight: Tensor | Sequence[float] | None) -> Tensor | None:
    if class_weight is None:
        return None
    weight = torch.as_tensor(class_weight, dtype=torch.get_default_dtype())
    if weight.dim() != 1:
        raise CnnkitError(f"class_weight must be a 1-d tensor of K weights, got shape {tuple(weight.shape)}")
    return weight


def _binary_weight(weight: Tensor, target: Tensor) -> Tensor:
    """w_0 (1 − y) + w_1 y for targets y in [0, 1] (hinge labels −1 are mapped to 0)."""
    if weight.numel() != 2:
        raise CnnkitError(f"class_weight for a binary loss needs 2 weights (target 0, target 1), got {weight.numel()}")
    y = target.clamp(0, 1)
    return weight[0] * (1 - y) + weight[1] * y


def _check_sparse(prediction: Tensor, target: Tensor, name: str) -> None:
    if prediction.dim() != target.dim() + 1:
        raise CnnkitError(
            f"{name} needs logits (N, K, ...) and integer targets (N, ...), "
            f"got {tuple(prediction.shape)} and {tuple(target.shape)}"
        )


def _check_same(prediction: Tensor, target: Tensor, name: str) -> None:
    if prediction.shape != target.shape:
        raise CnnkitError(
            f"{name} needs prediction and target of the same shape, got {tuple(prediction.shape)} and "
            f"{tuple(target.shape)}"
        )


def _clip(p: Tensor) -> Tensor:
    return p.clamp(EPSILON, 1 - EPSILON)


def _log_probs(prediction: Tensor, from_logits: bool) -> Tensor:
    """log p over dim 1: log_softmax of logits, or log of renormalized, clipped probabilities (Keras)."""
    if from_logits:
        return F.log_softmax(prediction, dim=1)
    return torch.log(_clip(prediction / prediction.sum(dim=1, keepdim=True)))


def _per_class(weight: Tensor, like: Tensor) -> Tensor:
    """Class weights shaped (1, K, 1, ...) to broadcast over dim 1 of `like`."""
    if weight.numel() != like.shape[1]:
        raise CnnkitError(f"class_weight has {weight.numel()} weights but the prediction has {like.shape[1]} classes")
    return weight.to(like).view(1, -1, *([1] * (like.dim() - 2)))


class Loss(nn.Module):
    """Base: subclasses define ``elements(prediction, target) -> (N, ...)`` element losses."""

    name = "loss"
    takes_class_weight = False

    def __init__(self, reduction: str = "mean", class_weight: Tensor | Sequence[float] | None = None) -> None:
        super().__init__()
        if reduction not in REDUCTIONS:
            raise unknown_name("reduction", reduction, REDUCTIONS)
        weight = _as_weight(class_weight)
        if weight is not None and not self.takes_class_weight:
            raise CnnkitError(f"loss {self.name!r} does not take class_weight")
        self.reduction = reduction
        self.register_buffer("class_weight", weight, persistent=False)

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, prediction: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        values = self.elements(prediction, target)
        per_sample = values.reshape(values.shape[0], -1).mean(dim=1) if values.dim() > 1 else values
        if sample_weight is not None:
            per_sample = per_sample * torch.as_tensor(sample_weight).to(per_sample).reshape(-1)
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


# --- probabilistic -------------------------------------------------------------------------


class BinaryCrossentropy(Loss):
    """ℓ = −w(y) [y log p + (1 − y) log(1 − p)], p = σ(x) (from_logits) or clip(x, ε, 1 − ε);
    label smoothing: y ← y (1 − s) + s / 2. class_weight: (w_0, w_1)."""

    name = "binary_crossentropy"
    takes_class_weight = True

    def __init__(self, from_logits: bool = True, label_smoothing: float = 0.0, **options) -> None:
        super().__init__(**options)
        self.from_logits, self.label_smoothing = from_logits, label_smoothing

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        y = target.to(prediction.dtype)
        if self.label_smoothing:
            y = y * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        if self.from_logits:
            loss = F.binary_cross_entropy_with_logits(prediction, y, reduction="none")
        else:
            p = _clip(prediction)
            loss = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
        if self.class_weight is not None:
            loss = loss * _binary_weight(self.class_weight.to(loss), target.to(loss))
        return loss


class CategoricalCrossentropy(Loss):
    """ℓ = −Σ_k w_k y_k log p_k over dim 1, targets one-hot or soft (N, K, ...);
    p = softmax(x) or clip(x / Σx, ε, 1 − ε); label smoothing: y ← y (1 − s) + s / K."""

    name = "categorical_crossentropy"
    takes_class_weight = True

    def __init__(self, from_logits: bool = True, label_smoothing: float = 0.0, **options) -> None:
        super().__init__(**options)
        self.from_logits, self.label_smoothing = from_logits, label_smoothing

    def smoothed(self, y: Tensor) -> Tensor:
        s = self.label_smoothing
        return y * (1 - s) + s / y.shape[1] if s else y

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        terms = -self.smoothed(target.to(prediction.dtype)) * _log_probs(prediction, self.from_logits)
        if self.class_weight is not None:
            terms = terms * _per_class(self.class_weight, terms)
        return terms.sum(dim=1)


class SparseCategoricalCrossentropy(CategoricalCrossentropy):
    """Integer targets y (N, ...) for logits (N, K, ...): ℓ = −Σ_k w_k q_k log p_k with
    q = one_hot(y) (1 − s) + s / K; without smoothing ℓ = −w_y log p_y (= F.cross_entropy, reduction="none")."""

    name = "sparse_categorical_crossentropy"

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_sparse(prediction, target, self.name)
        if self.from_logits and not self.label_smoothing:  # the same value in one fused kernel, no one-hot
            weight = None if self.class_weight is None else self.class_weight.to(prediction)
            return F.cross_entropy(prediction, target.long(), weight=weight, reduction="none")
        one_hot = F.one_hot(target.long(), prediction.shape[1]).movedim(-1, 1).to(prediction.dtype)
        return super().elements(prediction, one_hot)


class Poisson(Loss):
    """ℓ = p − y log(p + ε), elementwise."""

    name = "poisson"

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        return prediction - target.to(prediction) * torch.log(prediction + EPSILON)


class KLDivergence(Loss):
    """ℓ = Σ_k y_k log(y_k / p_k) over dim 1, with y, p clipped to [ε, 1]."""

    name = "kl_divergence"

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        y, p = target.to(prediction).clamp(EPSILON, 1), prediction.clamp(EPSILON, 1)
        return (y * torch.log(y / p)).sum(dim=1)


# --- regression ----------------------------------------------------------------------------


class _Elementwise(Loss):
    """Element losses f(p − y) or f(p, y), same shapes."""

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        return self.formula(prediction, target.to(prediction))

    def formula(self, p: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError


class MeanSquaredError(_Elementwise):
    """ℓ = (p − y)²."""

    name = "mse"

    def formula(self, p: Tensor, y: Tensor) -> Tensor:
        return (p - y) ** 2


class MeanAbsoluteError(_Elementwise):
    """ℓ = |p − y|."""

    name = "mae"

    def formula(self, p: Tensor, y: Tensor) -> Tensor:
        return (p - y).abs()


class MeanAbsolutePercentageError(_Elementwise):
    """ℓ = 100 |y − p| / max(|y|, ε)."""

    name = "mape"

    def formula(self, p: Tensor, y: Tensor) -> Tensor:
        return 100 * ((y - p) / y.abs().clamp_min(EPSILON)).abs()


class MeanSquaredLogarithmicError(_Elementwise):
    """ℓ = (log(max(p, ε) + 1) − log(max(y, ε) + 1))²."""

    name = "msle"

    def formula(self, p: Tensor, y: Tensor) -> Tensor:
        return (torch.log1p(p.clamp_min(EPSILON)) - torch.log1p(y.clamp_min(EPSILON))) ** 2


class Huber(_Elementwise):
    """ℓ = ½ e² if |e| ≤ δ else δ |e| − ½ δ², e = p − y."""

    name = "huber"

    def __init__(self, delta: float = 1.0, **options) -> None:
        super().__init__(**options)
        self.delta = delta

    def formula(self, p: Tensor, y: Tensor) -> Tensor:
        e = (p - y).abs()
        return torch.where(e <= self.delta, 0.5 * e**2, self.delta * e - 0.5 * self.delta**2)


class LogCosh(_Elementwise):
    """ℓ = log cosh(e) = e + softplus(−2e) − log 2, e = p − y (stable for large |e|)."""

    name = "log_cosh"

    def formula(self, p: Tensor, y: Tensor) -> Tensor:
        e = p - y
        return e + F.softplus(-2 * e) - math.log(2.0)


class CosineSimilarity(Loss):
    """ℓ = −Σ_k ŷ_k p̂_k over dim 1 with x̂ = x / sqrt(max(Σ x², 1e-12)): −cos, in [−1, 1] (Keras' sign;
    torch's cosine_embedding_loss with label 1 is 1 − cos = ℓ + 1)."""

    name = "cosine_similarity"

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        y = target.to(prediction)
        return -(self.unit(y) * self.unit(prediction)).sum(dim=1)

    @staticmethod
    def unit(x: Tensor) -> Tensor:
        return x * torch.rsqrt((x * x).sum(dim=1, keepdim=True).clamp_min(1e-12))


# --- margin --------------------------------------------------------------------------------


def _hinge_labels(target: Tensor) -> Tensor:
    """Keras: labels all in {0, 1} become {−1, +1}; otherwise used as given."""
    is_binary = bool(((target == 0) | (target == 1)).all())
    return 2 * target - 1 if is_binary else target


class Hinge(Loss):
    """ℓ = w(y) max(0, 1 − y p), y in {−1, +1} ({0, 1} converted). class_weight: (w_−1, w_+1)."""

    name = "hinge"
    takes_class_weight = True
    power = 1

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        y = _hinge_labels(target.to(prediction))
        loss = (1 - y * prediction).clamp_min(0) ** self.power
        if self.class_weight is not None:
            loss = loss * _binary_weight(self.class_weight.to(loss), (y > 0).to(loss))
        return loss


class SquaredHinge(Hinge):
    """ℓ = w(y) max(0, 1 − y p)², y in {−1, +1} ({0, 1} converted)."""

    name = "squared_hinge"
    power = 2


class CategoricalHinge(Loss):
    """Crammer–Singer on one-hot targets: ℓ = w_y max(0, 1 + max_{j≠y} p_j − p_y) over dim 1.

    Keras writes neg = max_j (1 − y_j) p_j, which counts the true class as 0, so it differs
    from this when every wrong score is negative; the two agree whenever max_{j≠y} p_j ≥ 0.
    """

    name = "categorical_hinge"
    takes_class_weight = True

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_same(prediction, target, self.name)
        y = target.to(prediction)
        pos = (y * prediction).sum(dim=1)
        neg = prediction.masked_fill(y != 0, float("-inf")).amax(dim=1)
        loss = (1 + neg - pos).clamp_min(0)
        if self.class_weight is not None:
            loss = loss * (y * _per_class(self.class_weight, y)).sum(dim=1)
        return loss


class MulticlassSVM(Loss):
    """Integer targets: ℓ = w_y Σ_{j≠y} max(0, p_j − p_y + margin) over dim 1
    (= K · F.multi_margin_loss(reduction="none"), which divides by K)."""

    name = "multiclass_svm"
    takes_class_weight = True

    def __init__(self, margin: float = 1.0, **options) -> None:
        super().__init__(**options)
        self.margin = margin

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        _check_sparse(prediction, target, self.name)
        index = target.long().unsqueeze(1)
        score_y = prediction.gather(1, index)
        margins = (prediction - score_y + self.margin).clamp_min(0).scatter(1, index, 0.0)
        loss = margins.sum(dim=1)
        if self.class_weight is not None:
            loss = loss * self.class_weight.to(loss)[target.long()]
        return loss


# --- focal ---------------------------------------------------------------------------------


class Focal(Loss):
    """Focal loss (Lin et al. 2017), FL = −α_t (1 − p_t)^γ log p_t.

    Binary (target same shape as prediction, y in [0, 1]): p_t = y p + (1 − y)(1 − p),
    α_t = α y + (1 − α)(1 − y), p = σ(x) (from_logits) or clip(x, ε, 1 − ε); log p_t is written
    as −BCE, so soft targets give −α_t (1 − p_t)^γ [y log p + (1 − y) log(1 − p)].
    Multi-class (integer targets (N, ...) for logits (N, K, ...)): −α (1 − p_y)^γ log p_y with
    p = softmax over dim 1. alpha=None means α_t = 1; class_weight multiplies by w_(target).
    """

    name = "focal"
    takes_class_weight = True

    def __init__(
        self, gamma: float = 2.0, alpha: float | None = 0.25, from_logits: bool = True, **options
    ) -> None:
        super().__init__(**options)
        self.gamma, self.alpha, self.from_logits = gamma, alpha, from_logits

    def elements(self, prediction: Tensor, target: Tensor) -> Tensor:
        if prediction.dim() == target.dim() + 1 and not target.is_floating_point():
            return self.multiclass(prediction, target)
        _check_same(prediction, target, self.name)
        return self.binary(prediction, target.to(prediction))

    def binary(self, x: Tensor, y: Tensor) -> Tensor:
        if self.from_logits:
            p, bce = torch.sigmoid(x), F.binary_cross_entropy_with_logits(x, y, reduction="none")
        else:
            p = _clip(x)
            bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
        p_t = y * p + (1 - y) * (1 - p)
        loss = (1 - p_t) ** self.gamma * bce
        if self.alpha is not None:
            loss = loss * (self.alpha * y + (1 - self.alpha) * (1 - y))
        if self.class_weight is not None:
            loss = loss * _binary_weight(self.class_weight.to(loss), y)
        return loss

    def multiclass(self, x: Tensor, target: Tensor) -> Tensor:
        index = target.long().unsqueeze(1)
        log_p = _log_probs(x, self.from_logits).gather(1, index).squeeze(1)
        loss = -((1 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * self.alpha
        if self.class_weight is not None:
            loss = loss * _per_class(self.class_weight, x).flatten()[target.long()]
        return loss


# --- registry ------------------------------------------------------------------------------

LOSSES: dict[str, type[Loss]] = {
    "binary_crossentropy": BinaryCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "cross_entropy": SparseCategoricalCrossentropy,
    "poisson": Poisson,
    "kl_divergence": KLDivergence,
    "mse": MeanSquaredError,
    "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError,
    "mape": MeanAbsolutePercentageError,
    "msle": MeanSquaredLogarithmicError,
    "cosine_similarity": CosineSimilarity,
    "huber": Huber,
    "log_cosh": LogCosh,
    "hinge": Hinge,
    "squared_hinge": SquaredHinge,
    "categorical_hinge": CategoricalHinge,
    "multiclass_svm": MulticlassSVM,
    "focal": Focal,
}


def list_losses() -> list[str]:
    """All loss names, aliases included, sorted."""
    return sorted(LOSSES)


def get(name: str, **options) -> Loss:
    """The loss called `name` (see LOSSES), built with `options` (reduction, class_weight, from_logits, ...)."""
    if name not in LOSSES:
        raise unknown_name("loss", name, LOSSES)
    try:
        return LOSSES[name](**options)
    except TypeError as error:
        raise CnnkitError(f"bad option for loss {name!r}: {error}") from None
