"""VGG: Table 1's configurations, their parameter counts, and torchvision's weight files."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, list_models
from cnnkit.models.vgg import make_features

TORCHVISION_TWINS = ("vgg11", "vgg13", "vgg16", "vgg19", "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def on_meta(name: str, **options) -> nn.Module:
    """The architecture without memory or initialisation: enough for counts and structure."""
    with torch.device("meta"):
        return create_model(name, **options)


def blocks(model: nn.Module) -> list[list[str]]:
    """The feature layers as Table 1 names them, one list per block (split at the max pools)."""
    out: list[list[str]] = [[]]
    for m in model.features:
        if isinstance(m, nn.MaxPool2d):
            out.append([])
        elif isinstance(m, nn.Conv2d):
            out[-1].append(f"conv{m.kernel_size[0]}-{m.out_channels}")
        elif isinstance(m, nn.LocalResponseNorm):
            out[-1].append("LRN")
    return out[:-1]


def test_published_parameter_counts() -> None:
    assert count(on_meta("vgg16")) == 138_357_544
    assert count(on_meta("vgg19")) == 143_667_240
    table2 = {"vgg11": 133, "vgg11_lrn": 133, "vgg13": 133, "vgg16_c": 134, "vgg16": 138, "vgg19": 144}  # millions
    assert {name: round(count(on_meta(name)) / 1e6) for name in table2} == table2


def test_vgg_c_count_is_the_layer_table_arithmetic() -> None:
    def conv(k: int, c_in: int, c_out: int) -> int:
        return k * k * c_in * c_out + c_out

    convs = (conv(3, 3, 64) + conv(3, 64, 64) + conv(3, 64, 128) + conv(3, 128, 128)
             + conv(3, 128, 256) + conv(3, 256, 256) + conv(1, 256, 256)
             + conv(3, 256, 512) + conv(3, 512, 512) + conv(1, 512, 512)
             + conv(3, 512, 512) + conv(3, 512, 512) + conv(1, 512, 512))
    fcs = (512 * 7 * 7 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)
    assert count(on_meta("vgg16_c")) == convs + fcs == 133_638_952
    bn = 2 * (2 * 64 + 2 * 128 + 3 * 256 + 6 * 512)  # γ and β per map of each of the 13 convolutions
    assert count(on_meta("vgg16_c_bn")) == convs + fcs + bn


def test_configurations_are_table_1() -> None:
    conv3 = lambda c, n: [f"conv3-{c}"] * n  # noqa: E731
    assert blocks(on_meta("vgg16_c")) == [
        conv3(64, 2), conv3(128, 2), conv3(256, 2) + ["conv1-256"], conv3(512, 2) + ["conv1-512"],
        conv3(512, 2) + ["conv1-512"],
    ]
    assert blocks(on_meta("vgg11")) == [conv3(64, 1), conv3(128, 1), conv3(256, 2), conv3(512, 2), conv3(512, 2)]
    assert blocks(on_meta("vgg11_lrn")) == [conv3(64, 1) + ["LRN"]] + blocks(on_meta("vgg11"))[1:]
    assert blocks(on_meta("vgg13")) == [conv3(64, 2), conv3(128, 2), conv3(256, 2), conv3(512, 2), conv3(512, 2)]
    assert blocks(on_meta("vgg16")) == [conv3(64, 2), conv3(128, 2), conv3(256, 3), conv3(512, 3), conv3(512, 3)]
    assert blocks(on_meta("vgg19")) == [conv3(64, 2), conv3(128, 2), conv3(256, 4), conv3(512, 4), conv3(512, 4)]


def test_vgg_c_1x1_convolutions_keep_the_size() -> None:
    features = make_features("C")  # the convolutional part only: no 100M-parameter classifier to initialise
    ones = [m for m in features if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert len(ones) == 3 and all(m.padding == (0, 0) for m in ones)
    assert features(torch.randn(1, 3, 64, 64)).shape == (1, 512, 2, 2)


def test_lrn_uses_the_paper_constants_and_excludes_batch_norm() -> None:
    lrn = next(m for m in on_meta("vgg11_lrn").features if isinstance(m, nn.LocalResponseNorm))
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (5, 5e-4, 0.75, 2.0)  # the paper's α=1e-4 in torch's α/n
    with pytest.raises(CnnkitError, match="LRN"):
        on_meta("vgg11_lrn", batch_norm=True)
    assert "vgg11_lrn_bn" not in list_models("vgg*")


def test_options() -> None:
    model = on_meta("vgg11", activation="prelu", dropout=0.3)
    assert sum(isinstance(m, nn.PReLU) for m in model.modules()) == 8 + 2
    assert {m.p for m in model.modules() if isinstance(m, nn.Dropout)} == {0.3}
    assert sum(isinstance(m, nn.BatchNorm2d) for m in on_meta("vgg11", batch_norm=True).modules()) == 8
    assert sum(isinstance(m, nn.BatchNorm2d) for m in on_meta("vgg19_bn").modules()) == 16


@pytest.fixture(scope="module")
def torchvision_vgg11() -> nn.Module:
    torch.manual_seed(0)
    return torchvision.models.vgg11(weights=None).eval()


def test_torchvision_vgg11_weights_load_by_copy_and_outputs_agree(torchvision_vgg11: nn.Module) -> None:
    ours = create_model("vgg11", num_classes=1000).eval()
    ours.load_state_dict(torchvision_vgg11.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert (ours(x) - torchvision_vgg11(x)).abs().max().item() < 1e-5


def random_state(meta_model: nn.Module, classifier: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict for a module built on the meta device: random features and running statistics, and
    torchvision's randomly initialised classifier (its shapes are the same in every configuration)."""
    state = {}
    for key, value in meta_model.state_dict().items():
        if key.startswith("classifier."):
            state[key] = classifier[key]
        elif not value.is_floating_point():
            state[key] = torch.zeros(value.shape, dtype=value.dtype)
        elif key.endswith("running_var"):
            state[key] = torch.rand(value.shape) + 0.5
        elif value.ndim > 1:  # He-scaled convolution weights keep the 19 layers' activations O(1)
            state[key] = torch.randn(value.shape) * (2.0 / value[0].numel()) ** 0.5
        else:
            state[key] = torch.randn(value.shape) * 0.1
    return state


@pytest.mark.parametrize("name", TORCHVISION_TWINS)
def test_torchvision_weights_load_strictly_and_outputs_agree(name: str, torchvision_vgg11: nn.Module) -> None:
    """Both modules are built on the meta device (no 140M-parameter initialisation), then given one state dict."""
    torch.manual_seed(0)
    with torch.device("meta"):
        theirs = getattr(torchvision.models, name)(weights=None)
    classifier = {k: v for k, v in torchvision_vgg11.state_dict().items() if k.startswith("classifier.")}
    state = random_state(theirs, classifier)
    theirs.load_state_dict(state, strict=True, assign=True)
    ours = on_meta(name)
    ours.load_state_dict(state, strict=True, assign=True)  # keys and shapes are checked as in a plain load
    assert count(ours) == count(theirs)
    ours.eval(), theirs.eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert (ours(x) - theirs(x)).abs().max().item() < 1e-5
