"""Networks from a spec (cnnkit.models.spec): the grammar token by token, groups, YAML files, the output layer's
width, one-line errors; LeNet-5 from its spec has the paper's 61,706 parameters in `cnnkit inspect`; an MLP spec
trains on the digits through the CLI, and its run folder evaluates, predicts and exports with no spec file beside it."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tests.conftest import assert_one_line_error, run_cli
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec
from cnnkit.models.layers import Maxout
from cnnkit.models.spec import SpecNet, build_spec_net, canonical_name, expand, parse, run_label, spec_text

LENET5 = "conv6k5-tanh-avgpool2-conv16k5-tanh-avgpool2-fc120-tanh-fc84-tanh-fc10"


def net(text: str, num_classes: int = 10, size: tuple[int, int, int] = (3, 32, 32)) -> SpecNet:
    return build_spec_net(text, num_classes=num_classes, in_channels=size[0], input_size=size[1:])


def layers(model: nn.Module) -> dict[str, nn.Module]:
    return dict(model.named_children())


# ---------------------------------------------------------------- LeNet-5 and inspect

def test_lenet5_spec_has_61706_parameters_in_inspect(capsys) -> None:
    code, out, err = run_cli(capsys, "inspect", f"spec:{LENET5}", "--input", "1x32x32", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["total_params"] == 61_706  # 156 + 2,416 + 48,120 + 10,164 + 850
    params = {r["name"]: r["params"] for r in report["layers"] if r["params"]}
    assert params == {"conv1": 156, "conv2": 2_416, "fc1": 48_120, "fc2": 10_164, "fc3": 850}
    assert report["size_mismatches"] == []  # the notes' output-size formula agrees with the forward pass


def test_lenet5_spec_is_the_zoo_lenet5() -> None:
    ours, zoo = net(LENET5, size=(1, 32, 32)), create_model("lenet5", num_classes=10, variant="classic")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(zoo) == 61_706
    assert [type(m) for m in ours.children()].count(nn.AvgPool2d) == 2
    assert ours(torch.randn(2, 1, 32, 32)).shape == (2, 10)


# ---------------------------------------------------------------- the grammar

def test_tokens_parse_into_kind_number_and_options() -> None:
    conv, act, drop, fc = parse("conv32k3s2psame-leaky_relu-dropout.25-fc")
    assert (conv.kind, conv.n, conv.opts) == ("conv", 32, {"k": 3, "s": 2, "p": "same"})
    assert (act.kind, act.token) == ("act", "leaky_relu") and drop.n == 0.25 and fc.n is None


def test_conv_tokens_set_filters_kernel_stride_padding_dilation() -> None:
    m = layers(net("conv8-conv16k5s2p2-conv4k3psame-conv4k3d2psame-conv4k3p0-fc", size=(3, 33, 33)))
    assert (m["conv1"].out_channels, m["conv1"].kernel_size, m["conv1"].padding) == (8, (3, 3), (0, 0))
    assert (m["conv2"].kernel_size, m["conv2"].stride, m["conv2"].padding) == ((5, 5), (2, 2), (2, 2))
    assert m["conv3"].padding == (1, 1) and (m["conv4"].dilation, m["conv4"].padding) == ((2, 2), (2, 2))
    assert m["conv5"].padding == (0, 0)


@pytest.mark.parametrize(("token", "kind", "attrs"), [
    ("pool2", nn.MaxPool2d, {"kernel_size": 2, "stride": 2}),
    ("maxpool3s2", nn.MaxPool2d, {"kernel_size": 3, "stride": 2}),
    ("maxpool3s2p1", nn.MaxPool2d, {"padding": 1}),
    ("avgpool2", nn.AvgPool2d, {"kernel_size": 2, "stride": 2}),
    ("bn", nn.BatchNorm2d, {"num_features": 4}),
    ("lrn", nn.LocalResponseNorm, {"size": 5}),
    ("lrn3", nn.LocalResponseNorm, {"size": 3}),
    ("sdropout0.2", nn.Dropout2d, {"p": 0.2}),
    ("dropout", nn.Dropout, {"p": 0.5}),
    ("gap", nn.AdaptiveAvgPool2d, {}),
    ("gmp", nn.AdaptiveMaxPool2d, {}),
    ("elu", nn.ELU, {}),
    ("prelu", nn.PReLU, {"num_parameters": 4}),
    ("maxout", Maxout, {"k": 2}),
])
def test_each_token_builds_its_layer(token: str, kind: type, attrs: dict) -> None:
    model = net(f"conv4k3-{token}-fc")
    built = list(model.children())[1]
    assert isinstance(built, kind)
    assert {a: getattr(built, a) for a in attrs} == attrs
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vectors_take_bn1d_and_fc_flattens_maps() -> None:
    m = layers(net("conv4k3-fc32-bn-relu-dropout0.3-fc", size=(1, 8, 8)))
    assert list(m) == ["conv1", "flatten1", "fc1", "bn1", "relu1", "dropout1", "fc2"]
    assert m["fc1"].in_features == 4 * 6 * 6 and isinstance(m["bn1"], nn.BatchNorm1d)


def test_an_mlp_has_no_convolution() -> None:
    model = net("flatten-fc256-relu-fc10", size=(1, 28, 28))
    assert not any(isinstance(m, nn.Conv2d) for m in model.modules())
    assert [m.in_features for m in model.modules() if isinstance(m, nn.Linear)] == [784, 256]


def test_maxout_layers_over_vectors_and_maps() -> None:
    m = layers(net("maxout8x3k3s2psame-flatten-maxout120x4-fc", size=(3, 16, 16)))
    assert isinstance(m["maxout1"].affine, nn.Conv2d) and m["maxout1"].affine.out_channels == 24
    assert m["maxout1"].affine.stride == (2, 2) and m["maxout1"].k == 3
    assert isinstance(m["maxout2"].affine, nn.Linear) and m["maxout2"].affine.weight.shape == (480, 8 * 8 * 8)
    assert m["fc1"].in_features == 120


def test_groups_repeat_and_nest() -> None:
    assert expand("[conv8k3-pool2]x2-fc") == "conv8k3-pool2-conv8k3-pool2-fc"
    assert expand("[[conv8k3]x2-pool2]×2") == "conv8k3-conv8k3-pool2-conv8k3-conv8k3-pool2"
    m = layers(net("[conv32k3psame-conv32k3psame-pool2]x2-conv64k3s2-gap-fc"))
    assert [n for n in m if n.startswith(("conv", "maxpool"))] == \
        ["conv1", "conv2", "maxpool1", "conv3", "conv4", "maxpool2", "conv5"]


# ---------------------------------------------------------------- the output layer

def test_a_bare_fc_takes_the_tasks_outputs() -> None:
    assert net("flatten-fc16-relu-fc", num_classes=3)(torch.randn(2, 3, 32, 32)).shape == (2, 3)
    assert get_spec("spec:flatten-fc").head == "fc1"


def test_an_explicit_output_width_follows_the_task_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="fc10 gives 10 outputs but the task has 3; it is built as fc3"):
        model = net("flatten-fc10", num_classes=3)
    assert layers(model)["fc1"].out_features == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert layers(net("flatten-fc10", num_classes=10))["fc1"].out_features == 10


def test_a_spec_without_a_final_fc_gets_one() -> None:
    model = net("conv8k3-gap", num_classes=4)
    assert list(layers(model))[-1] == "fc1" and layers(model)["fc1"].out_features == 4
    assert get_spec("spec:conv8k3-gap").head == "fc1"
    assert get_spec("spec:fc32-relu-fc32-pool2").head == "fc3"  # fc32 is followed by a layer: not the output


def test_without_a_task_the_outputs_are_the_last_fcs() -> None:  # what `cnnkit inspect spec:...` builds
    from cnnkit.diagnose.inspect import default_num_classes

    assert default_num_classes(get_spec("spec:flatten-fc7")) == 7
    assert default_num_classes(get_spec("spec:flatten-fc16-relu-fc")) == 10
    assert get_spec("spec:flatten-fc7").fn(input_size=(8, 8))(torch.zeros(1, 3, 8, 8)).shape == (1, 7)


# ---------------------------------------------------------------- YAML files and names

def test_a_yaml_file_gives_the_same_spec(tmp_path: Path) -> None:
    listed, mapped = tmp_path / "listed.yaml", tmp_path / "mapped.yml"
    listed.write_text("- conv6k5\n- tanh\n- avgpool2\n- '[conv16k5-tanh-avgpool2]x1'\n- fc120\n- tanh\n- fc84\n"
                      "- tanh\n- fc10\n")
    mapped.write_text("layers:\n  - {conv: 6, kernel: 5}\n  - tanh\n  - {avgpool: 2}\n"
                      "  - {repeat: 1, layers: [{conv: 16, kernel: 5, padding: 0}, tanh, {avgpool: 2, stride: 2}]}\n"
                      "  - {fc: 120}\n  - tanh\n  - {fc: 84}\n  - tanh\n  - {fc: 10}\n")
    for path in (listed, mapped):
        text = spec_text(f"spec:{path}")
        assert expand(text).replace("p0", "").replace("avgpool2s2", "avgpool2") == LENET5
        assert canonical_name(f"spec:{path}") == f"spec:{text}"
        model = create_model(f"spec:{path}", num_classes=10, in_channels=1, input_size=(1, 32, 32))
        assert sum(p.numel() for p in model.parameters()) == 61_706
    assert run_label(f"spec:{listed}") == "spec-listed"
    assert run_label("spec:flatten-fc64-relu-fc10") == "spec-flatten-fc64-relu-fc10"
    assert run_label("lenet5") == "lenet5"


def test_spec_names_with_a_dot_are_no_pretrained_weights() -> None:
    model = create_model("spec:flatten-dropout0.5-fc", num_classes=2, input_size=(1, 8, 8))
    assert layers(model)["dropout1"].p == 0.5 and get_spec("spec:FLATTEN - fc").name == "spec:flatten-fc"


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize(("text", "fragment"), [
    ("cnv32k3-fc", "unknown spec token 'cnv32k3' (did you mean conv?)"),
    ("conv-fc", "'conv' needs its number; write it as conv<F>"),
    ("conv32q3-fc", "write it as conv<F>[k<K>]"),
    ("pool2k3-fc", "'pool2k3' has a bad option 'k'"),
    ("conv8k3k5-fc", "bad option 'repeated'"),
    ("fc12.5", "needs a whole number"),
    ("gap4", "takes no number"),
    ("flatten-dropout1.5-fc", "a dropout rate lies in [0, 1)"),
    ("flatten-conv8k3", "'conv8k3' needs feature maps"),
    ("flatten-sdropout-fc", "'sdropout' needs feature maps"),
    ("flatten-maxout8x2k3", "a maxout over a vector is a Linear layer"),
    ("conv8k9-fc", "'conv8k9' gets a 8×8 map, smaller than its 9×9 window"),
    ("conv8--fc", "empty token"),
    ("[conv8k3-fc", "unclosed group"),
    ("[conv8k3]x0-fc", "repeats nothing"),
    ("pool3p2-fc", "padding 2 is over half"),
])
def test_bad_specs_are_one_line_errors(text: str, fragment: str) -> None:
    with pytest.raises(CnnkitError) as err:
        net(text, size=(1, 8, 8))
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_a_bad_spec_on_the_command_line_is_exit_code_2(capsys, tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "train", "--data", "digits", "--model", "spec:flatten-fc64-relu-fcx",
                           "--epochs", "1", "--out", str(tmp_path / "run"))
    assert_one_line_error(code, err, "spec token 'fcx' is not understood", "fc<N>")
    assert code == 2 and not (tmp_path / "run").exists()
    code, _, err = run_cli(capsys, "inspect", "spec:conv8k3-relu-maxpol2")
    assert_one_line_error(code, err, "unknown spec token 'maxpol2' (did you mean maxpool")
    code, _, err = run_cli(capsys, "inspect", f"spec:{tmp_path / 'missing.yaml'}")
    assert_one_line_error(code, err, "spec file not found")


# ---------------------------------------------------------------- a run, end to end

@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory) -> Path:
    """An MLP spec from a YAML file, trained 2 epochs on the digits through the CLI; then the file is deleted."""
    root = tmp_path_factory.mktemp("spec_run")
    spec = root / "mlp.yaml"
    spec.write_text("layers: [flatten, {fc: 64}, relu, fc]\n")
    from cnnkit.cli.app import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(["train", "--data", "digits", "--model", f"spec:{spec}", "--image-size", "16", "--epochs", "2",
                     "--out", str(root / "run")])
    assert code == 0
    spec.unlink()  # the run folder must need no spec file beside it
    return root / "run"


def test_an_mlp_spec_trains_on_digits_and_its_run_reloads(mlp_run: Path, capsys) -> None:
    from cnnkit.runs.folder import load_model

    model, card = load_model(mlp_run)
    assert card.architecture == "spec:flatten-fc64-relu-fc" and card.input_size == [1, 16, 16]  # digits: 1 channel
    assert isinstance(model, SpecNet) and not any(isinstance(m, nn.Conv2d) for m in model.modules())
    code, out, err = run_cli(capsys, "evaluate", str(mlp_run), "--json")
    assert code == 0, err
    assert json.loads(out)["accuracy"] > 0.6  # chance is 0.1
    images = mlp_run.parent / "images"
    images.mkdir()
    from sklearn.datasets import load_digits

    digits = load_digits()
    for i in range(2):
        Image.fromarray((digits.images[i] * 15.9).astype(np.uint8)).save(images / f"{i}.png")
    code, out, err = run_cli(capsys, "predict", str(mlp_run), str(images))
    assert code == 0, err
    assert "0.png" in out and "1.png" in out


def test_a_spec_run_exports_to_onnx(mlp_run: Path, capsys) -> None:
    pytest.importorskip("onnxruntime")
    from cnnkit.export.runtime import OnnxModel
    from cnnkit.runs.folder import load_model

    out = mlp_run.parent / "mlp.onnx"
    code, _, err = run_cli(capsys, "export", str(mlp_run), "--out", str(out))
    assert code == 0, err
    model, card = load_model(mlp_run)
    x = torch.randn(3, *card.input_size)
    with torch.no_grad():
        torch.testing.assert_close(OnnxModel(out)(x), model(x), atol=1e-4, rtol=1e-4)


def test_a_spec_with_maxout_and_strided_convs_exports_to_onnx(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from cnnkit.export.onnx import export_onnx
    from cnnkit.export.runtime import OnnxModel
    from cnnkit.runs.card import ModelCard

    text = "spec:conv8k3psame-bn-maxout-maxout8x2k3s2-sdropout-gmp-maxout16x3-dropout-fc"
    card = ModelCard(text, "multiclass", ["a", "b", "c"], [3, 16, 16], [0.5] * 3, [0.25] * 3)
    torch.manual_seed(0)
    model = card.build_model().eval()
    runtime = OnnxModel(export_onnx(model, card, tmp_path / "m.onnx"))
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(runtime(x), model(x), atol=1e-4, rtol=1e-4)
    assert runtime.card.architecture == text
