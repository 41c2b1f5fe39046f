"""Shared by the detector tests: small CPU-friendly variants of every detector, a batch of coloured rectangles
with known boxes, and the train/eval contract every detector keeps (cnnkit.models.detection)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torchvision.ops import box_iou

from cnnkit.models.factory import create_model

torch.set_num_threads(2)

# small variants of every detector; the keys are test ids
SMALL = {
    "faster_rcnn": ("faster_rcnn", dict(min_size=96, max_size=128, out_channels=64, representation_size=256)),
    "faster_rcnn-no-fpn": ("faster_rcnn", dict(fpn=False, min_size=96, max_size=128, out_channels=64,
                                                 representation_size=256)),
    "ssd": ("ssd", dict(image_size=96)),
    "yolo-v1": ("yolo", dict(image_size=96, grid=3)),
    "yolo-anchor-free": ("yolo", dict(image_size=96, head="anchor-free")),
    "fast_rcnn": ("fast_rcnn", dict(proposals=200, representation_size=128)),
    "spp_net": ("spp_net", dict(proposals=200, representation_size=128)),
    "rcnn": ("rcnn", dict(proposals=100, crop=64, context=4)),
}
NUM_CLASSES = 2
COLOURS = (torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))  # class 0 red, class 1 green
# Adam steps, learning rate, factor by which the total loss must fall (the anchor-free centerness BCE has a
# floor: its soft targets' entropy). Measured on 2 busy cores: 7-15 s each; SSD 16-25 s (marked slow there).
OVERFIT = {
    "faster_rcnn": (40, 3e-4, 5),
    "faster_rcnn-no-fpn": (50, 1e-3, 5),
    "ssd": (60, 1e-3, 50),
    "yolo-v1": (30, 1e-3, 20),
    "yolo-anchor-free": (30, 1e-3, 3),
    "fast_rcnn": (60, 3e-4, 5),
    "spp_net": (60, 1e-3, 3),
    "rcnn": (80, 1e-2, 3),  # the SVMs: hinge + L2 has a floor
}


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
    return images, [{"boxes": b, "labels": c} for b, c in zip(boxes, labels)]


def check_train(key: str) -> None:
    """Train mode: a dict of finite scalar losses named loss_*, that backpropagate (an empty image included)."""
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


def check_eval(key: str) -> None:
    """Eval mode: per image {"boxes", "scores", "labels"}, 0-based labels, boxes inside the image, best first."""
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


def check_thresholds(key: str) -> None:
    """score_thresh, nms_thresh and detections_per_img take effect, in the constructor and set_postprocess."""
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
    with torch.no_grad():
        assert len(build(key, score_thresh=1.01).eval()(images)[0]["scores"]) == 0  # the constructor option too


def check_overfit(key: str) -> torch.nn.Module:
    """A few Adam steps on one fixed batch lower the loss and find every box (IoU > 0.5, the right class).
    Returns the trained model, in eval mode."""
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
    return model


@pytest.fixture(autouse=True)
def _region_cache(tmp_path_factory, monkeypatch) -> None:
    """The R-CNN line caches proposals and features under $CNNKIT_CACHE: a fresh folder per test, never ~/.cache."""
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path_factory.mktemp("cnnkit-cache")))


@pytest.fixture
def detectors() -> SimpleNamespace:
    """build(key, **options), synthetic_batch(), and the contract checks train / eval / thresholds / overfit."""
    return SimpleNamespace(build=build, batch=synthetic_batch, train=check_train, eval=check_eval,
                           thresholds=check_thresholds, overfit=check_overfit, small=SMALL, num_classes=NUM_CLASSES)
