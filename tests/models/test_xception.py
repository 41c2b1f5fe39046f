"""Xception (Chollet 2017): Keras' parameter counts, the three flows' shapes, separable convolutions."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.models.factory import create_model
from cnnkit.models.xception import SeparableConv2d, XceptionBlock


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return create_model("xception", num_classes=1000).eval()


def test_xception_has_keras_counts(model) -> None:
    params = sum(p.numel() for p in model.parameters())
    stats = sum(b.numel() for n, b in model.named_buffers() if n.endswith(("running_mean", "running_var")))
    assert params == sum(p.numel() for p in model.parameters() if p.requires_grad) == 22_855_952
    assert params + stats == 22_910_480  # Keras' table counts BN's moving mean and variance too


def test_the_flows_give_the_papers_shapes_at_299() -> None:
    with torch.device("meta"):  # shapes only: no weights, no compute
        model = create_model("xception")
        x = model.entry_flow(torch.empty(1, 3, 299, 299))
        assert x.shape == (1, 728, 19, 19)
        x = model.middle_flow(x)
        assert x.shape == (1, 728, 19, 19)
        assert model.exit_flow(x).shape == (1, 2048, 10, 10)
        assert model(torch.empty(1, 3, 299, 299)).shape == (1, 1000)


def test_36_convolutions_34_of_them_separable(model) -> None:
    separable = [m for m in model.modules() if isinstance(m, SeparableConv2d)]
    assert len(separable) == 34 and len(model.middle_flow) == 8
    assert all(s.depthwise.groups == s.depthwise.in_channels and s.depthwise.bias is None for s in separable)
    shortcuts = [m for b in model.modules() if isinstance(b, XceptionBlock) for m in b.shortcut.modules()]
    plain = [m for m in model.entry_flow.children() if isinstance(m, nn.Conv2d)]
    assert len(plain) + len(separable) == 36 and sum(isinstance(m, nn.Conv2d) for m in shortcuts) == 4


def test_the_shortcut_sees_the_input_before_the_blocks_first_relu(model) -> None:
    block = model.middle_flow[0]
    x = torch.randn(1, 728, 5, 5)
    with torch.no_grad():
        expected = block.residual(x.clone()) + x  # an in-place first ReLU would have rectified x
        torch.testing.assert_close(block(x.clone()), expected)


def test_small_grey_inputs_work() -> None:
    model = create_model("xception", num_classes=3, in_channels=1)
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 3)
