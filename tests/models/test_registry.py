"""The model registry (cnnkit.models.registry): register_model stores a ModelSpec with its options, a name
registers once, `registered` and `registered_names` report what is there."""
from __future__ import annotations

import pytest
from torch import nn

from cnnkit.models import registry
from cnnkit.models.registry import ModelSpec, register_model, registered, registered_names


@pytest.fixture
def scratch(monkeypatch):
    """An empty registry for the test, the zoo's restored afterwards."""
    monkeypatch.setattr(registry, "_REGISTRY", {})
    return registry._REGISTRY


def test_register_model_stores_the_spec_and_returns_the_function(scratch) -> None:
    def tiny(*, num_classes: int = 2, in_channels: int = 1, width: int = 4) -> nn.Module:
        return nn.Linear(width, num_classes)

    decorated = register_model("tiny", task="segment", paper="X 2024", head=("a", "b"), input_size=(1, 8, 8),
                               width=16)(tiny)
    assert decorated is tiny
    spec = registered("tiny")
    assert spec == ModelSpec("tiny", tiny, "segment", "X 2024", ("a", "b"), (1, 8, 8), {"width": 16})
    assert registered_names() == {"tiny": "segment"} and registered("absent") is None


def test_registering_a_name_twice_raises(scratch) -> None:
    register_model("twice")(lambda **kw: None)
    with pytest.raises(ValueError, match="model 'twice' is already registered"):
        register_model("twice")(lambda **kw: None)


def test_the_zoo_is_registered_on_import() -> None:
    names = registered_names()
    assert names["lenet5"] == "classify" and names["faster_rcnn"] == "detect"
    assert names["unet"] == "segment" and names["mask_rcnn"] == "instance"
    assert registered("lenet5").head == "output" and registered("lenet5").input_size == (1, 32, 32)
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet5")(lambda **kw: None)
