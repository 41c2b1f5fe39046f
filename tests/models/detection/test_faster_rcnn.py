"""Faster R-CNN (cnnkit.models.detection.faster_rcnn): the detector contract with and without FPN, anchors per
pyramid level, 0-based labels around torchvision's background class, the input checks and unknown options."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import LastMap, WithFPN
from cnnkit.models.detection.faster_rcnn import check_inputs
from cnnkit.models.factory import create_model

KEYS = ("faster_rcnn", "faster_rcnn-no-fpn")


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


def test_faster_rcnn_with_and_without_fpn(detectors):
    fpn = detectors.build("faster_rcnn")
    plain = detectors.build("faster_rcnn-no-fpn")
    assert isinstance(fpn.detector.backbone, WithFPN) and isinstance(plain.detector.backbone, LastMap)
    x = torch.zeros(1, 3, 96, 96)
    assert list(fpn.detector.backbone(x)) == ["0", "1", "2", "pool"]
    assert list(plain.detector.backbone(x)) == ["0"]
    # one anchor size per pyramid level (4 × stride); five sizes on the single map
    assert fpn.detector.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,))
    assert plain.detector.rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),)
    assert fpn.detector.roi_heads.box_predictor.cls_score.out_features == detectors.num_classes + 1  # + background


def test_labels_shift_past_torchvisions_background(detectors, monkeypatch):
    model = detectors.build("faster_rcnn").train()
    images, targets = detectors.batch()
    seen = {}
    inner = model.detector.forward

    def spy(imgs, tgts=None):
        seen["labels"] = [t["labels"].tolist() for t in tgts]
        return inner(imgs, tgts)

    monkeypatch.setattr(model.detector, "forward", spy)
    model(images, targets)
    assert seen["labels"] == [[1, 2], [2]]  # cnnkit's 0, 1 are torchvision's 1, 2 (0 is its background)


def test_inputs_are_checked():
    with pytest.raises(CnnkitError, match=r"each image must be a \(3, H, W\) float tensor"):
        check_inputs([torch.zeros(1, 8, 8)], None, training=False)
    with pytest.raises(CnnkitError, match="needs targets"):
        check_inputs([torch.zeros(3, 8, 8)], None, training=True)
    with pytest.raises(CnnkitError, match="2 images but 1 targets"):
        check_inputs([torch.zeros(3, 8, 8)] * 2, [{}], training=True)
    check_inputs(torch.zeros(2, 3, 8, 8), None, training=False)  # an (N, 3, H, W) batch is fine


def test_bad_options_are_cnnkit_errors():
    with pytest.raises(CnnkitError, match="unknown FasterRCNN option 'rpn_nms'"):
        create_model("faster_rcnn", num_classes=2, rpn_nms=0.5)
    with pytest.raises(CnnkitError, match="in_channels=3"):
        create_model("faster_rcnn", num_classes=2, in_channels=1)
    with pytest.raises(CnnkitError, match="anchor_sizes needs one tuple per feature map"):
        create_model("faster_rcnn", num_classes=2, anchor_sizes=((32,), (64,)))


@pytest.mark.parametrize("name, options", [("faster_rcnn", {}), ("mask_rcnn", {}), ("ssd", {}), ("yolo", {}),
                                           ("yolo", {"head": "anchor-free"})])
def test_every_detector_scores_and_places_boxes_in_fp32_under_bf16(name: str, options: dict) -> None:
    """bf16 keeps 8 bits: a box coordinate near 384 px would move in steps of 2 px. Each detector names the layers
    whose outputs are scores and box offsets (fp32_modules), and cnnkit.engine.precision runs them in fp32."""
    import functools

    from cnnkit.engine.precision import Precision

    torch.manual_seed(0)
    model = create_model(name, num_classes=3, **options)
    assert model.fp32_modules and all(model.get_submodule(n) is not None for n in model.fp32_modules)
    bf16 = Precision.resolve("bf16", torch.device("cpu"))
    bf16.prepare(model.eval())
    assert all(isinstance(model.get_submodule(n).forward, functools.partial) for n in model.fp32_modules)
    with torch.no_grad(), bf16.autocast():
        out = model([torch.rand(3, 96, 96)])
    assert out[0]["boxes"].dtype == out[0]["scores"].dtype == torch.float32


def test_box_probabilities_are_torchvisions_region_scores_of_the_given_boxes(detectors):
    """box_probabilities(images, boxes) equals torchvision's own RoI head run with those boxes as the proposals
    (no score threshold, no NMS): per class, the same scores."""
    model = detectors.build("faster_rcnn").eval()
    images, targets = detectors.batch()
    boxes = [t["boxes"] for t in targets]
    probs = model.box_probabilities(images, boxes)
    assert [p.shape for p in probs] == [(len(b), detectors.num_classes) for b in boxes]
    det = model.detector
    model.set_postprocess(score_thresh=0.0, nms_thresh=1.01, detections_per_img=1000)
    with torch.no_grad():
        sized, _ = det.transform(images)
        scale = [torch.tensor([nw / img.shape[2], nh / img.shape[1]] * 2) for img, (nh, nw) in
                 zip(images, sized.image_sizes)]
        found, _ = det.roi_heads(det.backbone(sized.tensors), [b * s for b, s in zip(boxes, scale)],
                                 sized.image_sizes)
    for p, f in zip(probs, found):
        for c in range(detectors.num_classes):
            theirs = f["scores"][f["labels"] == c + 1].sort().values
            assert torch.allclose(p[:, c].sort().values, theirs, atol=1e-5)


def test_box_probabilities_doubt_a_box_moved_off_its_object(detectors):
    """After fitting the batch, the model gives its true boxes their class and doubts the same boxes shifted
    sideways by half their width (IoU 1/3 with the object: background to Faster R-CNN's sampler)."""
    model = detectors.overfit("faster_rcnn")
    images, targets = detectors.batch()
    true = model.box_probabilities(images, [t["boxes"] for t in targets])
    moved = [t["boxes"] + torch.stack([w / 2, 0 * w, w / 2, 0 * w], 1)
             for t in targets for w in [t["boxes"][:, 2] - t["boxes"][:, 0]]]
    doubted = model.box_probabilities(images, moved)
    for p, q, t in zip(true, doubted, targets):
        own = torch.arange(len(t["labels"])), t["labels"]
        assert (p[own] > 0.5).all() and (q[own] < p[own]).all(), (p[own], q[own])
