"""cnnkit.engine.regularizers: the penalty's SGD update rules by hand; Mixup/CutMix against their formulas."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.engine.regularizers import MixResult, Penalty, cutmix, from_config, mixup
from cnnkit.errors import CnnkitError

LR = 0.1
WEIGHTS = ["features.0.weight", "classifier.1.weight"]
ALL = ["features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
       "classifier.1.weight", "classifier.1.bias"]


class Net(nn.Module):
    """conv → BN → ReLU → pool → flatten → linear, in float64."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    net = Net().double().eval()
    with torch.no_grad():  # non-trivial BN affine parameters, so their gradients are non-zero
        net.features[1].weight.uniform_(0.5, 1.5)
        net.features[1].bias.uniform_(-0.5, 0.5)
    return net


def batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 6, 6, generator=g, dtype=torch.float64), torch.randint(0, 3, (4,), generator=g)


def sgd_step(penalty: Penalty) -> tuple[dict, dict, dict]:
    """(weights before, ∂E/∂w on E alone, weights after one SGD step on E + penalty)."""
    net, (x, y) = make_net(), batch()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    names, params = zip(*net.named_parameters())
    grads = dict(zip(names, torch.autograd.grad(F.cross_entropy(net(x), y), params)))
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    opt.zero_grad()
    (F.cross_entropy(net(x), y) + penalty(net)).backward()
    opt.step()
    return before, grads, {n: p.detach().clone() for n, p in net.named_parameters()}


def check_update(penalty: Penalty, penalised: list[str]) -> None:
    """Selected: w − η[∂E/∂w + λ1 sign(w) + 2 λ2 w]; the others: w − η ∂E/∂w."""
    before, grads, after = sgd_step(penalty)
    for name, w in before.items():
        reg = penalty.l1 * torch.sign(w) + 2 * penalty.l2 * w if name in penalised else 0 * w
        torch.testing.assert_close(after[name], w - LR * (grads[name] + reg), msg=name)
    assert sorted(penalty.selected(make_net())) == sorted(penalised)


# ----------------------------------------------------------------------------- penalty


def test_l1_update_rule_weights_only_by_default() -> None:
    check_update(Penalty(l1=0.05), WEIGHTS)


def test_l2_update_rule_weights_only_by_default() -> None:
    check_update(Penalty(l2=0.3), WEIGHTS)


def test_layer_glob_selects_only_those_layers() -> None:
    check_update(Penalty(l1=0.02, l2=0.1, layers="classifier.*"), ["classifier.1.weight"])


def test_include_bias_and_norm_penalises_everything() -> None:
    check_update(Penalty(l1=0.02, l2=0.1, include_bias_and_norm=True), ALL)


def test_value_is_the_formula() -> None:
    net = make_net()
    w = [p for n, p in net.named_parameters() if n in WEIGHTS]
    expected = sum(1e-2 * p.abs().sum() + 1e-3 * p.pow(2).sum() for p in w)
    torch.testing.assert_close(Penalty(l1=1e-2, l2=1e-3)(net), expected)


def test_glob_matches_parameter_names_too() -> None:
    model = nn.Module()
    model.fc1, model.fc2, model.out = nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 1)
    assert Penalty(l2=1.0, layers="fc*").selected(model) == ["fc1.weight", "fc2.weight"]


def test_group_and_layer_norm_are_excluded() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 1), nn.GroupNorm(2, 4), nn.LayerNorm(4), nn.InstanceNorm2d(4, affine=True))
    assert Penalty(l2=1.0).selected(model) == ["0.weight"]


def test_unmatched_glob_names_glob_and_modules() -> None:
    with pytest.raises(CnnkitError, match=r"'head\.\*'.*features"):
        Penalty(l2=1e-4, layers="head.*")(make_net())
    with pytest.raises(CnnkitError, match="include_bias_and_norm"):
        Penalty(l2=1e-4, layers="features.1").selected(make_net())


@pytest.mark.parametrize("kwargs", [{"l1": -1e-4}, {"l2": -1.0}, {"l2": "big"}, {"layers": ""}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(CnnkitError):
        Penalty(**kwargs)


def test_from_config() -> None:
    assert from_config(None) is None
    p = from_config({"l1": 1e-4, "l2": 2e-4, "layers": "classifier.*"})
    assert (p.l1, p.l2, p.layers, p.include_bias_and_norm) == (1e-4, 2e-4, "classifier.*", False)
    assert Penalty.from_config(p) is p
    with pytest.raises(CnnkitError, match="'weight_decay'"):
        from_config({"weight_decay": 1e-4})
    with pytest.raises(CnnkitError):
        from_config(1e-4)


# ----------------------------------------------------------------------------- mixing

N, C, H, W, K = 6, 2, 8, 10, 4


def images_and_targets() -> tuple[torch.Tensor, torch.Tensor]:
    """Every pixel distinct, so 'came from image j' is checkable."""
    x = torch.arange(N * C * H * W, dtype=torch.float64).reshape(N, C, H, W)
    return x, torch.tensor([0, 1, 2, 3, 1, 0])


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def expected_targets(y: torch.Tensor, r: MixResult) -> torch.Tensor:
    onehot = F.one_hot(y, K).double()
    return r.lam * onehot + (1 - r.lam) * onehot[r.perm]


def test_mixup_is_the_formula() -> None:
    x, y = images_and_targets()
    r = mixup(x, y, K, alpha=0.4, generator=gen(0))
    assert 0.0 <= r.lam <= 1.0 and sorted(r.perm.tolist()) == list(range(N)) and r.box is None
    torch.testing.assert_close(r.images, r.lam * x + (1 - r.lam) * x[r.perm])
    torch.testing.assert_close(r.targets, expected_targets(y, r))
    torch.testing.assert_close(r.targets.sum(1), torch.ones(N, dtype=torch.float64))
    images, targets = r
    assert images is r.images and targets is r.targets


@pytest.mark.parametrize("seed", range(5))
def test_cutmix_box_pixels_and_lambda(seed: int) -> None:
    x, y = images_and_targets()
    r = cutmix(x, y, K, alpha=1.0, generator=gen(seed))
    y0, y1, x0, x1 = r.box
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[y0:y1, x0:x1] = True
    assert torch.equal(r.images[..., inside], x[r.perm][..., inside])
    assert torch.equal(r.images[..., ~inside], x[..., ~inside])
    assert r.lam == pytest.approx(1 - inside.sum().item() / (H * W))
    torch.testing.assert_close(r.targets, expected_targets(y, r))
    torch.testing.assert_close(r.targets.sum(1), torch.ones(N, dtype=torch.float64))


def test_cutmix_pastes_a_non_empty_box_for_some_seed() -> None:
    x, y = images_and_targets()
    assert any(cutmix(x, y, K, generator=gen(s)).lam < 1 for s in range(10))


@pytest.mark.parametrize("fn", [mixup, cutmix])
def test_same_seed_same_output(fn) -> None:
    x, y = images_and_targets()
    a, b = fn(x, y, K, generator=gen(3)), fn(x, y, K, generator=gen(3))
    assert a.lam == b.lam and torch.equal(a.perm, b.perm) and a.box == b.box
    assert torch.equal(a.images, b.images) and torch.equal(a.targets, b.targets)
    c = fn(x, y, K, generator=gen(4))
    assert c.lam != a.lam


@pytest.mark.parametrize("fn", [mixup, cutmix])
def test_mixing_errors(fn) -> None:
    x, y = images_and_targets()
    with pytest.raises(CnnkitError, match="alpha"):
        fn(x, y, K, alpha=0.0)
    with pytest.raises(CnnkitError, match=r"\[0, 4\)"):
        fn(x, y + 3, K)
    with pytest.raises(CnnkitError, match="N, C, H, W"):
        fn(x[0], y, K)
    with pytest.raises(CnnkitError, match="integer targets"):
        fn(x, y.double(), K)
