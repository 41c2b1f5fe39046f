"""Registry classifiers as segmentation encoders (cnnkit.models.segmentation.encoder): the stem split so the
stride-2 map exists, dilation as torchvision's replace_stride_with_dilation, trainable stages, and the errors."""
from __future__ import annotations

import pytest
import torch
import torchvision

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model
from cnnkit.models.segmentation.encoder import deepest, dilate, registry_encoder


def test_resnet_encoder_has_every_stride_from_2_to_32() -> None:
    body, weights = registry_encoder("resnet18", levels=5)
    assert weights is None and body.strides == [2, 4, 8, 16, 32] and body.out_channels == [64, 64, 128, 256, 512]
    with torch.no_grad():
        maps = body.eval()(torch.zeros(1, 3, 64, 64))
    assert [m.shape[-1] for m in maps.values()] == [32, 16, 8, 4, 2]


def test_trainable_layers_freeze_the_early_stages() -> None:
    body, _ = registry_encoder("resnet18", levels=3, trainable_layers=2)
    trains = [any(p.requires_grad for p in s.parameters()) for s in body.stages]
    assert trains[-2:] == [True, True] and not any(trains[:-2])
    with pytest.raises(CnnkitError, match="trainable_layers must be in 0.."):
        registry_encoder("resnet18", levels=3, trainable_layers=99)
    with pytest.raises(CnnkitError, match="ask for at most that many levels"):
        registry_encoder("resnet18", levels=9)


def test_dilated_resnet_matches_torchvision_replace_stride_with_dilation() -> None:
    torch.manual_seed(0)
    classifier = create_model("resnet50").eval()
    body, _ = registry_encoder("resnet50", levels=1)
    body.load_state_dict(dict(zip(body.state_dict(), classifier.state_dict().values())))
    dilate(body, 8)
    theirs = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, True, True]).eval()
    theirs.load_state_dict(classifier.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = torch.nn.Sequential(*list(theirs.children())[:-2])(x)
        torch.testing.assert_close(deepest(body.eval(), x), expected)
    assert body.strides == [8]


def test_dilate_refuses_other_strides_and_pooling_backbones() -> None:
    body, _ = registry_encoder("resnet18", levels=1)
    with pytest.raises(CnnkitError, match="output_stride must be 8, 16 or 32"):
        dilate(body, 4)
    vgg, _ = registry_encoder("vgg11", levels=1)
    with pytest.raises(CnnkitError, match="MaxPool2d strides past it"):
        dilate(vgg, 16)
