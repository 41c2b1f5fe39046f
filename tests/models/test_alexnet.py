"""AlexNet: the paper's layer table, its LRN formula, its two-GPU connectivity; torchvision's variant."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.alexnet import TowerLRN, paper_lrn
from cnnkit.models.factory import create_model


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def conv(k: int, c_in: int, c_out: int, groups: int = 1) -> int:
    """Weights and biases of a k×k convolution whose kernels each see c_in / groups maps."""
    return c_out * (k * k * c_in // groups) + c_out


def test_parameter_count_is_the_layer_table_arithmetic() -> None:
    def table(groups: int) -> int:
        convs = (conv(11, 3, 96) + conv(5, 96, 256, groups) + conv(3, 256, 384)
                 + conv(3, 384, 384, groups) + conv(3, 384, 256, groups))
        fcs = (256 * 6 * 6 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
        return convs + fcs

    with torch.device("meta"):  # counting needs no memory
        two_gpus, one_tower = create_model("alexnet"), create_model("alexnet", groups=1)
    assert count(two_gpus) == table(2) == 60_965_224  # the paper's "60 million parameters"
    assert count(one_tower) == table(1) == 62_378_344


def test_two_gpu_connectivity_splits_conv2_conv4_conv5_only() -> None:
    with torch.device("meta"):
        model = create_model("alexnet")
    assert [model.conv1.groups, model.conv2.groups, model.conv3.groups, model.conv4.groups,
            model.conv5.groups] == [1, 2, 1, 2, 2]
    assert model.conv2.weight.shape == (256, 48, 5, 5)  # the paper's 5×5×48 kernels
    assert model.conv3.weight.shape == (384, 256, 3, 3)  # conv3 sees both GPUs
    assert model.conv4.weight.shape == (384, 192, 3, 3) and model.conv5.weight.shape == (256, 192, 3, 3)


def paper_formula(a: torch.Tensor, n: int = 5, k: float = 2.0, alpha: float = 1e-4, beta: float = 0.75) -> torch.Tensor:
    """§3.3 written out: b_i = a_i / (k + α Σ_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j²)^β over the maps i."""
    b = torch.empty_like(a)
    maps = a.shape[1]
    for i in range(maps):
        lo, hi = max(0, i - n // 2), min(maps - 1, i + n // 2)
        b[:, i] = a[:, i] / (k + alpha * (a[:, lo:hi + 1] ** 2).sum(1)) ** beta
    return b


def test_lrn_matches_the_paper_formula() -> None:
    a = torch.randn(2, 9, 3, 3, dtype=torch.float64) * 60  # large enough that α·Σa² is far from 0
    torch.testing.assert_close(paper_lrn()(a), paper_formula(a))
    assert not torch.allclose(nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(a), paper_formula(a))  # torch's α/n


def test_lrn_stays_within_a_gpu() -> None:
    a = torch.randn(1, 8, 2, 2, dtype=torch.float64) * 60
    expected = torch.cat([paper_formula(a[:, :4]), paper_formula(a[:, 4:])], 1)
    torch.testing.assert_close(TowerLRN(2)(a), expected)
    torch.testing.assert_close(TowerLRN(1)(a), paper_formula(a))


def test_paper_shapes_and_initialisation() -> None:
    model = create_model("alexnet").eval()
    x = torch.randn(1, 3, 224, 224)
    assert model.conv1(x).shape == (1, 96, 55, 55)  # 224 with padding 2 gives the paper's 55×55
    assert nn.functional.conv2d(torch.randn(1, 3, 227, 227), model.conv1.weight, stride=4).shape[-1] == 55  # Caffe's
    assert model(x).shape == (1, 1000)
    for name in ("conv2", "conv4", "conv5", "fc6", "fc7"):
        assert bool((getattr(model, name).bias == 1).all()), name
    for name in ("conv1", "conv3", "fc8"):
        assert bool((getattr(model, name).bias == 0).all()), name
    assert abs(model.fc6.weight.std().item() - 0.01) < 1e-3


def test_in_channels_and_bad_groups() -> None:
    model = create_model("alexnet", num_classes=5, in_channels=1)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)
    with pytest.raises(CnnkitError, match="groups"):
        create_model("alexnet", groups=3)


def test_alexnet_tv_loads_torchvision_weights_strictly_and_agrees() -> None:
    theirs = torchvision.models.alexnet(weights=None).eval()
    ours = create_model("alexnet_tv").eval()
    assert count(ours) == count(theirs) == 61_100_840
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-5
