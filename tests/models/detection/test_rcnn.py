"""R-CNN (cnnkit.models.detection.rcnn): the detector contract, the warp with context, the SVMs' hinge loss with
mined hard negatives against its formula, the ridge box regression, and the feature cache (a second pass reads
it; a changed image or backbone recomputes)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from cnnkit.errors import CnnkitError
from cnnkit.models.detection import rcnn as rcnn_module
from cnnkit.models.detection.rcnn import FEATURE_NORM, warp_regions
from cnnkit.models.factory import create_model


def test_train_mode_gives_finite_scalar_losses(detectors):
    detectors.train("rcnn")


def test_eval_mode_gives_detections_in_the_image(detectors):
    detectors.eval("rcnn")


def test_thresholds_take_effect(detectors):
    detectors.thresholds("rcnn")


@pytest.mark.slow  # 40 steps over cached features; the first pass warps 200 regions through a ResNet-18
def test_overfits_one_batch_and_recovers_the_boxes(detectors):
    detectors.overfit("rcnn")


def test_warp_without_context_is_the_box_resized() -> None:
    """A box warped with no context is the region resized to crop × crop: on a linear ramp, its corners are the
    ramp's values at the box's corners (half a crop pixel in)."""
    h, w = 40, 60
    ramp = torch.arange(w, dtype=torch.float32).expand(3, h, w).clone()  # value = x + 0.5 at pixel centre x + 0.5
    box = torch.tensor([[10.0, 5.0, 30.0, 25.0]])  # 20 × 20
    crop = warp_regions(ramp, box, crop=10, context=0)[0, 0]  # (10, 10): each pixel 2 image pixels wide
    expected = torch.linspace(10 + 1, 30 - 1, 10) - 0.5  # sample centres 11, 13, ..., 29 in x; value x - 0.5
    assert torch.allclose(crop[0], expected, atol=1e-4)
    # with context, the same box covers the middle crop - 2 · context pixels of the warp
    wide = warp_regions(ramp, box, crop=12, context=1)[0, 0]
    assert torch.allclose(wide[0, 1:-1], expected, atol=1e-4)


def test_features_have_the_papers_norm_and_the_cache_serves_a_second_pass(detectors, monkeypatch) -> None:
    model = detectors.build("rcnn").eval()
    images, _ = detectors.batch()
    warped = []
    original = rcnn_module.warp_regions
    monkeypatch.setattr(rcnn_module, "warp_regions", lambda *a, **k: warped.append(1) or original(*a, **k))
    with torch.no_grad():
        first = model(images)
    computed = len(warped)
    assert computed > 0 and (model.cache.hits, model.cache.misses) == (0, 2)
    with torch.no_grad():
        again = model(images)
    assert len(warped) == computed and model.cache.hits == 2  # read back: no region warped again
    assert torch.allclose(first[0]["scores"], again[0]["scores"], atol=1e-3)  # stored in fp16
    feats = model.proposal_features(images[0], model.propose(images)[:1][0])
    assert torch.allclose(feats.norm(dim=1), torch.full((len(feats),), FEATURE_NORM), atol=0.05)
    with torch.no_grad():  # a changed image, then changed backbone weights: computed again
        model([images[0].flip(-1)])
        assert model.cache.misses == 3
        next(model.body.parameters()).add_(0.1)
        model(images)
    assert model.cache.misses == 5


@pytest.mark.parametrize("negative_iou", [0.3, 0.5])
def test_the_svm_loss_is_the_hinge_on_positives_and_mined_hard_negatives(detectors, negative_iou) -> None:
    """loss_classifier = (Σ max(0, 1 − s⁺) over true boxes + Σ max(0, 1 + s⁻) over each class's k highest-
    scoring proposals with IoU < negative_iou (the paper's 0.3) with its true boxes) / examples + λ/2 ‖w‖²."""
    model = detectors.build("rcnn", hard_negatives=5, svm_l2=0.01, negative_iou=negative_iou).train()
    torch.nn.init.normal_(model.svm.weight, std=0.1)
    images, targets = detectors.batch()
    losses = model(images, targets)
    total, count = 0.0, 0
    for image, target, boxes in zip(images, targets, model.propose(images)):
        feats = model.proposal_features(image, boxes)
        scores, truth_scores = model.svm(feats), model.svm(model.region_features(image, target["boxes"]))
        for c in range(2):
            own = target["labels"] == c
            total += F.relu(1 - truth_scores[own, c]).sum()
            count += int(own.sum())
            near = box_iou(boxes, target["boxes"][own]).max(1).values if own.any() else torch.zeros(len(boxes))
            hard = scores[near < negative_iou, c].sort(descending=True).values[:5]
            total += F.relu(1 + hard).sum()
            count += len(hard)
    expected = total / count + 0.01 / 2 * model.svm.weight.pow(2).sum()
    assert losses["loss_classifier"].item() == pytest.approx(expected.item(), rel=1e-4)


def test_box_regression_learns_the_offsets_from_near_proposals(detectors) -> None:
    """Trained on proposals that are the true boxes moved by a tenth of their size, the class-specific
    regressor (ridge: least squares on the paper's offsets) moves them back closer to their box."""
    model = detectors.build("rcnn", reg_l2=0.0).train()
    images, targets = detectors.batch()
    truth = targets[0]["boxes"]
    size = truth[:, 2:] - truth[:, :2]
    steps = torch.tensor([[1.0, 1.0], [-1.0, 0.5], [0.5, -1.0], [-0.7, -0.7]])  # (4, 2) moves, in tenths
    moved = torch.cat([truth + torch.cat([s * size / 10] * 2, 1) for s in steps])  # (4 · K, 4)
    model.propose = lambda images: [moved]
    first = model(images[:1], targets[:1])["loss_box_reg"].item()  # the forward's term: ridge, λ = 0 here
    feats = model.proposal_features(images[0], moved)  # (4 · K, D), cached by that forward
    optimizer = torch.optim.SGD(model.regressor.parameters(), lr=1e-3, momentum=0.9)
    for _ in range(200):  # gradient descent on the same least-squares term
        total, n = model._regression_terms(feats, moved, truth, targets[0]["labels"])
        optimizer.zero_grad()
        (total / n).backward()
        optimizer.step()
    assert model(images[:1], targets[:1])["loss_box_reg"].item() < first / 4
    which = torch.arange(len(truth)).repeat(len(steps))
    offsets = model.regressor(feats).view(-1, 2, 4)[torch.arange(len(moved)), targets[0]["labels"][which]]
    placed = model.coder.decode_single(offsets.detach(), moved)
    iou_before = box_iou(moved, truth)[torch.arange(len(moved)), which]
    iou_after = box_iou(placed, truth)[torch.arange(len(moved)), which]
    assert iou_after.mean() > iou_before.mean() + 0.05


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(CnnkitError, match="crop must be at least 32"):
        create_model("rcnn", num_classes=2, crop=16)
    with pytest.raises(CnnkitError, match="context under crop / 2"):
        create_model("rcnn", num_classes=2, crop=64, context=40)
    with pytest.raises(CnnkitError, match="at least 1"):
        create_model("rcnn", num_classes=2, hard_negatives=0)
    with pytest.raises(CnnkitError, match="grid must be at least 1"):
        create_model("rcnn", num_classes=2, grid=0)
    with pytest.raises(CnnkitError, match=r"negative_iou must be in \(0, 1\]"):
        create_model("rcnn", num_classes=2, negative_iou=1.5)


@pytest.mark.parametrize("grid", [1, 2])
def test_features_are_the_last_map_average_pooled_to_grid_cells(detectors, grid) -> None:
    """A region's feature is the backbone's last map of its warp, averaged over grid × grid cells and flattened
    (grid 1: the global average), then scaled to norm 20; each cell keeps the region's layout."""
    model = detectors.build("rcnn", grid=grid).eval()
    images, _ = detectors.batch()
    boxes = torch.tensor([[10.0, 12, 70, 90], [50, 40, 120, 110]])
    with torch.no_grad():
        features = model.region_features(images[0], boxes)
        x = (images[0] - model.mean) / model.std
        last = model.body(warp_regions(x, boxes, model.crop, model.context))["0"]  # (2, C, h, w)
    c, h, w = last.shape[1:]
    cells = last.view(2, c, grid, h // grid, grid, w // grid).mean((3, 5)).flatten(1)  # (2, C · grid²)
    assert features.shape == (2, model.body.out_channels[-1] * grid ** 2) == cells.shape
    assert torch.allclose(features, FEATURE_NORM * F.normalize(cells, dim=1), atol=1e-4)


def test_evaluation_with_folded_batch_norms_reads_the_training_cache(detectors) -> None:
    """evaluate and predict fold batch norms into the convolutions; R-CNN's backbone stays unfolded
    (`unfolded`), so its weights, and the cache keys, are the ones training wrote."""
    from cnnkit.engine.inference import fold_batch_norm

    model = detectors.build("rcnn").eval()
    images, _ = detectors.batch()
    with torch.no_grad():
        model(images)
        folded = fold_batch_norm(model)
        assert any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.body.modules())
        folded(images)
    assert (folded.cache.hits, folded.cache.misses) == (2, 2)  # the copy's counters went on from the model's
