"""cnnkit.engine.optimizers.build and the option check: names, classes, factories and made optimisers (the Keras
façade's compile and the --optimizer-option / --momentum flags go through them). Apart from test_optimizers.py,
which needs Keras."""
from __future__ import annotations

from functools import partial

import pytest
import torch

from cnnkit.engine import optimizers
from cnnkit.errors import CnnkitError


def params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(3, 2).parameters())


def test_a_name_with_options_gives_those_options() -> None:
    opt = optimizers.build("sgd", params(), lr=0.1, weight_decay=1e-4, momentum=0.9, nesterov=True)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["lr"], group["weight_decay"], group["momentum"], group["nesterov"]) == (0.1, 1e-4, 0.9, True)


def test_a_class_a_factory_and_a_made_optimiser() -> None:
    opt = optimizers.build(torch.optim.RMSprop, params(), lr=0.01, momentum=0.5)
    assert isinstance(opt, torch.optim.RMSprop) and opt.param_groups[0]["momentum"] == 0.5
    opt = optimizers.build(partial(torch.optim.SGD, lr=0.2), params(), momentum=0.8)
    assert opt.param_groups[0]["lr"] == 0.2 and opt.param_groups[0]["momentum"] == 0.8
    own = params()
    made = torch.optim.Adam(own, lr=3e-4)
    assert optimizers.build(made, own) is made


@pytest.mark.parametrize("optimizer,kwargs,message", [
    ("adam", {"momentum": 0.9}, "optimizer 'adam' has no option 'momentum'"),
    ("sgd", {"momentun": 0.9}, "did you mean 'momentum'"),
    (torch.optim.SGD, {"lr": 0.1, "colour": 1}, "bad option for optimizer 'SGD'"),
    (lambda p: "not an optimiser", {}, "not a torch.optim.Optimizer"),
    (42, {}, "must be a name"),
])
def test_bad_optimisers_and_options_are_one_line(optimizer, kwargs, message) -> None:
    with pytest.raises(CnnkitError, match=message) as err:
        optimizers.build(optimizer, params(), **kwargs)
    assert "\n" not in str(err.value)


def test_a_made_optimiser_must_hold_the_models_parameters() -> None:
    made = torch.optim.SGD(params(), lr=0.1)
    with pytest.raises(CnnkitError, match="does not hold this model's parameters"):
        optimizers.build(made, params())
    own = params()
    with pytest.raises(CnnkitError, match="has its options already"):
        optimizers.build(torch.optim.SGD(own, lr=0.1), own, lr=0.2)


def test_options_of_lists_torch_names() -> None:
    assert {"momentum", "nesterov", "dampening"} <= set(optimizers.options_of("sgd"))
    assert "lr" not in optimizers.options_of("adam") and "betas" in optimizers.options_of("adam")
