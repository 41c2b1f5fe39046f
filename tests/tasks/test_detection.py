"""cnnkit.tasks.detection: DetectionTask and InstanceTask on a real torchvision detector and on a scripted one
(whose detections are known, so the epoch's metrics can be checked against cnnkit.metrics.detection)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator

from cnnkit.errors import CnnkitError
from cnnkit.metrics.detection import evaluate_detections, evaluate_instances
from cnnkit.metrics.mask_rle import encode_masks
from cnnkit.tasks import Batch, DetectionTask, InstanceTask

CLASSES = ["cat", "dog"]
IMAGES = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def box_mask(box: list[float]) -> torch.Tensor:
    mask = torch.zeros(32, 32, dtype=torch.uint8)
    x0, y0, x1, y1 = (int(v) for v in box)
    mask[y0:y1, x0:x1] = 1
    return mask


def targets(masks: bool = False) -> list[dict]:
    boxes = [[[2.0, 3, 14, 15], [18, 18, 30, 28]], [[5.0, 5, 25, 20]]]
    out = []
    for i, bs in enumerate(boxes):
        t = {"boxes": torch.tensor(bs), "labels": torch.tensor([0, 1][:len(bs)]), "image_id": i, "scale": 1.0}
        if masks:
            t["masks"] = torch.stack([box_mask(b) for b in bs])
        out.append(t)
    return out


def detections(masks: bool = False) -> list[dict]:
    """The first image found well (one box shifted by a pixel, one wrong class), the second missed + a false one."""
    dets = [{"boxes": torch.tensor([[3.0, 3, 15, 15], [18, 18, 30, 28]]), "scores": torch.tensor([0.9, 0.8]),
             "labels": torch.tensor([0, 0])},
            {"boxes": torch.tensor([[0.0, 0, 6, 6]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])}]
    if masks:  # Mask R-CNN's (D, 1, H, W) probabilities
        for d in dets:
            d["masks"] = torch.stack([box_mask(b.tolist()) for b in d["boxes"]])[:, None].float() * 0.9
    return dets


class Scripted(nn.Module):
    """torchvision's detector convention: losses from (images, targets) in training, detections in eval."""

    def __init__(self, dets: list[dict]):
        super().__init__()
        self.dets, self.w = dets, nn.Parameter(torch.tensor(1.0))
        self.seen: list = []

    def forward(self, images, targets=None):
        if self.training:
            self.seen.append(targets)
            return {"loss_classifier": 0.5 * self.w, "loss_box_reg": 0.25 * self.w ** 2}
        return [dict(d) for d in self.dets[:len(images)]]


def tiny_faster_rcnn() -> FasterRCNN:
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=4, padding=1), nn.ReLU())
    backbone.out_channels = 8
    anchors = AnchorGenerator(sizes=((8, 16),), aspect_ratios=((1.0,),))
    return FasterRCNN(backbone, num_classes=3, rpn_anchor_generator=anchors, min_size=32, max_size=32,
                      box_roi_pool=None)


def test_training_step_sums_a_torchvision_detectors_losses():
    torch.manual_seed(0)
    model = tiny_faster_rcnn().train()
    plain = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets()]
    torch.manual_seed(1)  # the RPN and the box head sample proposals at random: the same draws both times
    reference = model(list(IMAGES), plain)
    torch.manual_seed(1)
    out = DetectionTask(model).training_step(Batch(list(IMAGES), [{**t, "image_id": 7} for t in plain]))
    assert set(reference) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    assert float(out.loss.detach()) == pytest.approx(float(sum(reference.values()).detach()), rel=1e-6)
    for name, value in reference.items():
        assert float(out.logs[name]) == pytest.approx(float(value.detach()), rel=1e-6)
    out.loss.backward()  # the sum is what trains the detector
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_training_step_passes_only_what_detectors_read():
    model = Scripted(detections()).train()
    out = DetectionTask(model).training_step(Batch(IMAGES, targets(masks=True)))
    assert float(out.loss.detach()) == pytest.approx(0.75) and float(out.logs["loss_box_reg"]) == pytest.approx(0.25)
    assert [set(t) for t in model.seen[0]] == [{"boxes", "labels", "masks"}] * 2  # image_id, scale stay out


def test_epoch_map_equals_evaluate_detections_on_the_same_predictions():
    task = DetectionTask(Scripted(detections()).eval(), classes=CLASSES)
    assert task.epoch_metrics() == {}
    out = task.validation_step(Batch(IMAGES, targets()))
    assert float(out.loss) == 0.0
    metrics = task.epoch_metrics()
    reference = evaluate_detections(targets(), detections(), CLASSES)
    assert metrics == {k: pytest.approx(max(reference[k], 0.0)) for k in ("map", "map50", "map75")}
    assert 0 < metrics["map50"] < 1 and task.epoch_metrics() == {}  # reset after reading


def test_perfect_detections_score_a_map_of_one():
    perfect = [{"boxes": t["boxes"], "labels": t["labels"], "scores": torch.ones(len(t["labels"]))}
               for t in targets()]
    task = DetectionTask(Scripted(perfect).eval(), classes=CLASSES)
    task.validation_step(Batch(IMAGES, targets()))
    assert task.epoch_metrics() == {"map": pytest.approx(1.0), "map50": pytest.approx(1.0), "map75": pytest.approx(1.0)}


def test_predict_step_returns_one_cpu_dict_per_image():
    predictions = DetectionTask(Scripted(detections()).eval()).predict_step(IMAGES)
    assert len(predictions) == 2 and all(set(p) == {"boxes", "scores", "labels"} for p in predictions)
    torch.testing.assert_close(predictions[0]["boxes"], detections()[0]["boxes"])


def test_detection_refuses_a_loss_and_options_of_other_tasks():
    with pytest.raises(CnnkitError, match="trains with its own losses; drop --loss focal") as info:
        DetectionTask(Scripted([]), "focal")
    assert "\n" not in str(info.value)
    with pytest.raises(CnnkitError, match="label_smoothing do not apply to detection"):
        DetectionTask(Scripted([]), label_smoothing=0.1)
    DetectionTask(Scripted([]), "detection", class_weight=None)  # its own name and unset options are fine


def test_instance_task_scores_boxes_and_masks_as_evaluate_instances():
    task = InstanceTask(Scripted(detections(masks=True)).eval(), classes=CLASSES)
    task.validation_step(Batch(IMAGES, targets(masks=True)))
    metrics = task.epoch_metrics()
    reference = evaluate_instances(targets(masks=True), detections(masks=True), CLASSES)
    keys = ("map", "map50", "map75", "mask_map", "mask_map50", "mask_map75")
    assert metrics == {k: pytest.approx(max(reference[k], 0.0)) for k in keys}
    predictions = task.predict_step(IMAGES)
    assert predictions[0]["rles"] == encode_masks(detections(masks=True)[0]["masks"])


def test_instance_task_needs_masks():
    task = InstanceTask(Scripted(detections()).eval())
    with pytest.raises(CnnkitError, match="needs masks in every target and detection"):
        task.validation_step(Batch(IMAGES, targets()))
