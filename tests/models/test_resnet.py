"""ResNet family: the deep ImageNet nets against torchvision, the plain twins, the shortcut options."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
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
