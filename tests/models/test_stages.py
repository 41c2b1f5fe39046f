"""A registry model seen as stages (cnnkit.models.stages): the stage lists of LeNet-5, a CIFAR ResNet, VGG and
EfficientNet; truncate's smaller network computes what the kept stages compute; last_linears, classifier_layers;
capture_input hands over the last layer's input."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec
from cnnkit.models.registry import ModelSpec
from cnnkit.models.stages import (
    PartialNet,
    capture_input,
    classifier_layers,
    last_linears,
    parameter_names,
    stages,
    truncate,
)


def on_meta(name: str) -> nn.Module:
    with torch.device("meta"):
        return create_model(name)


def test_stage_lists_follow_the_forward_order_without_the_head() -> None:
    lenet = create_model("lenet5")
    assert stages(lenet, get_spec("lenet5")) == [["c1", "act1", "s2"], ["c3", "act3", "s4"], ["c5", "act5"],
                                                 ["f6", "act6", "dropout"]]  # activations defined last: override
    resnet = create_model("resnet20")
    assert stages(resnet, get_spec("resnet20")) == [["conv1", "bn1", "act"], ["layer1"], ["layer2"],
                                                    ["layer3", "avgpool", "dropout"]]
    vgg = stages(on_meta("vgg11"), get_spec("vgg11"))  # `features` split after each of its 5 pooling layers
    assert len(vgg) == 5 and all(isinstance(on_meta("vgg11").get_submodule(s[-1 if i < 4 else -2]), nn.MaxPool2d)
                                 for i, s in enumerate(vgg))
    assert not any(p.startswith("classifier") for s in vgg for p in s)
    effnet = stages(on_meta("efficientnet_lite0"), get_spec("efficientnet_lite0"))
    assert [s[0] for s in effnet[1:]] == [f"blocks.{i}" for i in range(7)]  # one stage per block group


def test_parameter_names_are_the_stages_parameters() -> None:
    model = create_model("resnet20")
    names = parameter_names(model, ["conv1", "bn1"])
    assert names == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert set(names) <= set(dict(model.named_parameters()))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_truncate_keeps_the_first_k_stages_and_a_new_head(k: int) -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=5).eval()
    partial = truncate(model, get_spec("resnet20"), k, (3, 32, 32)).eval()
    assert isinstance(partial, PartialNet) and partial.fc.out_features == 5
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = model.act(model.bn1(model.conv1(x)))
        for layer in (model.layer1, model.layer2, model.layer3)[: k - 1]:
            h = layer(h)
        assert partial.fc.in_features == h.shape[1]  # 16, 16, 64 maps after stem, layer1, layer3
        torch.testing.assert_close(partial(x), partial.fc(h.mean((2, 3))))


def test_truncate_flattens_before_a_linear_stage_and_checks_k() -> None:
    model = create_model("lenet5", num_classes=10).eval()
    partial = truncate(model, get_spec("lenet5"), 4, (1, 32, 32)).eval()
    assert partial.fc.in_features == 84  # c5's (120, 1, 1) flattened for f6
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        h = model.s2(model.act1(model.c1(x)))
        h = model.act5(model.c5(model.s4(model.act3(model.c3(h)))))  # (3, 120, 1, 1)
        h = model.dropout(model.act6(model.f6(h.flatten(1))))  # (3, 84)
        torch.testing.assert_close(partial(x), partial.fc(h))
    with pytest.raises(CnnkitError, match="--keep-stages must be between 1 and 4 for lenet5"):
        truncate(model, get_spec("lenet5"), 5, (1, 32, 32))


def test_last_linears_and_classifier_layers() -> None:
    lenet, resnet = create_model("lenet5"), create_model("resnet20")
    assert last_linears(lenet, get_spec("lenet5")) == ["output"]
    assert last_linears(resnet, get_spec("resnet20")) == ["fc"]
    assert last_linears(on_meta("vgg11"), get_spec("vgg11")) == ["classifier.6"]
    assert classifier_layers(lenet, get_spec("lenet5")) == ["output", "f6"]  # the head and the FC stage
    assert classifier_layers(on_meta("vgg11"), get_spec("vgg11")) == ["classifier"]
    partial = truncate(resnet, get_spec("resnet20"), 2, (3, 32, 32))
    assert last_linears(partial, get_spec("resnet20")) == ["fc"]
    no_linear = ModelSpec("odd", lambda **kw: None, head="conv1")
    with pytest.raises(CnnkitError, match="odd's head 'conv1' has no linear layer"):
        last_linears(resnet, no_linear)


def test_capture_input_gives_the_pooled_features_and_removes_its_hook() -> None:
    torch.manual_seed(0)
    model = create_model("resnet20", num_classes=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad(), capture_input(model.fc) as seen:
        model(x)
        model(x[:1])
    with torch.no_grad():
        model(x)  # after the block: nothing more recorded
        stem = model.act(model.bn1(model.conv1(x)))
        features = model.avgpool(model.layer3(model.layer2(model.layer1(stem)))).flatten(1)
    assert [t.shape for t in seen] == [(2, 64), (1, 64)]
    torch.testing.assert_close(seen[0], features)
