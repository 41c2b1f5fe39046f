"""ResNet family: the deep ImageNet nets against torchvision, the plain twins, the shortcut options, CIFAR nets."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.resnet import ZeroPadShortcut
from cnnkit.models.factory import create_model

# projection shortcuts of ResNet-18/34 (1×1 conv + BN at the first block of stages 2, 3, 4)
PROJECTIONS = sum(c * 2 * c + 2 * 2 * c for c in (64, 128, 256))  # 8,448 + 33,280 + 132,096


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **options) -> nn.Module:
    """Built on the meta device: shapes and counts without allocating or initialising weights."""
    with torch.device("meta"):
        return create_model(name, **options)


@pytest.fixture(scope="module", params=["resnet101", "resnet152"])
def deep_pair(request) -> tuple[str, nn.Module, nn.Module]:
    """Ours and torchvision's, built once per module; ours takes torchvision's random weights (same tensors)."""
    theirs = getattr(torchvision.models, request.param)(weights=None)
    ours = on_meta(request.param)  # no initialisation: every tensor comes from torchvision's state dict
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)  # same keys and shapes
    return request.param, ours.eval(), theirs.eval()


def test_deep_resnets_have_the_papers_counts(deep_pair) -> None:
    name, ours, theirs = deep_pair
    assert count(ours) == count(theirs) == {"resnet101": 44_549_160, "resnet152": 60_192_808}[name]


def test_deep_resnets_compute_what_torchvision_computes(deep_pair) -> None:
    _, ours, theirs = deep_pair
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("name, resnet, expected", [("plain18", 11_689_512, 11_515_688),
                                                    ("plain34", 21_797_672, 21_623_848)])
def test_plain_nets_are_the_resnets_without_projections(name: str, resnet: int, expected: int) -> None:
    model = on_meta(name)
    assert PROJECTIONS == 173_824 and count(model) == resnet - PROJECTIONS == expected
    blocks = [m for m in model.modules() if hasattr(m, "downsample")]
    assert len(blocks) == (8 if name == "plain18" else 16)
    assert all(b.downsample is None and not b.residual for b in blocks)
    assert not any(isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) for m in model.modules())


def test_plain_block_output_is_the_stacked_layers_alone() -> None:
    block = create_model("plain18").layer2[0].eval()  # strides 2, widens 64 → 128, no shortcut at all
    x = torch.randn(2, 64, 16, 16)
    with torch.no_grad():
        expected = torch.relu(block.bn2(block.conv2(torch.relu(block.bn1(block.conv1(x))))))
        torch.testing.assert_close(block(x), expected, rtol=0, atol=0)


def test_zeroing_the_residual_branch_leaves_the_identity_only_in_the_resnet() -> None:
    x = torch.rand(2, 64, 8, 8)  # non-negative, so relu(x) = x
    for name, expected in (("resnet18", x), ("plain18", torch.zeros_like(x))):
        block = create_model(name).layer1[0].eval()
        nn.init.zeros_(block.bn2.weight), nn.init.zeros_(block.bn2.bias)
        with torch.no_grad():
            torch.testing.assert_close(block(x), expected)


def test_option_a_is_parameter_free_and_option_c_projects_everywhere() -> None:
    assert count(on_meta("resnet34", shortcut="A")) == count(on_meta("plain34"))
    model_c = on_meta("resnet18", shortcut="C")
    assert all(b.downsample is not None for b in model_c.modules() if hasattr(b, "downsample"))
    with pytest.raises(CnnkitError, match="shortcut must be one of"):
        create_model("resnet18", shortcut="D")


def test_activation_and_dropout_keep_torchvision_keys() -> None:
    with torch.device("meta"):
        theirs = torchvision.models.resnet50(weights=None).state_dict()
    model = on_meta("resnet50", activation="silu", dropout=0.3)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in theirs.items()}
    assert model.dropout.p == 0.3 and model.fc.in_features == 2048
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert sum(isinstance(m, nn.SiLU) for m in model.modules()) == 1 + 3 * 16  # stem + three per bottleneck


def test_learned_activations_add_their_own_parameters_only() -> None:
    model = create_model("resnet18", activation="prelu")
    missing, unexpected = model.load_state_dict(torchvision.models.resnet18(weights=None).state_dict(), strict=False)
    assert not unexpected and missing and all(k.split(".")[-2].startswith("act") for k in missing)
    assert count(model) == 11_689_512 + 64 + 2 * sum(2 * w for w in (64, 128, 256, 512))  # one slope per channel
    model(torch.randn(2, 3, 32, 32)).sum().backward()


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
