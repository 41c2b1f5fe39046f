"""cnnkit.models.initializers: --init schemes against their formulas (std of the drawn weights), the bias value,
and one-line errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.initializers import apply_init, parse_init


def wide() -> nn.Module:
    """Layers big enough that the drawn weights' std is within a few % of the scheme's."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(16, 64, 5), nn.BatchNorm2d(64), nn.Flatten(), nn.Linear(400, 300))


@pytest.mark.parametrize("scheme,std_of", [
    ("he", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("he_uniform", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("glorot", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ("glorot_normal", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ("lecun", lambda fan_in, fan_out: math.sqrt(1 / fan_in)),
    ("normal:std=0.01", lambda fan_in, fan_out: 0.01),
    ("uniform:low=-0.05,high=0.05", lambda fan_in, fan_out: 0.1 / math.sqrt(12)),
])
def test_each_scheme_draws_weights_of_its_std(scheme, std_of):
    model = wide()
    assert apply_init(model, scheme) == 2
    conv, linear = model[0], model[3]
    assert conv.weight.std().item() == pytest.approx(std_of(16 * 25, 64 * 25), rel=0.05)
    assert linear.weight.std().item() == pytest.approx(std_of(400, 300), rel=0.05)
    assert torch.all(conv.bias == 0) and torch.all(linear.bias == 0)


def test_the_bias_value_and_the_other_layers_untouched():
    model = wide()
    bn = {k: v.clone() for k, v in model[1].state_dict().items()}
    apply_init(model, "normal:std=0.01,bias=0.1")
    assert torch.all(model[0].bias == 0.1) and torch.all(model[3].bias == 0.1)
    assert all(torch.equal(v, model[1].state_dict()[k]) for k, v in bn.items())
    assert model[0].weight.mean().abs().item() < 1e-3


@pytest.mark.parametrize("text,message", [
    ("gauss", "unknown --init scheme 'gauss'"),
    ("normal:sd=1", "no option 'sd'; it takes std, mean, bias"),
    ("normal:std=-1", "std must be positive"),
    ("uniform:low=1,high=0", "low must be below high"),
    ("he:mode=fan_middle", "unknown --init mode"),
    ("he:bias=x", "bias must be a number"),
])
def test_bad_schemes_and_options_are_one_line(text, message):
    with pytest.raises(CnnkitError, match=message) as err:
        apply_init(wide(), text)
    assert "\n" not in str(err.value)


def test_parse_init():
    assert parse_init("normal:std=0.02,bias=0.1") == ("normal", {"std": 0.02}, 0.1)
    assert parse_init("he:mode=fan_out") == ("he", {"mode": "fan_out"}, 0.0)
    with pytest.raises(CnnkitError, match="no convolution or linear"):
        apply_init(nn.Sequential(nn.ReLU()), "he")
