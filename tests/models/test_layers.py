"""Building blocks (cnnkit.models.layers): activations by name in every zoo model, the learned ones (maxout as the
notes define it, the per-channel maxout, PReLU) following their formulas, conv-BN-activation, and the paper's local
response normalisation."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec, list_models
from cnnkit.models.layers import (
    ChannelMaxout,
    Maxout,
    conv_bn_act,
    make_activation,
    maxout_conv,
    maxout_linear,
    paper_lrn,
)
from cnnkit.models.xception import XceptionBlock

SMALL = ("lenet5", "resnet18", "alexnet", "densenet121")


def _marked(name: str):
    """The VGG nets but vgg16 are slow to build (two 4096-wide FC layers each): run them with the slow tests."""
    slow = name.startswith("vgg") and name != "vgg16"
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


def run_small(model: nn.Module, name: str) -> torch.Tensor:
    """One forward in eval mode on a (1, C, s, s) input, s = min(the paper's size, 64)."""
    c, h, _ = get_spec(name).input_size
    s = min(h, 64)
    torch.manual_seed(0)
    with torch.no_grad():
        return model.eval()(torch.randn(1, c, s, s))


@pytest.mark.parametrize("name", [_marked(n) for n in list_models(task="classify")])
def test_every_model_takes_an_activation_by_name(name: str) -> None:
    model = create_model(name, num_classes=3, activation="gelu")
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert any(isinstance(m, nn.GELU) for m in model.modules())
    out = run_small(model, name)
    assert out.shape == (1, 3) and torch.isfinite(out).all()


LEARNED = {"maxout": Maxout, "channel_maxout": ChannelMaxout, "prelu": nn.PReLU}


# maxout's k·C² weights per activation are 100M+ in AlexNet's 4096-wide layers: the small nets show it fits
@pytest.mark.parametrize(("name", "activation"), [(n, a) for a in ("channel_maxout", "prelu") for n in SMALL]
                         + [("lenet5", "maxout"), ("resnet18", "maxout")])
def test_learned_activations_fit_their_channels(name: str, activation: str) -> None:
    model = create_model(name, num_classes=3, activation={"name": activation, "k": 3} if "maxout" in activation
                         else activation)  # a wrong channel count fails the forward
    kind = LEARNED[activation]
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    assert any(isinstance(m, kind) for m in model.modules())
    out = run_small(model, name)
    assert out.shape == (1, 3) and torch.isfinite(out).all()


def test_maxout_linear_is_the_notes_formula() -> None:
    torch.manual_seed(0)
    m = maxout_linear(5, 4, k=3)  # h_c(x) = max_j (w_cjᵀ x + b_cj): 3 affine maps of the whole input per unit
    assert isinstance(m, Maxout) and m.affine.weight.shape == (12, 5)
    x = torch.randn(6, 5)
    w, b = m.affine.weight.view(4, 3, 5), m.affine.bias.view(4, 3)  # unit c's pieces are outputs 3c .. 3c + 2
    expected = torch.stack([torch.stack([x @ w[c, j] + b[c, j] for j in range(3)]).max(0).values
                            for c in range(4)], dim=1)
    torch.testing.assert_close(m(x), expected)


def test_maxout_conv_is_the_notes_formula() -> None:
    torch.manual_seed(0)
    m = maxout_conv(3, 4, k=2, kernel=3, stride=2, padding=1)
    x = torch.randn(2, 3, 7, 7)
    w, b = m.affine.weight.view(4, 2, 3, 3, 3), m.affine.bias.view(4, 2)
    patches = torch.nn.functional.unfold(x, 3, padding=1, stride=2)  # (N, 27, 16): every window's input
    expected = torch.empty(2, 4, 16)
    for c in range(4):  # max over the pieces of w_cjᵀ(window) + b_cj
        pieces = [torch.einsum("f,nfl->nl", w[c, j].flatten(), patches) + b[c, j] for j in range(2)]
        expected[:, c] = torch.maximum(pieces[0], pieces[1])
    torch.testing.assert_close(m(x), expected.view(2, 4, 4, 4))


def test_maxout_activation_keeps_the_width_and_maps_the_whole_input() -> None:
    m = make_activation({"name": "maxout", "k": 3}, 4)
    assert isinstance(m, Maxout) and m.affine.weight.shape == (12, 4)  # k·C affine maps of all C inputs
    torch.manual_seed(0)
    with torch.no_grad():
        m.affine.weight.normal_()
    x = torch.randn(2, 4, 3, 3)
    expected = torch.stack([maxout_at(m, x[:, :, i, j]) for i in range(3) for j in range(3)], -1).view(2, 4, 3, 3)
    torch.testing.assert_close(m(x), expected)  # at every position: the linear maxout of its channel vector


def maxout_at(m: Maxout, v: torch.Tensor) -> torch.Tensor:
    return (v @ m.affine.weight.T + m.affine.bias).view(len(v), -1, m.k).amax(2)


def test_maxout_needs_two_pieces_and_a_width() -> None:
    with pytest.raises(CnnkitError, match="at least 2 pieces"):
        make_activation({"name": "maxout", "k": 1}, 4)
    with pytest.raises(CnnkitError, match="width of its input"):
        make_activation("maxout")
    with pytest.raises(CnnkitError, match="k ≥ 2"):
        Maxout(nn.Linear(3, 5), 2)  # 5 outputs are not 2 pieces per unit


def test_channel_maxout_is_the_max_of_its_pieces() -> None:
    torch.manual_seed(0)
    m = make_activation({"name": "channel_maxout", "k": 3}, 2)
    assert isinstance(m, ChannelMaxout) and m.weight.shape == m.bias.shape == (2, 3)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[-1.0, 0.5, 2.0], [0.0, 1.0, -3.0]]))
        m.bias.copy_(torch.tensor([[0.0, 1.0, -1.0], [0.5, 0.0, 0.25]]))
    x = torch.randn(4, 2, 3, 3)
    expected = torch.empty_like(x)
    for c in range(2):  # y_c = max_j a_cj x_c + b_cj
        a, b = m.weight[c].tolist(), m.bias[c].tolist()
        pieces = [a[j] * x[:, c] + b[j] for j in range(3)]
        expected[:, c] = torch.maximum(torch.maximum(pieces[0], pieces[1]), pieces[2])
    torch.testing.assert_close(m(x), expected)
    flat = torch.randn(5, 2)  # after an FC layer: (N, C)
    expected_flat = (flat.unsqueeze(2) * m.weight + m.bias).amax(2)
    torch.testing.assert_close(m(flat), expected_flat)


@pytest.mark.parametrize("name", ["maxout", "channel_maxout"])
@pytest.mark.parametrize("k", [2, 4])
def test_maxouts_start_as_relu(name: str, k: int) -> None:
    x = torch.randn(3, 4, 5, 5)
    torch.testing.assert_close(make_activation({"name": name, "k": k}, 4)(x), torch.relu(x))
    torch.testing.assert_close(make_activation({"name": name, "k": k}, 4)(x[:, :, 0, 0]), torch.relu(x[:, :, 0, 0]))


def test_prelu_has_one_slope_per_channel() -> None:
    m = make_activation("prelu", 7)
    assert isinstance(m, nn.PReLU) and m.num_parameters == 7 and m.weight.numel() == 7


def test_leaky_relu_takes_its_slope() -> None:
    m = make_activation({"name": "leaky_relu", "slope": 0.1}, 8)
    assert isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.1
    model = create_model("alexnet_tv", num_classes=3, activation={"name": "leaky_relu", "slope": 0.1})
    slopes = {m.negative_slope for m in model.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.1}


def test_unknown_activation_suggests_a_name() -> None:
    with pytest.raises(CnnkitError, match="did you mean"):
        make_activation("gelo", 4)


@pytest.mark.parametrize("name", ["alexnet_tv", "googlenet", "densenet121", "xception"])
def test_unknown_activation_in_a_model_suggests_a_name(name: str) -> None:
    with pytest.raises(CnnkitError, match="did you mean"):
        create_model(name, activation="leaky_relux")


def test_alexnet_gives_every_layer_its_own_activation() -> None:
    model = create_model("alexnet", activation="prelu")
    widths = {f"act{i + 1}": c for i, c in enumerate((96, 256, 384, 384, 256, 4096, 4096))}
    assert {n: m.num_parameters for n, m in model.named_children() if isinstance(m, nn.PReLU)} == widths


def _keys(model: nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize(("name", "theirs", "options"), [
    ("alexnet_tv", lambda: torchvision.models.alexnet(weights=None), {}),
    ("densenet121", lambda: torchvision.models.densenet121(weights=None), {}),
    ("googlenet", lambda: torchvision.models.GoogLeNet(aux_logits=False, init_weights=False), {"tv_compatible": True}),
])
def test_parameter_free_activations_keep_torchvision_keys(name: str, theirs, options: dict) -> None:
    with torch.device("meta"):
        tv = _keys(theirs())
        assert _keys(create_model(name, activation="silu", **options)) == tv
        learned = _keys(create_model(name, activation="prelu", **options))
    assert set(tv) < set(learned) and all(learned[k] == v for k, v in tv.items())


def test_alexnet_tv_keeps_the_sequential_indices() -> None:
    with torch.device("meta"):
        model = create_model("alexnet_tv", activation="prelu")
    acts = [f"{part}.{i}" for part in ("features", "classifier")
            for i, m in enumerate(getattr(model, part)) if isinstance(m, nn.PReLU)]
    assert acts == ["features.1", "features.4", "features.7", "features.9", "features.11",
                    "classifier.2", "classifier.5"]


@pytest.mark.parametrize("activation", ["relu", "silu", "elu", {"name": "leaky_relu", "slope": 0.2}])
def test_xception_first_activation_leaves_the_shortcut_input_alone(activation: str | dict) -> None:
    block = XceptionBlock(8, (8, 8), act=activation).eval()
    first, second = (m for m in block.residual if hasattr(m, "inplace"))  # the two activations
    assert first.inplace is False and second.inplace is True
    x = torch.randn(2, 8, 6, 6)
    with torch.no_grad():
        expected = block.residual(x.clone()) + x
        torch.testing.assert_close(block(x), expected)


def test_conv_bn_act_keeps_the_size_and_normalises() -> None:
    block = conv_bn_act(3, 8, 5, stride=1, act="relu").train()
    x = torch.randn(4, 3, 9, 11)
    out = block(x)
    assert out.shape == (4, 8, 9, 11) and block[0].bias is None  # 'same' padding; BN makes a bias redundant
    pre = block[1](block[0](x))  # batch statistics: each channel mean 0, var 1 before the ReLU
    torch.testing.assert_close(pre.mean((0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)
    assert (out >= 0).all() and conv_bn_act(4, 4, 3, stride=2)(torch.randn(1, 4, 8, 8)).shape == (1, 4, 4, 4)


def test_paper_lrn_is_the_papers_formula() -> None:
    x = torch.randn(2, 7, 3, 3)
    size, alpha, beta, k = 5, 1e-4, 0.75, 2.0
    expected = torch.empty_like(x)
    for i in range(7):  # b_i = a_i / (k + α Σ_{j=max(0,i-n/2)}^{min(N-1,i+n/2)} a_j²)^β
        lo, hi = max(0, i - size // 2), min(6, i + size // 2)
        expected[:, i] = x[:, i] / (k + alpha * (x[:, lo:hi + 1] ** 2).sum(1)) ** beta
    torch.testing.assert_close(paper_lrn(size, alpha, beta, k)(x), expected)
