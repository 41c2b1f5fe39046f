"""DenseNet-121 (Huang et al. 2017): torchvision's keys, weights and outputs; the channel arithmetic."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.models.factory import create_model


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module]:
    """Ours with torchvision's randomly initialised weights, loaded strictly, and torchvision's; eval mode."""
    ours = create_model("densenet121")
    theirs = torchvision.models.densenet121(weights=None)
    ours.load_state_dict(theirs.state_dict(), strict=True)
    return ours.eval(), theirs.eval()


def test_densenet121_count(pair) -> None:
    ours, theirs = pair
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters()) == 7_978_856


def test_densenet121_computes_what_torchvision_computes(pair) -> None:
    ours, theirs = pair
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max() < 1e-5


def test_channels_grow_by_k_per_layer_and_halve_at_transitions(pair) -> None:
    features = pair[0].features
    c = 64  # 2k after the stem
    for i, n in enumerate((6, 12, 24, 16)):
        block = getattr(features, f"denseblock{i + 1}")
        assert len(block) == n and block.denselayer1.conv1.out_channels == 4 * 32  # bottleneck: bn_size·k
        c += n * 32
        if i < 3:
            assert getattr(features, f"transition{i + 1}").conv.out_channels == c // 2
            c //= 2
    assert (c, features.norm5.num_features, pair[0].classifier.in_features) == (1024, 1024, 1024)


def test_options_keep_the_keys_and_grey_inputs_work() -> None:
    model = create_model("densenet121", num_classes=3, in_channels=1, drop_rate=0.2)
    with torch.device("meta"):
        keys = set(torchvision.models.densenet121(weights=None, num_classes=3).state_dict())
    assert set(model.state_dict()) == keys and model.features.conv0.in_channels == 1
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 3)
