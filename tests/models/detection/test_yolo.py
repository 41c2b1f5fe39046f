"""YOLO (cnnkit.models.detection.yolo): the detector contract for the v1 and anchor-free heads, v1's loss against
the paper's formula worked by hand, the v1 head's output, and the option checks."""
from __future__ import annotations

import math

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.yolo import V1Head, yolo_v1_loss
from cnnkit.models.factory import create_model

KEYS = ("yolo-v1", "yolo-anchor-free")


@pytest.mark.parametrize("key", KEYS)
def test_train_mode_gives_finite_scalar_losses(detectors, key):
    detectors.train(key)


@pytest.mark.parametrize("key", KEYS)
def test_eval_mode_gives_detections_in_the_image(detectors, key):
    detectors.eval(key)


@pytest.mark.parametrize("key", KEYS)
def test_thresholds_take_effect(detectors, key):
    detectors.thresholds(key)


@pytest.mark.parametrize("key", KEYS)
def test_overfits_one_batch_and_recovers_the_boxes(detectors, key):
    detectors.overfit(key)


def test_yolo_v1_loss_by_hand():
    """S=2, B=1, C=2, one object in cell (row 0, col 0) of a 100-px image."""
    S, size = 2, 100
    target = {"boxes": torch.tensor([[10.0, 10, 40, 50]]), "labels": torch.tensor([0])}
    # the object: centre (0.25, 0.3), w 0.3, h 0.4 of the image → offsets in cell (0, 0): x 0.5, y 0.6
    pred = torch.zeros(1, S, S, 5 + 2)  # (N, S, S, B*5 + C)
    pred[0, 0, 0] = torch.tensor([0.4, 0.5, 0.5, 0.6, 0.7, 0.8, 0.2])  # x, y, √w, √h, conf, p(c0), p(c1)
    pred[0, 0, 1, 4], pred[0, 1, 0, 4], pred[0, 1, 1, 4] = 0.1, 0.2, 0.3  # confidences of the empty cells
    pred[0, 0, 1, 5:], pred[0, 1, 1, 5:] = torch.tensor([0.9, 0.1]), torch.tensor([0.3, 0.7])  # not counted
    # predicted box: centre (0.2, 0.25), w 0.25, h 0.36 → (0.075, 0.07, 0.325, 0.43); gt (0.1, 0.1, 0.4, 0.5)
    inter = (0.325 - 0.1) * (0.43 - 0.1)
    iou = inter / (0.25 * 0.36 + 0.3 * 0.4 - inter)
    expected = {
        "loss_xy": 5 * ((0.4 - 0.5) ** 2 + (0.5 - 0.6) ** 2),
        "loss_wh": 5 * ((0.5 - math.sqrt(0.3)) ** 2 + (0.6 - math.sqrt(0.4)) ** 2),
        "loss_obj": (0.7 - iou) ** 2,
        "loss_noobj": 0.5 * (0.1 ** 2 + 0.2 ** 2 + 0.3 ** 2),
        "loss_class": (0.8 - 1) ** 2 + (0.2 - 0) ** 2,
    }
    got = yolo_v1_loss(pred, [target], image_size=size, boxes_per_cell=1)
    for name, value in expected.items():
        assert got[name].item() == pytest.approx(value, rel=1e-5), name
    got = yolo_v1_loss(pred, [target], image_size=size, boxes_per_cell=1, rescore=False)
    assert got["loss_obj"].item() == pytest.approx((0.7 - 1) ** 2)
    # the same image twice: the loss is a mean over the images
    twice = yolo_v1_loss(pred.repeat(2, 1, 1, 1), [target, target], image_size=size, boxes_per_cell=1)
    assert twice["loss_wh"].item() == pytest.approx(expected["loss_wh"], rel=1e-5)


def test_yolo_v1_loss_responsible_predictor_is_the_best_iou():
    """B=2: predictor 1 matches the object exactly, so it is responsible; predictor 0 counts as no-object."""
    pred = torch.zeros(1, 1, 1, 2 * 5 + 1)  # S=1, C=1
    pred[0, 0, 0, :5] = torch.tensor([0.1, 0.1, 0.2, 0.2, 0.6])  # a small box far from the object
    pred[0, 0, 0, 5:10] = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.9])  # centre 0.5, w = h = 0.25: exact
    pred[0, 0, 0, 10] = 1.0
    target = {"boxes": torch.tensor([[37.5, 37.5, 62.5, 62.5]]), "labels": torch.tensor([0])}
    got = yolo_v1_loss(pred, [target], image_size=100, boxes_per_cell=2)
    assert got["loss_xy"].item() == pytest.approx(0, abs=1e-10)
    assert got["loss_wh"].item() == pytest.approx(0, abs=1e-10)
    assert got["loss_obj"].item() == pytest.approx((0.9 - 1) ** 2, rel=1e-5)
    assert got["loss_noobj"].item() == pytest.approx(0.5 * 0.6 ** 2, rel=1e-5)
    assert got["loss_class"].item() == pytest.approx(0, abs=1e-10)


def test_v1_head_gives_probabilities_per_cell():
    head = V1Head(16, num_classes=3, grid=4, boxes_per_cell=2, width=8).eval()
    with torch.no_grad():
        out = head([torch.randn(2, 16, 9, 7)])
    assert out.shape == (2, 4, 4, 2 * 5 + 3)
    assert ((out[..., :10] > 0) & (out[..., :10] < 1)).all()  # sigmoid: x, y, sqrt w, sqrt h, confidence
    torch.testing.assert_close(out[..., 10:].sum(-1), torch.ones(2, 4, 4))  # softmax over the classes


def test_bad_options_are_cnnkit_errors(detectors):
    with pytest.raises(CnnkitError, match="unknown yolo head 'v2'"):
        create_model("yolo", num_classes=2, head="v2")
    with pytest.raises(CnnkitError, match="bad option"):
        create_model("yolo", num_classes=2, no_such_option=1)
    model = detectors.build("yolo-v1").train()
    with pytest.raises(CnnkitError, match="needs targets"):
        model([torch.rand(3, 64, 64)])
