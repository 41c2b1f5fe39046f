"""Adversarial examples and adversarial training for classifiers.

* `fgsm` — the fast gradient sign method (Goodfellow, Shlens & Szegedy 2015):
  x' = x + ε·sign(∇_x L(f(x), y)), optionally clamped to the valid input range.
* `pgd` — L∞ projected gradient descent (Madry et al. 2018): start at x0 + U(−ε, ε) (if `random_start`),
  repeat x ← Π_{B∞(x0, ε)}(x + α·sign(∇_x L)) and clamp to the range.
* `robust_accuracy` — accuracy of a model on the attacked images of a loader of `Batch`es.
* `adversarial_loss` / `AdversarialTraining` — the mixture objective of Goodfellow et al. 2015,
  α·L(x, y) + (1 − α)·L(x_adv, y), α = 0.5 by default.

Units. Images in cnnkit are normalised, x = (p − mean)/std with pixels p ∈ [0, 1]. Every ε, α and clamp
here is in *normalised* units. `input_range(mean, std)` gives the (lo, hi) bounds of valid inputs and
`pixel_eps(eps, std)` turns a budget in pixel units (e.g. 8/255) into normalised units per channel; both
return (1, C, 1, 1) tensors, which `eps`, `alpha` and `clamp` accept (as well as plain floats).

Attacks run the model in eval mode (batch-norm running statistics, no dropout) and restore each module's
train/eval flag afterwards. Gradients are taken with `torch.autograd.grad` with respect to the input only,
so the parameters' `.grad` fields are left exactly as they were (None stays None). Returned images are
detached.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.tasks.base import Batch

Bound = float | torch.Tensor
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Attack = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]

__all__ = ["input_range", "pixel_eps", "fgsm", "pgd", "robust_accuracy", "adversarial_loss",
           "AdversarialTraining", "evaluating"]


def _channel_tensor(v: Bound | Sequence[float]) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float32)
    return t.reshape(1, -1, 1, 1)


def input_range(mean: Bound | Sequence[float], std: Bound | Sequence[float]) -> tuple[torch.Tensor, torch.Tensor]:
    """The (lo, hi) bounds, each (1, C, 1, 1), of pixels in [0, 1] mapped through (p − mean)/std."""
    mean, std = _channel_tensor(mean), _channel_tensor(std)
    return (0.0 - mean) / std, (1.0 - mean) / std


def pixel_eps(eps: float, std: Bound | Sequence[float]) -> torch.Tensor:
    """A budget of `eps` in pixel units as normalised units per channel: eps/std, shaped (1, C, 1, 1)."""
    return eps / _channel_tensor(std)


@contextmanager
def evaluating(model: nn.Module):
    """Put every module of `model` in eval mode; restore each module's own flag on exit."""
    flags = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def _as(v: Bound, like: torch.Tensor) -> Bound:
    return v.to(device=like.device, dtype=like.dtype) if isinstance(v, torch.Tensor) else v


def _clamp(x: torch.Tensor, clamp: tuple[Bound, Bound] | None) -> torch.Tensor:
    if clamp is None:
        return x
    lo, hi = _as(clamp[0], x), _as(clamp[1], x)
    if isinstance(lo, torch.Tensor) or isinstance(hi, torch.Tensor):
        lo = lo if isinstance(lo, torch.Tensor) else torch.full_like(x, lo)
        hi = hi if isinstance(hi, torch.Tensor) else torch.full_like(x, hi)
        return torch.maximum(torch.minimum(x, hi), lo)
    return x.clamp(lo, hi)


def _input_grad(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, loss_fn: LossFn) -> torch.Tensor:
    """∇_x L(f(x), y), leaving parameter .grad untouched (zeros if the output does not depend on x)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(model(x), targets)
        if not loss.requires_grad:  # e.g. a model with frozen parameters whose output ignores x
            return torch.zeros_like(x)
        (grad,) = torch.autograd.grad(loss, [x], allow_unused=True)
    return torch.zeros_like(x) if grad is None else grad


def fgsm(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, eps: Bound, *,
         loss_fn: LossFn = F.cross_entropy, clamp: tuple[Bound, Bound] | None = None) -> torch.Tensor:
    """Fast gradient sign method: images + eps·sign(∇_x loss_fn(model(images), targets)), then clamped.

    `eps` is a float or a (1, C, 1, 1) tensor in normalised units (see `pixel_eps`); `clamp` is (lo, hi),
    floats or tensors (see `input_range`), or None. Where the gradient is zero the pixel does not move.
    """
    with evaluating(model):
        grad = _input_grad(model, images, targets, loss_fn)
    adv = images.detach() + _as(eps, images) * grad.sign()
    return _clamp(adv, clamp).detach()


def pgd(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, eps: Bound, alpha: Bound, steps: int, *,
        random_start: bool = True, generator: torch.Generator | None = None,
        loss_fn: LossFn = F.cross_entropy, clamp: tuple[Bound, Bound] | None = None) -> torch.Tensor:
    """L∞ projected gradient descent (Madry et al. 2018).

    x0 = images; x = x0 + U(−eps, eps) if `random_start` (drawn from `generator`), clamped; then `steps` times
    x ← clamp(Π_{B∞(x0, eps)}(x + alpha·sign(∇_x L(f(x), y)))). With steps=1, alpha=eps and
    random_start=False this is exactly `fgsm`.
    """
    x0 = images.detach()
    eps_t, alpha_t = _as(eps, x0), _as(alpha, x0)
    lo, hi = x0 - eps_t, x0 + eps_t  # the ε-ball of x0
    x = x0.clone()
    if random_start:
        gen_device = generator.device if generator is not None else x0.device
        u = torch.rand(x0.shape, generator=generator, device=gen_device, dtype=x0.dtype).to(x0.device)
        x = _clamp(x0 + (2 * u - 1) * eps_t, clamp)
    with evaluating(model):
        for _ in range(steps):
            grad = _input_grad(model, x, targets, loss_fn)
            x = x + alpha_t * grad.sign()
            x = torch.maximum(torch.minimum(x, hi), lo)
            x = _clamp(x, clamp)
    return x.detach()


def _correct(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.ndim == 2:  # one-hot / soft rows
        targets = targets.argmax(1)
    return (logits.argmax(1) == targets).sum()


def robust_accuracy(model: nn.Module, loader: Iterable[Batch], attack: Attack) -> float:
    """Accuracy of `model` on `attack(model, images, targets)` over every `Batch` of `loader`.

    `attack` is any callable (model, images, targets) -> images, e.g. `functools.partial(fgsm, eps=0.03)`.
    Batches are moved to the device of the model's first parameter (if any); accuracy is per image.
    """
    params = list(model.parameters())
    device = params[0].device if params else None
    correct, total = 0, 0
    with evaluating(model):
        for batch in loader:
            if device is not None:
                batch = batch.to(device)
            adv = attack(model, batch.images, batch.targets)
            with torch.no_grad():
                correct += int(_correct(model(adv), batch.targets))
            total += len(batch)
    return correct / total if total else float("nan")


def adversarial_loss(model: nn.Module, images: torch.Tensor, targets: torch.Tensor, attack: Attack,
                     alpha: float = 0.5, loss_fn: LossFn = F.cross_entropy) -> torch.Tensor:
    """Goodfellow et al. 2015's adversarial objective: alpha·L(f(x), y) + (1 − alpha)·L(f(x_adv), y).

    x_adv = attack(model, images, targets) is computed in eval mode and treated as a constant (no gradient
    flows through the attack); both forward passes then run in the model's current mode, so the returned
    scalar is ready to back-propagate. alpha=1 is plain training (the attack is skipped); alpha=0 trains on
    adversarial examples only (Madry et al. 2018 with `pgd`). `loss_fn` must reduce to a scalar.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 1.0:
        return loss_fn(model(images), targets)
    adv = attack(model, images, targets).detach()
    if alpha == 0.0:
        return loss_fn(model(adv), targets)
    return alpha * loss_fn(model(images), targets) + (1.0 - alpha) * loss_fn(model(adv), targets)


class AdversarialTraining:
    """The adversarial-training objective as an object a task can hold.

    `AdversarialTraining(attack, alpha=0.5)(model, images, targets, loss_fn)` returns `adversarial_loss(...)`,
    i.e. alpha·L(x) + (1 − alpha)·L(x_adv) (Goodfellow et al. 2015, α = 0.5). `attack` is a callable
    (model, images, targets) -> images, e.g. `functools.partial(pgd, eps=..., alpha=..., steps=7)`.
    """

    def __init__(self, attack: Attack, alpha: float = 0.5):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.attack = attack
        self.alpha = alpha

    def __call__(self, model: nn.Module, images: torch.Tensor, targets: torch.Tensor,
                 loss_fn: LossFn = F.cross_entropy) -> torch.Tensor:
        return adversarial_loss(model, images, targets, self.attack, self.alpha, loss_fn)

    def __repr__(self) -> str:
        return f"AdversarialTraining(attack={self.attack!r}, alpha={self.alpha})"
