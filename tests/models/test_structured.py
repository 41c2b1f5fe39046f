"""Structured pruning: the slicing keeps the function when the removed filters were already zero, the criteria pick
what their formulas say, parameter counts drop as counted by hand, the loader rebuilds the shapes, and networks
that cannot be pruned safely are refused in one line that names the layer."""
from __future__ import annotations

import pytest
import torch
from tests.conftest import randomise_batch_norms
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.structured import filter_scores, keep_count, prunable_groups, prune_filters, shrink

SPEC = "spec:conv8k3-bn-relu-conv16k3-bn-relu-gap-fc10"  # a small plain stack on 1×8×8 inputs


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def _zero_filters(model: nn.Module, size: tuple[int, int, int], amount: float) -> None:
    """In every prunable group, the first `amount` of the filters (and their BN γ, β, their bias) set to zero, so
    the channel is exactly zero after the conv-BN-activation and removing it changes nothing."""
    for g in prunable_groups(model, size):
        conv = model.get_submodule(g.conv)
        gone = conv.out_channels - keep_count(conv.out_channels, amount)
        conv.weight[:gone] = 0
        if conv.bias is not None:
            conv.bias[:gone] = 0
        for name in g.norms:
            bn = model.get_submodule(name)
            bn.weight[:gone], bn.bias[:gone] = 0, 0


@pytest.mark.parametrize(("name", "size", "criterion"), [
    ("resnet20", (3, 32, 32), "l1"), ("resnet20", (3, 32, 32), "bn"), ("lenet5", (1, 32, 32), "l1"),
    (SPEC, (1, 8, 8), "bn"), ("spec:conv6k3p1-relu-pool2-conv8k3p1-relu-flatten-fc10", (1, 8, 8), "l1"),
])
def test_removing_zero_filters_keeps_the_outputs(name: str, size: tuple, criterion: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=size[0], input_size=size).eval()
    randomise_batch_norms(model)
    _zero_filters(model, size, 0.5)
    x = torch.randn(4, *size)  # (N, C, H, W)
    with torch.no_grad():
        expected = model(x)
        widths = prune_filters(model, 0.5, criterion, size)
        got = model(x)
    assert _params(model) < _params(create_model(name, num_classes=10, in_channels=size[0], input_size=size))
    assert all(model.get_submodule(name).out_channels == k for name, k in widths.items())
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_l1_criterion_removes_the_filters_of_smallest_l1_norm() -> None:
    model = create_model(SPEC, num_classes=10, in_channels=1, input_size=(1, 8, 8))
    conv = model.get_submodule(prunable_groups(model, (1, 8, 8))[0].conv)
    with torch.no_grad():
        norms = torch.tensor([5.0, 1.0, 7.0, 2.0, 8.0, 3.0, 6.0, 4.0])
        conv.weight.copy_(norms.view(8, 1, 1, 1).expand_as(conv.weight) / 9)  # Σ|w| over 1×3×3 = the norm
        original = conv.weight.clone()
    group = prunable_groups(model, (1, 8, 8))[0]
    torch.testing.assert_close(filter_scores(model, group, "l1"), norms)
    prune_filters(model, 0.5, "l1", (1, 8, 8))
    torch.testing.assert_close(conv.weight, original[[0, 2, 4, 6]])  # 5, 7, 8, 6 kept, in their order


def test_bn_criterion_removes_the_channels_of_smallest_gamma() -> None:
    model = create_model(SPEC, num_classes=10, in_channels=1, input_size=(1, 8, 8))
    group = prunable_groups(model, (1, 8, 8))[0]
    bn, conv = model.get_submodule(group.norms[0]), model.get_submodule(group.conv)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([0.1, -0.9, 0.5, 0.05, -0.2, 0.7, 0.3, 0.0]))
        original = conv.weight.clone()
    prune_filters(model, 0.5, "bn", (1, 8, 8))  # |γ| largest: -0.9, 0.5, 0.7, 0.3 → indices 1, 2, 5, 6
    torch.testing.assert_close(bn.weight.detach(), torch.tensor([-0.9, 0.5, 0.7, 0.3]))
    torch.testing.assert_close(conv.weight, original[[1, 2, 5, 6]])


def test_parameter_counts_drop_as_counted_by_hand() -> None:
    model = create_model(SPEC, num_classes=10, in_channels=1, input_size=(1, 8, 8))
    # conv 1→8 (72+8), bn 8 (16), conv 8→16 (1152+16), bn 16 (32), fc 16→10 (160+10)
    assert _params(model) == 80 + 16 + 1168 + 32 + 170
    prune_filters(model, 0.5, "l1", (1, 8, 8))
    # conv 1→4 (36+4), bn 4 (8), conv 4→8 (288+8), bn 8 (16), fc 8→10 (80+10)
    assert _params(model) == 40 + 8 + 296 + 16 + 90


def test_shrink_rebuilds_the_shapes_and_the_state_dict_loads() -> None:
    size = (3, 32, 32)
    model = create_model("resnet20", num_classes=10, input_size=size).eval()
    widths = prune_filters(model, 0.25, "l1", size)
    assert widths["layer1.0.conv1"] == 12 and widths["layer3.2.conv1"] == 48 and "conv1" not in widths
    fresh = shrink(create_model("resnet20", num_classes=10, input_size=size), widths, size).eval()
    fresh.load_state_dict(model.state_dict())  # strict
    x = torch.randn(2, *size)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x))


class _Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(7, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.cat([x, self.a(x)], 1))  # dense concatenation


@pytest.mark.parametrize(("model", "message"), [
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, groups=8)), "cannot prune 1: a grouped or depthwise"),
    (_Concat(), "in _Concat, b does not simply read a"),
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.PReLU(8), nn.Conv2d(8, 4, 3)), "cannot prune through 1 \\(PReLU\\)"),
    (nn.Sequential(nn.Conv2d(3, 8, 3), nn.LocalResponseNorm(3), nn.Conv2d(8, 4, 3)), "it mixes channels"),
])
def test_unsupported_layers_are_refused_in_one_line(model: nn.Module, message: str) -> None:
    with pytest.raises(CnnkitError, match=message) as err:
        prune_filters(model, 0.5, "l1", (3, 8, 8))
    assert "\n" not in str(err.value)


def test_bn_criterion_without_batch_norm_is_refused() -> None:
    with pytest.raises(CnnkitError, match="--criterion bn needs a BatchNorm after c1"):
        prune_filters(create_model("lenet5"), 0.5, "bn", (1, 32, 32))
