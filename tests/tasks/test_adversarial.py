from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.tasks.adversarial import (
    AdversarialTraining,
    adversarial_loss,
    fgsm,
    input_range,
    pgd,
    pixel_eps,
    robust_accuracy,
)
from cnnkit.tasks.base import Batch

C, H, W, K = 3, 4, 4, 5


def _linear(seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(C * H * W, K)).to(dtype)


def _data(n=8, seed=1, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, C, H, W, generator=g, dtype=dtype), torch.randint(0, K, (n,), generator=g)


def test_fgsm_linear_closed_form():
    model = _linear()
    x, y = _data()
    lin = model[1]
    with torch.no_grad():
        flat = x.flatten(1)
        p = torch.softmax(flat @ lin.weight.T + lin.bias, 1)
        grad = (p - F.one_hot(y, K).to(p.dtype)) @ lin.weight  # Wᵀ(softmax(Wx+b) − onehot(y)), per row
        expected = (flat + 0.1 * grad.sign()).reshape_as(x)
    adv = fgsm(model, x, y, 0.1)
    torch.testing.assert_close(adv, expected)
    # no clamp, non-zero gradient everywhere: the perturbation is exactly ε in every pixel
    torch.testing.assert_close((adv - x).abs(), torch.full_like(x, 0.1))
    assert not adv.requires_grad


def test_fgsm_clamp_and_channel_eps():
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    lo, hi = input_range(mean, std)
    assert lo.shape == hi.shape == (1, C, 1, 1)
    torch.testing.assert_close(lo.flatten(), torch.tensor([-2.5, -1.6, -0.6]))
    torch.testing.assert_close(hi.flatten(), torch.tensor([2.5, 2.4, 1.4]))
    eps = pixel_eps(8 / 255, std)
    assert eps.shape == (1, C, 1, 1)
    torch.testing.assert_close(eps.flatten(), (8 / 255) / torch.tensor(std))

    model = _linear(dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(16, C, H, W, generator=g)
    pixels[:, :, 0, 0] = 0.0  # pixels at the range's edges
    pixels[:, :, 0, 1] = 1.0
    x = (pixels - torch.tensor(mean).view(1, C, 1, 1)) / torch.tensor(std).view(1, C, 1, 1)
    y = torch.randint(0, K, (16,), generator=g)
    adv = fgsm(model, x, y, eps, clamp=(lo, hi))
    assert (adv >= lo - 1e-6).all() and (adv <= hi + 1e-6).all()
    assert ((adv - x).abs() <= eps + 1e-6).all()
    unclamped = fgsm(model, x, y, eps)
    assert ((unclamped - x).abs() - eps).abs().max() < 1e-5  # per-channel ε exactly
    assert ((unclamped < lo) | (unclamped > hi)).any()  # so the clamp did something


def test_pgd_ball_range_and_fgsm_equivalence():
    model = _linear()
    x, y = _data(16)
    lo, hi = -1.0, 1.0
    x = x.clamp(lo, hi)
    adv = pgd(model, x, y, 0.2, 0.05, 10, generator=torch.Generator().manual_seed(0), clamp=(lo, hi))
    assert ((adv - x).abs() <= 0.2 + 1e-12).all()
    assert (adv >= lo).all() and (adv <= hi).all()
    one = pgd(model, x, y, 0.2, 0.2, 1, random_start=False)
    torch.testing.assert_close(one, fgsm(model, x, y, 0.2), rtol=0, atol=0)
    clamped = pgd(model, x, y, 0.2, 0.2, 1, random_start=False, clamp=(lo, hi))
    torch.testing.assert_close(clamped, fgsm(model, x, y, 0.2, clamp=(lo, hi)), rtol=0, atol=0)
    # the random start is reproducible from the generator
    a = pgd(model, x, y, 0.2, 0.05, 3, generator=torch.Generator().manual_seed(7))
    b = pgd(model, x, y, 0.2, 0.05, 3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pgd_beats_fgsm_on_trained_model():
    # XOR of two signs: separable, but only by a non-linear model, where one gradient step is not optimal
    torch.manual_seed(0)
    n = 256
    signs = torch.randint(0, 2, (n, 2)).float() * 2 - 1
    y = (signs[:, 0] * signs[:, 1] > 0).long()
    x = signs.view(n, 2, 1, 1) + 0.25 * torch.randn(n, 2, 1, 1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(100):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    with torch.no_grad():
        assert (model(x).argmax(1) == y).float().mean() > 0.95
        clean = F.cross_entropy(model(x), y)
    eps = 0.5
    f = fgsm(model, x, y, eps)
    p = pgd(model, x, y, eps, 0.1, 20, random_start=False)
    r = pgd(model, x, y, eps, 0.1, 20, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        loss_f, loss_p, loss_r = (F.cross_entropy(model(a), y) for a in (f, p, r))
    assert loss_f > clean
    assert loss_p >= loss_f
    assert loss_r >= loss_f


class _Dropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(C * H * W, K).double()
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.lin(self.drop(x.flatten(1)))


@pytest.mark.parametrize("attack", [partial(fgsm, eps=0.1),
                                    partial(pgd, eps=0.1, alpha=0.05, steps=3)])
def test_params_untouched_and_mode_restored(attack):
    model = _Dropout()
    x, y = _data()
    # None grads stay None
    model.train()
    adv1 = attack(model, x, y)
    assert all(p.grad is None for p in model.parameters())
    assert model.training and model.drop.training
    # existing grads stay as they were; a mixed mode is restored module by module
    F.cross_entropy(model(x), y).backward()
    before = [p.grad.clone() for p in model.parameters()]
    model.drop.eval()
    adv2 = attack(model, x, y)
    assert all(torch.equal(p.grad, b) for p, b in zip(model.parameters(), before))
    assert model.training and not model.drop.training
    # the attack ran in eval mode: dropout off, so the result is deterministic (pgd random start aside)
    if attack.func is fgsm:
        torch.testing.assert_close(adv1, adv2, rtol=0, atol=0)


class _Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor([0.0, 2.0, 1.0]))

    def forward(self, x):
        return self.bias.expand(x.shape[0], -1)


def test_robust_accuracy_constant_model_equals_clean():
    model = _Constant()
    g = torch.Generator().manual_seed(0)
    batches = [Batch(torch.randn(n, 1, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g))
               for n in (5, 7, 4)]
    clean = sum(int((b.targets == 1).sum()) for b in batches) / 16
    for attack in (partial(fgsm, eps=1.0), partial(pgd, eps=1.0, alpha=0.5, steps=2)):
        assert robust_accuracy(model, batches, attack) == pytest.approx(clean)
    assert robust_accuracy(model, batches, lambda m, x, y: x) == pytest.approx(clean)
    assert model.training


def test_robust_accuracy_drops_under_attack():
    model = _linear()
    x, y = _data(32)
    with torch.no_grad():
        y = model(x).argmax(1)  # the model is right everywhere on clean inputs
    batches = [Batch(x[:16], y[:16]), Batch(x[16:], y[16:])]
    assert robust_accuracy(model, batches, lambda m, a, b: a) == 1.0
    assert robust_accuracy(model, batches, partial(fgsm, eps=2.0)) < 1.0


def test_adversarial_loss():
    model = _linear()
    x, y = _data()
    attack = partial(fgsm, eps=0.1)
    clean = F.cross_entropy(model(x), y)
    torch.testing.assert_close(adversarial_loss(model, x, y, attack, alpha=1.0), clean)
    adv_only = F.cross_entropy(model(attack(model, x, y)), y)
    torch.testing.assert_close(adversarial_loss(model, x, y, attack, alpha=0.0), adv_only)
    mixed = AdversarialTraining(attack)(model, x, y)
    torch.testing.assert_close(mixed, 0.5 * clean + 0.5 * adv_only)
    assert mixed > clean
    mixed.backward()  # gradients reach the parameters, not through the attack
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError):
        AdversarialTraining(attack, alpha=1.5)


def test_fgsm_in_normalised_units_is_fgsm_in_pixel_space():
    # what `cnnkit evaluate --attack fgsm --eps 0.1` does: the model sees (p − mean)/std, ε = 0.1 is in pixel
    # units through pixel_eps and the clamp is input_range; it must be FGSM on the pixels p ∈ [0, 1] themselves
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.5]
    m = torch.tensor(mean, dtype=torch.float64).view(1, C, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, C, 1, 1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(C, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * (H - 2) * (W - 2), K)).double()

    class OnPixels(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, p):
            return self.net((p - m) / s)

    g = torch.Generator().manual_seed(4)
    pixels = torch.rand(32, C, H, W, generator=g, dtype=torch.float64)
    pixels[:, :, 0, :2] = torch.tensor([0.0, 1.0], dtype=torch.float64)  # at the edges of the range
    y = torch.randint(0, K, (32,), generator=g)
    lo, hi = input_range(mean, std)
    adv = fgsm(net, (pixels - m) / s, y, pixel_eps(0.1, std).double(), clamp=(lo.double(), hi.double()))
    adv_pixels = fgsm(OnPixels(), pixels, y, 0.1, clamp=(0.0, 1.0))
    torch.testing.assert_close(adv * s + m, adv_pixels)
    assert ((adv_pixels - pixels).abs() <= 0.1 + 1e-12).all()
    assert (adv_pixels - pixels).abs().max() > 0.1 - 1e-12  # and the budget is used


def test_attacks_refuse_per_image_whitening():
    from cnnkit.errors import CnnkitError
    from cnnkit.recipes.classifier import make_attack
    from cnnkit.runs.card import ModelCard

    card = ModelCard("lenet5", "multiclass", ["a", "b"], [1, 32, 32], [0.5], [0.25], whiten=True)
    with pytest.raises(CnnkitError, match="train without --whiten"):
        make_attack("fgsm", 0.1, card)
    assert make_attack("fgsm", 0.1, ModelCard("lenet5", "multiclass", ["a", "b"], [1, 32, 32], [0.5], [0.25]))
