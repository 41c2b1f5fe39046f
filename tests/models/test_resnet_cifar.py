"""CIFAR-10 ResNets (cnnkit.models.resnet_cifar, He et al. 2015 §4.2): 6n+2 layers, the paper's parameter counts,
option A's parameter-free zero-padding shortcut and option B's projections, the map sizes 32, 16, 8."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.models.factory import create_model
from cnnkit.models.resnet import ZeroPadShortcut
from cnnkit.models.resnet_cifar import CifarResNet


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **options) -> nn.Module:
    """Built on the meta device: shapes and counts without allocating or initialising weights."""
    with torch.device("meta"):
        return create_model(name, **options)


# CIFAR-10 nets (§4.2). Parameters at 10 classes, stage widths w = 16, 32, 64, option A shortcuts:
# stem 3·9·16 + 2·16 = 464; a block of width w: 2·9w² + 4w; the first block of stages 2 and 3 takes w/2
# inputs: 9w·w/2 + 9w² + 4w; FC 64·10 + 10 = 650. Summed: 97,216·n − 21,926.
def cifar_count(n: int) -> int:
    stem, fc = 3 * 9 * 16 + 2 * 16, 64 * 10 + 10
    block = lambda w: 2 * 9 * w * w + 4 * w  # noqa: E731
    first = lambda w: 9 * w * w // 2 + 9 * w * w + 4 * w  # noqa: E731
    return stem + n * block(16) + first(32) + (n - 1) * block(32) + first(64) + (n - 1) * block(64) + fc


CIFAR = [(20, 3, 269_722, 0.27), (32, 5, 464_154, 0.46), (44, 7, 658_586, 0.66), (56, 9, 853_018, 0.85),
         (110, 18, 1_727_962, 1.7)]  # depth, n, exact count, the paper's Table 6 (millions)


@pytest.mark.parametrize("depth, n, exact, paper", CIFAR)
def test_cifar_resnet_counts(depth: int, n: int, exact: int, paper: float) -> None:
    model = on_meta(f"resnet{depth}", num_classes=10)
    assert count(model) == cifar_count(n) == 97_216 * n - 21_926 == exact
    assert round(exact / 1e6, len(str(paper).split(".")[1])) == paper
    assert sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules()) == depth  # 6n + 2 weighted layers


def test_cifar_option_a_pads_the_extra_channels_with_zeros() -> None:
    model = create_model("resnet20", num_classes=10).eval()
    shortcut = model.layer2[0].downsample
    assert isinstance(shortcut, ZeroPadShortcut) and not list(shortcut.parameters())
    x = torch.randn(2, 16, 8, 8)
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], dim=1)
    assert torch.equal(shortcut(x), expected)
    feature = model.layer3(model.layer2(model.layer1(model.conv1(torch.randn(1, 3, 32, 32)))))
    assert feature.shape == (1, 64, 8, 8)


def test_cifar_option_b_projects_where_the_width_doubles() -> None:
    model = on_meta("resnet20", num_classes=10, shortcut="B")
    assert count(model) == 269_722 + (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)
    assert isinstance(model.layer3[0].downsample, nn.Sequential) and model.layer3[1].downsample is None


def test_stage_maps_are_32_16_8_and_the_logits_per_class() -> None:
    model = CifarResNet(1, num_classes=7).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.act(model.bn1(model.conv1(x)))
        sizes = []
        for layer in (model.layer1, model.layer2, model.layer3):
            h = layer(h)
            sizes.append(tuple(h.shape[1:]))
        assert sizes == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
        torch.testing.assert_close(model(x), model.fc(h.mean((2, 3))))  # global average pooling, then FC
