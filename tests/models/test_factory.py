"""The model factory (cnnkit.models.factory): every registered classifier built by create_model runs forward and
backward; weight files load with a mismatched head dropped (and a warning); get_spec / list_models; the errors."""
from __future__ import annotations

import pytest
import torch
import torchvision

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec, list_models

TORCHVISION_TWINS = ("resnet18", "resnet34", "resnet50")


def _cases() -> list:
    """Every model with 3 and with 1 input channels; the 1-channel runs of the ten VGG variants beyond
    vgg11/vgg16 (about 5 s each: 130M+ parameters) are marked slow."""
    cases = []
    for name in list_models(task="classify"):  # the detectors have their own tests
        cases.append(pytest.param(name, 3, id=f"{name}-3ch"))
        heavy = name.startswith("vgg") and name not in ("vgg11", "vgg16")
        cases.append(pytest.param(name, 1, id=f"{name}-1ch", marks=[pytest.mark.slow] if heavy else []))
    return cases


@pytest.mark.parametrize("name, channels", _cases())
def test_forward_backward(name: str, channels: int) -> None:
    spec = get_spec(name)
    size = min(spec.input_size[1], 64)  # small input keeps the test fast
    num_classes = 7 if channels == 1 else 3
    model = create_model(name, num_classes=num_classes, in_channels=channels)
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out.shape == (2, num_classes)
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", TORCHVISION_TWINS)
def test_resnet_matches_torchvision_and_loads_its_weights_strictly(name: str) -> None:
    ours = create_model(name, num_classes=1000)
    theirs = getattr(torchvision.models, name)(weights=None)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    ours.load_state_dict(theirs.state_dict(), strict=True)  # same keys and shapes
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(ours(x), theirs(x))


def test_create_model_loads_a_weight_file_and_drops_a_head_of_another_size(tmp_path) -> None:
    source = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning, match="head 'fc'"):
        model = create_model("resnet18", num_classes=3, weights=path)
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight)
    assert model.fc.weight.shape == (3, 512)


def test_weight_file_of_another_architecture_is_refused(tmp_path) -> None:
    path = tmp_path / "lenet.pt"
    torch.save(create_model("lenet5").state_dict(), path)
    with pytest.raises(CnnkitError, match="do not match"):
        create_model("resnet18", weights=path)
    with pytest.raises(CnnkitError, match="not found"):
        create_model("resnet18", weights=tmp_path / "absent.pth")


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(CnnkitError, match="did you mean 'resnet18'"):
        create_model("resnet81")


def test_googlenet_weights_with_aux_heads_load_into_another_number_of_classes(tmp_path) -> None:
    source = create_model("googlenet", num_classes=1000, aux_logits=True)
    path = tmp_path / "googlenet.pth"
    torch.save(source.state_dict(), path)
    with pytest.warns(UserWarning, match="aux1.fc2, aux2.fc2, fc"):
        model = create_model("googlenet", num_classes=5, aux_logits=True, weights=path)
    assert model.fc.out_features == 5 and model.aux1.fc2.out_features == 5


def test_a_bad_architecture_option_is_a_clear_error() -> None:
    with pytest.raises(CnnkitError, match="bad option for model 'lenet5'"):
        create_model("lenet5", variant="retro")
    with pytest.raises(CnnkitError, match="bad option for model 'lenet5'"):
        create_model("lenet5", depth=3)


def test_list_models_by_task_and_pattern() -> None:
    assert set(list_models(task="segment")) == {"fcn32s", "fcn16s", "fcn8s", "segnet", "unet", "deeplabv3"}
    assert list_models("resnet2*") == ["resnet20"] and "lenet5" in list_models(task="classify")
    for name in list_models(task="segment"):
        spec = get_spec(name)
        assert spec.input_size == (3, 256, 256) and spec.paper


def test_spec_names_build_networks_sized_by_the_input() -> None:
    spec = get_spec("spec:conv4k3-pool2-fc")  # cnnkit.models.spec, built on the fly like 'tv/...' names
    assert spec.name == "spec:conv4k3-pool2-fc" and spec.head == "fc1" and spec.input_size == (3, 32, 32)
    for size in (16, 24):  # the first fc's width follows the image size
        model = create_model(spec.name, num_classes=5, in_channels=1, input_size=(1, size, size))
        assert model.fc1.in_features == 4 * ((size - 2) // 2) ** 2
        assert model(torch.zeros(2, 1, size, size)).shape == (2, 5)
    assert not [m for m in list_models() if m.startswith("spec:")]  # nothing is registered


def test_input_size_is_ignored_by_architectures_that_do_not_take_it() -> None:
    model = create_model("lenet5", num_classes=3, input_size=(1, 32, 32))
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 3)
    with pytest.raises(CnnkitError, match="bad option for model 'spec:flatten-fc'"):
        create_model("spec:flatten-fc", depth=3)
