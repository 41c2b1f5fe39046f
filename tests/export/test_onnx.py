"""ONNX export (cnnkit.export.onnx): every registry classifier and segmenter gives onnxruntime the output of the
PyTorch model to 1e-4 on real photos, with dynamic batch, dynamic H and W where the net allows, BN folded and
the model card in the metadata; bad requests are refused in one line."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F

from cnnkit.engine.inference import folded_pairs
from cnnkit.errors import CnnkitError
from cnnkit.export.onnx import OUTPUT_MEANING, export_onnx
from cnnkit.export.runtime import OnnxModel
from cnnkit.models.factory import create_model, get_spec, list_models
from cnnkit.runs.card import ModelCard

# built and exported in a second or two each; the others (VGG, AlexNet: 200-500 MB files; the deep ResNets)
# run with the slow tests
FAST = {"lenet5", "resnet18", "resnet20", "efficientnet_lite0", "googlenet", "xception", "plain18"}
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def photos(size: int, channels: int = 3) -> torch.Tensor:
    """Three real photos (scikit-image's cat, coffee and astronaut) resized to size², normalised: (3, C, s, s)."""
    skimage_data = pytest.importorskip("skimage.data")
    images = [torch.from_numpy(f()).permute(2, 0, 1).float().div(255)
              for f in (skimage_data.chelsea, skimage_data.coffee, skimage_data.astronaut)]
    x = torch.stack([F.interpolate(i[None], size=(size, size), mode="bilinear", antialias=True)[0] for i in images])
    x = (x - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    return x.mean(1, keepdim=True) if channels == 1 else x


def calibrated(model: torch.nn.Module, x: torch.Tensor) -> torch.nn.Module:
    """The model with its batch-norm statistics measured on `x` (as after training), in eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # a cumulative average: the exact statistics of what it sees
    with torch.no_grad():
        model.train()(x)
    return model.eval()


def card_for(name: str, size: int, channels: int, task: str = "multiclass", classes: int = 3) -> ModelCard:
    return ModelCard(name, task, [f"c{i}" for i in range(classes)], [channels, size, size],
                     MEAN[:channels] if channels == 3 else [0.5], STD[:channels] if channels == 3 else [0.25])


def assert_matches_torch(model: torch.nn.Module, runtime: OnnxModel, x: torch.Tensor) -> None:
    """onnxruntime's output is torch's to 1e-4; in the deepest nets (ResNet-101/152, Plain-34, DeepLabV3), where
    fp32 itself drifts that far (torch fp32 is 1e-4 to 3e-4 from an fp64 evaluation of the same weights), it
    is as close to the fp64 evaluation as torch fp32 is (within 2×)."""
    with torch.no_grad():
        want = model(x)
    got = runtime(x)
    assert got.shape == want.shape
    if float((got - want).abs().max()) <= 1e-4:
        return
    with torch.no_grad():
        exact = copy.deepcopy(model).double()(x.double())
    torch_error, onnx_error = (want.double() - exact).abs().max(), (got.double() - exact).abs().max()
    assert onnx_error <= 2 * torch_error + 1e-5, (float(onnx_error), float(torch_error))


def _mark(name: str):
    return name if name in FAST else pytest.param(name, marks=pytest.mark.slow)


@pytest.mark.parametrize("name", [_mark(n) for n in list_models(task="classify")])
def test_every_registry_classifier_exports_and_onnxruntime_matches_torch(name: str, tmp_path: Path) -> None:
    c, h, _ = get_spec(name).input_size
    size = min(h, 64)
    x = photos(size, c)
    torch.manual_seed(0)
    model = calibrated(create_model(name, num_classes=3, in_channels=c), x)
    card = card_for(name, size, c)
    path = export_onnx(model, card, tmp_path / "m.onnx")
    onnx.checker.check_model(str(path))
    runtime = OnnxModel(path)
    assert runtime(x).shape == (3, 3)
    assert_matches_torch(model, runtime, x)
    assert_matches_torch(model, runtime, x[:1])  # the batch axis is dynamic
    assert runtime.card == card and runtime.metadata["cnnkit.output"] == OUTPUT_MEANING["multiclass"]
    # BN is folded into every conv it follows; only the BNs that follow no conv (DenseNet's) stay
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    left = [n for n in onnx.load(str(path)).graph.node if n.op_type == "BatchNormalization"]
    assert len(left) == len(norms) - len(folded_pairs(model))
    if json.loads(runtime.metadata["cnnkit.dynamic_size"]):  # another size runs, and still matches torch
        assert_matches_torch(model, runtime, photos(size + 32, c))


def test_a_fixed_size_net_is_exported_at_the_card_size_and_says_so(tmp_path: Path) -> None:
    x = photos(32, 1)
    model = calibrated(create_model("lenet5", num_classes=3, in_channels=1), x)
    runtime = OnnxModel(export_onnx(model, card_for("lenet5", 32, 1), tmp_path / "lenet.onnx"))
    assert runtime.metadata["cnnkit.dynamic_size"] == "false"
    shape = runtime.session.get_inputs()[0].shape
    assert shape[1:] == [1, 32, 32] and not isinstance(shape[0], int)  # (batch, 1, 32, 32)


SEGMENTERS = {"unet": {"base": 8}, "fcn32s": {}, "fcn16s": {}, "fcn8s": {}, "segnet": {}, "deeplabv3": {}}


@pytest.mark.parametrize("name", [n if n == "unet" else pytest.param(n, marks=pytest.mark.slow)
                                  for n in list_models(task="segment")])
def test_every_registry_segmenter_exports_and_matches_torch(name: str, tmp_path: Path) -> None:
    x = photos(64)
    torch.manual_seed(0)
    model = calibrated(create_model(name, num_classes=4, **SEGMENTERS.get(name, {})), x)
    card = card_for(name, 64, 3, task="segment", classes=4)
    runtime = OnnxModel(export_onnx(model, card, tmp_path / "seg.onnx"))
    assert runtime(x).shape == (3, 4, 64, 64)
    assert_matches_torch(model, runtime, x)
    assert runtime.metadata["cnnkit.output"] == OUTPUT_MEANING["segment"]


def test_an_unexportable_model_is_refused_in_one_line(tmp_path: Path) -> None:
    class Numpyish(torch.nn.Module):  # leaves torch for NumPy: no exporter can trace it
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(np.sort(x.detach().numpy(), axis=1)[:, :3, 0, 0].copy())

    card = card_for("lenet5", 8, 3)  # the trace records a constant: the check against torch catches it
    with pytest.raises(CnnkitError, match=r"^lenet5 cannot be exported to ONNX: the traced graph does not") as err:
        export_onnx(Numpyish(), card, tmp_path / "x.onnx")
    assert "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # no half-written file is left behind
