"""LeNet-5 (cnnkit.models.lenet): the paper's parameter count and layer shapes, both variants, and the options."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.models.factory import create_model
from cnnkit.models.lenet import LeNet5


def test_lenet5_parameter_count_matches_the_paper_formula() -> None:
    # C1: 6(25+1), C3 (full connection): 16(6·25+1), C5: 120(16·25+1), F6: 84(120+1), output: 10(84+1)
    expected = 6 * 26 + 16 * (6 * 25 + 1) + 120 * (16 * 25 + 1) + 84 * 121 + 10 * 85
    model = create_model("lenet5", num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == expected == 61706


def test_lenet5_classic_uses_tanh_and_average_pooling() -> None:
    model = create_model("lenet5", variant="classic")
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"Tanh", "AvgPool2d"} <= kinds and not {"ReLU", "MaxPool2d"} & kinds


def test_feature_maps_have_the_papers_sizes() -> None:
    model = LeNet5(num_classes=10).eval()
    shapes = {}
    for name in ("c1", "s2", "c3", "s4", "c5", "f6", "output"):
        getattr(model, name).register_forward_hook(lambda m, i, out, name=name: shapes.update({name: out.shape[1:]}))
    model(torch.randn(2, 1, 32, 32))
    assert shapes == {"c1": (6, 28, 28), "s2": (6, 14, 14), "c3": (16, 10, 10), "s4": (16, 5, 5),
                      "c5": (120, 1, 1), "f6": (84,), "output": (10,)}


def test_classic_forward_is_the_layers_by_hand() -> None:
    torch.manual_seed(0)
    model = LeNet5(num_classes=4, variant="classic").eval()
    x = torch.randn(3, 1, 32, 32)
    h = torch.nn.functional.avg_pool2d(torch.tanh(model.c1(x)), 2)
    h = torch.nn.functional.avg_pool2d(torch.tanh(model.c3(h)), 2)
    h = torch.tanh(model.f6(torch.tanh(model.c5(h)).flatten(1)))
    torch.testing.assert_close(model(x), model.output(h))


def test_options_in_channels_dropout_activation_and_bad_variant() -> None:
    model = create_model("lenet5", num_classes=3, in_channels=3, dropout=0.5, activation="gelu")
    assert model.c1.in_channels == 3 and model.dropout.p == 0.5 and model.output.out_features == 3
    assert sum(isinstance(m, nn.GELU) for m in model.modules()) == 4
    with pytest.raises(ValueError, match="variant must be 'classic' or 'modern'"):
        LeNet5(variant="retro")
