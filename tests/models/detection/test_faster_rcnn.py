"""Detectors (cnnkit.models.detection), driven by the registry: the shared train/eval contract on every
task="detect" model, thresholds, over-fitting one fixed batch, YOLO v1's loss by hand, backbones and errors."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.ops import box_iou

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import LastMap, StageFeatures, WithFPN
from cnnkit.models.detection.yolo import yolo_v1_loss
from cnnkit.models.factory import create_model, list_models

torch.set_num_threads(2)

# small, CPU-friendly variants of every detector; the keys are test ids
SMALL = {
    "faster_rcnn": ("faster_rcnn", dict(min_size=96, max_size=128, out_channels=64, representation_size=256)),
    "faster_rcnn-no-fpn": ("faster_rcnn", dict(fpn=False, min_size=96, max_size=128, out_channels=64,
                                                 representation_size=256)),
    "ssd": ("ssd", dict(image_size=96)),
    "yolo-v1": ("yolo", dict(image_size=96, grid=3)),
    "yolo-anchor-free": ("yolo", dict(image_size=96, head="anchor-free")),
}
NUM_CLASSES = 2
COLOURS = (torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))  # class 0 red, class 1 green


def build(key: str, **options) -> torch.nn.Module:
    torch.manual_seed(0)
    name, small = SMALL[key]
    return create_model(name, num_classes=NUM_CLASSES, **{**small, **options})


def synthetic_batch(size: tuple[int, int] = (128, 128)) -> tuple[list[torch.Tensor], list[dict]]:
    """Two black images with filled rectangles of known boxes (xyxy pixels) and classes."""
    boxes = [torch.tensor([[16.0, 20, 64, 76], [80, 60, 120, 112]]), torch.tensor([[40.0, 30, 100, 90]])]
    labels = [torch.tensor([0, 1]), torch.tensor([1])]
    images = [torch.zeros(3, *size) for _ in boxes]
    for img, bs, ls in zip(images, boxes, labels):
        for (x0, y0, x1, y1), c in zip(bs.long().tolist(), ls.tolist()):
            img[:, y0:y1, x0:x1] = COLOURS[c][:, None, None]
    return images, [{"boxes": b, "labels": l} for b, l in zip(boxes, labels)]


def test_registry_lists_the_detectors():
    assert {"faster_rcnn", "ssd", "yolo"} <= set(list_models(task="detect"))
    assert not set(list_models(task="detect")) & set(list_models(task="classify"))
    assert {name for name, _ in SMALL.values()} == set(list_models(task="detect"))


@pytest.mark.parametrize("key", SMALL)
def test_train_mode_gives_finite_scalar_losses(key):
    model = build(key).train()
    images, targets = synthetic_batch()
    targets[1] = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}  # an image without objects
    losses = model(images, targets)
    assert isinstance(losses, dict) and losses
    for name, value in losses.items():
        assert name.startswith("loss_") and value.dim() == 0, name
        assert torch.isfinite(value), name
    sum(losses.values()).backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("key", SMALL)
def test_eval_mode_gives_detections_in_the_image(key):
    model = build(key, score_thresh=0.0).eval()
    images = [torch.rand(3, 96, 128), torch.rand(3, 80, 60)]  # not square, not the model's size
    with torch.no_grad():
        out = model(images)
    assert isinstance(out, list) and len(out) == 2
    for det, img in zip(out, images):
        assert set(det) == {"boxes", "scores", "labels"}
        d = len(det["scores"])
        assert d > 0 and det["boxes"].shape == (d, 4) and det["labels"].shape == (d,)
        assert det["labels"].dtype == torch.int64
        assert det["labels"].min() >= 0 and det["labels"].max() < NUM_CLASSES
        h, w = img.shape[-2:]
        b = det["boxes"]
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        assert torch.all(det["scores"][:-1] >= det["scores"][1:])  # sorted, best first


@pytest.mark.parametrize("key", SMALL)
def test_thresholds_take_effect(key):
    model = build(key, score_thresh=0.0, nms_thresh=1.0, detections_per_img=1000).eval()  # NMS off
    images = [torch.rand(3, 96, 96)]
    with torch.no_grad():
        many = model(images)[0]
        model.set_postprocess(score_thresh=1.01)
        assert len(model(images)[0]["scores"]) == 0
        model.set_postprocess(score_thresh=0.0, nms_thresh=0.0)  # no two boxes of a class may overlap
        strict = model(images)[0]
        model.set_postprocess(detections_per_img=3)
        assert len(model(images)[0]["scores"]) <= 3
    assert len(strict["scores"]) < len(many["scores"])
    for c in strict["labels"].unique():
        same = strict["boxes"][strict["labels"] == c]
        iou = box_iou(same, same).fill_diagonal_(0)
        assert (iou <= 1e-6).all()
    assert len(build(key, score_thresh=1.01).eval()(images)[0]["scores"]) == 0  # the constructor option too


# Adam steps, learning rate, factor by which the total loss must fall (the anchor-free centerness BCE has a
# floor: its soft targets' entropy). Measured on 2 busy cores: 7-15 s each; SSD 16-25 s, so slow.
OVERFIT = {
    "faster_rcnn": (40, 3e-4, 5),
    "faster_rcnn-no-fpn": (50, 1e-3, 5),
    "ssd": (60, 1e-3, 50),
    "yolo-v1": (30, 1e-3, 20),
    "yolo-anchor-free": (30, 1e-3, 3),
}
SLOW_TO_OVERFIT = ("ssd",)


@pytest.mark.parametrize("key", [pytest.param(k, marks=pytest.mark.slow) if k in SLOW_TO_OVERFIT else k
                                 for k in OVERFIT])
def test_overfits_one_batch_and_recovers_the_boxes(key):
    steps, lr, factor = OVERFIT[key]
    model = build(key).train()
    images, targets = synthetic_batch()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    for step in range(steps):
        loss = sum(model(images, targets).values())
        if step == 0:
            first = loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < first / factor, (first, loss.item())
    model.eval()
    with torch.no_grad():
        out = model(images)
    for det, target in zip(out, targets):
        confident = det["scores"] > 0.3
        iou = box_iou(target["boxes"], det["boxes"][confident])  # (K, D)
        assert iou.shape[1] > 0, "no confident detections"
        best, which = iou.max(dim=1)
        assert (best > 0.5).all(), best
        assert torch.equal(det["labels"][confident][which], target["labels"])


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


def test_efficientnet_lite0_backbone_channels_and_strides():
    body = StageFeatures.from_registry("efficientnet_lite0", levels=4)
    assert body.out_channels == [24, 40, 112, 1280] and body.strides == [4, 8, 16, 32]
    maps = body(torch.zeros(1, 3, 128, 160))
    assert list(maps) == ["0", "1", "2", "3"]
    assert [tuple(m.shape[1:]) for m in maps.values()] == [(24, 32, 40), (40, 16, 20), (112, 8, 10), (1280, 4, 5)]
    assert StageFeatures.from_registry("resnet18").out_channels == [128, 256, 512]
    assert StageFeatures.from_registry("vgg11").strides == [8, 16, 32]


def test_faster_rcnn_with_and_without_fpn():
    fpn = build("faster_rcnn")
    plain = build("faster_rcnn-no-fpn")
    assert isinstance(fpn.detector.backbone, WithFPN) and isinstance(plain.detector.backbone, LastMap)
    x = torch.zeros(1, 3, 96, 96)
    assert list(fpn.detector.backbone(x)) == ["0", "1", "2", "pool"]
    assert list(plain.detector.backbone(x)) == ["0"]
    # one anchor size per pyramid level (4 × stride); five sizes on the single map
    assert fpn.detector.rpn.anchor_generator.sizes == ((32,), (64,), (128,), (256,))
    assert plain.detector.rpn.anchor_generator.sizes == ((32, 64, 128, 256, 512),)


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


def test_bad_options_are_cnnkit_errors():
    with pytest.raises(CnnkitError, match="unknown yolo head 'v2'"):
        create_model("yolo", num_classes=2, head="v2")
    with pytest.raises(CnnkitError, match="unknown SSD option 'topk_candidate'.*did you mean 'topk_candidates'"):
        create_model("ssd", num_classes=2, topk_candidate=100)
    with pytest.raises(CnnkitError, match="unknown FasterRCNN option 'rpn_nms'"):
        create_model("faster_rcnn", num_classes=2, rpn_nms=0.5)
    with pytest.raises(CnnkitError, match="bad option"):
        create_model("yolo", num_classes=2, no_such_option=1)
    with pytest.raises(CnnkitError, match="backbone"):
        create_model("faster_rcnn", num_classes=2, backbone="faster_rcnn")  # a detector is no backbone
    with pytest.raises(CnnkitError, match="alexnet cannot serve as a detection backbone"):
        create_model("yolo", num_classes=2, backbone="alexnet")
    model = build("yolo-v1").train()
    with pytest.raises(CnnkitError, match="needs targets"):
        model([torch.rand(3, 64, 64)])


def test_misspelt_backbone_weights_say_did_you_mean() -> None:
    with pytest.raises(CnnkitError, match="did you mean 'resnet18.imagenet'"):
        create_model("yolo", num_classes=2, backbone="resnet18.imagenett")
