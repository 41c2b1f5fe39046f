"""Detection backbones (cnnkit.models.detection.backbones): registry classifiers cut into stages, their maps'
channels and strides, the FPN and last-map wrappers, trainable layers and weights, and the refused backbones."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import LastMap, StageFeatures, WithFPN, build_backbone
from cnnkit.models.factory import create_model, get_spec, list_models


def test_registry_lists_the_detectors(detectors):
    assert {"faster_rcnn", "ssd", "yolo"} <= set(list_models(task="detect"))
    assert not set(list_models(task="detect")) & set(list_models(task="classify"))
    assert {name for name, _ in detectors.small.values()} == set(list_models(task="detect"))


def test_stage_features_return_what_the_classifier_computes():
    torch.manual_seed(0)
    classifier = create_model("resnet18").eval()
    body = StageFeatures(classifier, get_spec("resnet18")).eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        maps = body(x)
        h = classifier.maxpool(classifier.act(classifier.bn1(classifier.conv1(x))))
        c3 = classifier.layer2(classifier.layer1(h))
        c4 = classifier.layer3(c3)
        c5 = classifier.layer4(c4)
    assert body.strides == [8, 16, 32] and list(maps) == ["0", "1", "2"]
    for got, expected in zip(maps.values(), (c3, c4, c5)):
        torch.testing.assert_close(got, expected)


def test_fpn_and_last_map_wrappers():
    fpn = build_backbone("resnet18", fpn=True, out_channels=32)
    last = build_backbone("resnet18", fpn=False, out_channels=32)
    assert isinstance(fpn, WithFPN) and fpn.strides == [8, 16, 32, 64]
    assert isinstance(last, LastMap) and last.strides == [32]
    with torch.no_grad():
        maps = fpn(torch.zeros(1, 3, 64, 64))
        assert [tuple(m.shape[1:]) for m in maps.values()] == [(32, 8, 8), (32, 4, 4), (32, 2, 2), (32, 1, 1)]
        assert tuple(last(torch.zeros(1, 3, 64, 64))["0"].shape) == (1, 32, 2, 2)


def test_efficientnet_lite0_backbone_channels_and_strides():
    body = StageFeatures.from_registry("efficientnet_lite0", levels=4)
    assert body.out_channels == [24, 40, 112, 1280] and body.strides == [4, 8, 16, 32]
    maps = body(torch.zeros(1, 3, 128, 160))
    assert list(maps) == ["0", "1", "2", "3"]
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(24, 32, 40), (40, 16, 20), (112, 8, 10), (1280, 4, 5)]
    assert StageFeatures.from_registry("resnet18").out_channels == [128, 256, 512]
    assert StageFeatures.from_registry("vgg11").strides == [8, 16, 32]


def test_trainable_layers_and_backbone_weights_file(tmp_path):
    classifier = create_model("resnet18", num_classes=10)
    path = tmp_path / "resnet18.pt"
    torch.save(classifier.state_dict(), path)
    model = create_model("faster_rcnn", num_classes=2, backbone="resnet18", backbone_weights=path)
    body = model.detector.backbone.body
    assert torch.equal(body.stages[0][0].weight, classifier.conv1.weight)  # the file's weights
    trainable = [any(p.requires_grad for p in s.parameters()) for s in body.stages]
    assert trainable == [False, False, True, True, True]  # with weights: layer2-4 train, stem and layer1 frozen
    bn = body.stages[-1][0][0].bn1  # layer4's first block
    assert not bn.weight.requires_grad  # frozen BN with pretrained weights, as torchvision
    scratch = create_model("yolo", num_classes=2, trainable_layers=1)
    assert [any(p.requires_grad for p in s.parameters()) for s in scratch.body.stages] == [False] * 4 + [True]


@pytest.mark.parametrize("name", ["faster_rcnn", "ssd", "yolo"])
def test_unknown_backbone_says_did_you_mean(name):
    with pytest.raises(CnnkitError, match="unknown backbone 'resnet81'.*did you mean.*resnet18"):
        create_model(name, num_classes=2, backbone="resnet81")


def test_refused_backbones():
    with pytest.raises(CnnkitError, match="backbone"):
        create_model("faster_rcnn", num_classes=2, backbone="faster_rcnn")  # a detector is no backbone
    with pytest.raises(CnnkitError, match="alexnet cannot serve as a detection backbone"):
        create_model("yolo", num_classes=2, backbone="alexnet")


def test_misspelt_backbone_weights_say_did_you_mean() -> None:
    with pytest.raises(CnnkitError, match="did you mean 'resnet18.imagenet'"):
        create_model("yolo", num_classes=2, backbone="resnet18.imagenett")
