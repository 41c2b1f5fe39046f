"""Pass-through names: `tv/<name>` builds torchvision's model, `timm/<name>` timm's (faked here: not installed)."""
from __future__ import annotations

import importlib.util
import re
import sys
from types import ModuleType

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.external import torchvision_names
from cnnkit.models.factory import create_model, get_spec, list_models


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_tv_model_with_one_input_channel_swaps_only_the_first_conv() -> None:
    model = create_model("tv/mobilenet_v3_small", num_classes=5, in_channels=1)
    theirs = torchvision.models.mobilenet_v3_small(weights=None, num_classes=5)
    first = theirs.features[0][0]  # Conv2d(3, 16, 3, stride 2, no bias)
    assert count(model) == count(theirs) - first.out_channels * 3 * 3 * (3 - 1)
    assert model.features[0][0].in_channels == 1 and model.features[0][0].stride == first.stride
    assert model(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_tv_spec_is_built_on_the_fly_and_names_the_head() -> None:
    spec = get_spec("tv/mobilenet_v3_small")
    assert (spec.task, spec.paper, spec.head, spec.input_size) == ("classify", "torchvision", "classifier.3",
                                                                   (3, 224, 224))
    assert get_spec("tv/resnet18").head == "fc" and get_spec("tv/inception_v3").input_size == (3, 299, 299)


# the smallest torchvision classifier of each family (every torchvision name belongs to one of them)
TV_FAMILIES = ("alexnet", "convnext_tiny", "densenet121", "efficientnet_b0", "efficientnet_v2_s", "googlenet",
               "inception_v3", "maxvit_t", "mnasnet0_5", "mobilenet_v2", "mobilenet_v3_small", "regnet_x_400mf",
               "resnet18", "resnext50_32x4d", "shufflenet_v2_x0_5", "squeezenet1_0", "swin_t", "swin_v2_t", "vgg11",
               "vit_b_32", "wide_resnet50_2")


def test_every_tv_family_is_covered() -> None:
    family = lambda name: re.match(r"[a-z]+(_v\d)?", name)[0]  # noqa: E731  (mobilenet_v3_small → mobilenet_v3)
    assert {family(n) for n in torchvision_names()} == {family(n) for n in TV_FAMILIES}


@pytest.mark.parametrize("name", TV_FAMILIES)
def test_tv_head_is_the_layer_that_outputs_the_classes(name: str) -> None:
    spec = get_spec(f"tv/{name}")
    with torch.device("cpu" if name.startswith("regnet") else "meta"):  # RegNet reads tensors while it builds
        model = create_model(spec.name, num_classes=7)
    head = model.get_submodule(spec.head)
    assert getattr(head, "out_features", getattr(head, "out_channels", None)) == 7


def test_inception_nets_return_one_tensor_without_auxiliary_logits() -> None:
    with torch.device("meta"):
        googlenet, inception = create_model("tv/googlenet"), create_model("tv/inception_v3")
        assert googlenet.aux1 is None and inception.AuxLogits is None
        assert googlenet.train()(torch.empty(2, 3, 64, 64)).shape == (2, 1000)


def test_first_conv_is_found_generically() -> None:
    with torch.device("meta"):
        vit = create_model("tv/vit_b_16", in_channels=4)
        swin = create_model("tv/swin_t", in_channels=1)
    assert vit.conv_proj.in_channels == 4 and vit.conv_proj.kernel_size == (16, 16)
    assert swin.features[0][0].in_channels == 1


def test_tv_weight_file_loads_and_its_head_is_dropped(tmp_path) -> None:
    source = torchvision.models.mobilenet_v3_small(weights=None)
    torch.save(source.state_dict(), tmp_path / "mnv3.pth")
    with pytest.warns(UserWarning, match=r"head 'classifier\.3'"):
        model = create_model("tv/mobilenet_v3_small", num_classes=3, weights=tmp_path / "mnv3.pth")
    torch.testing.assert_close(model.features[0][0].weight, source.features[0][0].weight)
    assert model.classifier[3].out_features == 3


def test_unknown_tv_name_and_source_suggest_the_closest() -> None:
    with pytest.raises(CnnkitError, match="unknown torchvision model 'mobilenet_v3_smal'; did you mean"):
        create_model("tv/mobilenet_v3_smal")
    with pytest.raises(CnnkitError, match="unknown model source 'hub'; choose one of: timm, tv"):
        get_spec("hub/resnet18")
    with pytest.raises(CnnkitError, match="bad option for model 'tv/resnet18'"):
        create_model("tv/resnet18", no_such_option=1)
    assert "tv/fasterrcnn_resnet50_fpn" not in list_models(include_external=True)  # classifiers only


def test_list_models_keeps_external_names_out_unless_asked() -> None:
    own = list_models()
    assert own and not any("/" in n for n in own)
    every = list_models(include_external=True)
    assert set(own) < set(every) and {f"tv/{n}" for n in torchvision_names()} <= set(every)
    assert list_models("tv/resnet1*", include_external=True) == ["tv/resnet101", "tv/resnet152", "tv/resnet18"]


@pytest.mark.skipif(importlib.util.find_spec("timm") is not None, reason="timm is installed")
def test_timm_names_without_timm_say_how_to_install_it() -> None:
    with pytest.raises(CnnkitError, match=r"pip install 'cnnkit\[timm\]'"):
        create_model("timm/resnet50")
    assert not any(n.startswith("timm/") for n in list_models(include_external=True))


@pytest.fixture
def fake_timm(monkeypatch) -> ModuleType:
    """A stand-in timm module in sys.modules: records create_model's arguments, knows one model."""
    timm = ModuleType("timm")
    timm.calls = []

    def create(name: str, **kwargs) -> nn.Module:
        timm.calls.append((name, kwargs))
        return nn.Sequential(nn.Conv2d(kwargs["in_chans"], 8, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(8, kwargs["num_classes"]))

    cfg = {"classifier": "3", "input_size": (3, 256, 256)}
    timm.create_model, timm.list_models = create, lambda: ["tiny_net", "resnet50d"]
    timm.is_model = lambda name: name in timm.list_models()
    timm.get_pretrained_cfg_value = lambda name, key: cfg.get(key)
    monkeypatch.setitem(sys.modules, "timm", timm)
    return timm


def test_timm_names_go_through_timm_create_model(fake_timm) -> None:
    spec = get_spec("timm/tiny_net")
    assert (spec.paper, spec.head, spec.input_size) == ("timm", "3", (3, 256, 256))
    model = create_model("timm/tiny_net", num_classes=4, in_channels=1, drop_rate=0.1)
    assert fake_timm.calls == [("tiny_net", {"pretrained": False, "num_classes": 4, "in_chans": 1, "drop_rate": 0.1})]
    assert model(torch.randn(2, 1, 16, 16)).shape == (2, 4)
    assert "timm/resnet50d" in list_models("timm/*", include_external=True)
    with pytest.raises(CnnkitError, match="unknown timm model 'resnet50c'; did you mean 'resnet50d'"):
        get_spec("timm/resnet50c")
