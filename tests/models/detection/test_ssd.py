"""SSD (cnnkit.models.detection.ssd): the detector contract, the extra stride-2 maps after the backbone's three,
default boxes per map, and the option checks."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import StageFeatures
from cnnkit.models.detection.ssd import SSDBackbone
from cnnkit.models.factory import create_model


def test_train_mode_gives_finite_scalar_losses(detectors):
    detectors.train("ssd")


def test_eval_mode_gives_detections_in_the_image(detectors):
    detectors.eval("ssd")


def test_thresholds_take_effect(detectors):
    detectors.thresholds("ssd")


@pytest.mark.slow
def test_overfits_one_batch_and_recovers_the_boxes(detectors):
    detectors.overfit("ssd")


def test_extra_layers_halve_the_last_map_each_time():
    body = StageFeatures.from_registry("resnet18", levels=3)
    features = SSDBackbone(body, extra_layers=3, width=32).eval()
    with torch.no_grad():
        maps = features(torch.zeros(1, 3, 128, 128))
    assert list(maps) == ["0", "1", "2", "3", "4", "5"]
    assert [m.shape[-1] for m in maps.values()] == [16, 8, 4, 2, 1, 1]  # strides 8, 16, 32, then ÷2 (3×3, pad 1)
    assert features.out_channels == [128, 256, 512, 32, 32, 32] == [m.shape[1] for m in maps.values()]


def test_default_boxes_per_location(detectors):
    model = detectors.build("ssd")
    # aspect ratios 1, 2, 1/2 (+ the extra square) = 4 boxes; 1, 2, 1/2, 3, 1/3 (+ square) = 6 on the middle maps
    assert model.detector.anchor_generator.num_anchors_per_location() == [4, 6, 6, 6, 4, 4]
    assert model.detector.head.classification_head.module_list[0].out_channels == 4 * (detectors.num_classes + 1)


def test_bad_options_are_cnnkit_errors():
    with pytest.raises(CnnkitError, match="unknown SSD option 'topk_candidate'.*did you mean 'topk_candidates'"):
        create_model("ssd", num_classes=2, topk_candidate=100)
    with pytest.raises(CnnkitError, match="scales needs 7 values"):
        create_model("ssd", num_classes=2, scales=(0.1, 0.5))
