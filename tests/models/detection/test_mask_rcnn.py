"""Mask R-CNN (cnnkit.models.detection.mask_rcnn): registry entry, the train/eval contract with masks, the
one-line errors, and the named-weights backbone."""
from __future__ import annotations

import pytest
import torch

from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec, list_models

torch.set_num_threads(2)
SMALL = dict(min_size=64, max_size=64, out_channels=32, representation_size=64, mask_channels=16, mask_layers=2)


def build(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("mask_rcnn", num_classes=2, **{**SMALL, **options})


def batch() -> tuple[list[torch.Tensor], list[dict]]:
    """Two 64 px images: one with a red rectangle (class 0) and a green disc (class 1), one empty."""
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    masks = torch.stack([(yy >= 8) & (yy < 30) & (xx >= 6) & (xx < 34),
                         (yy - 44) ** 2 + (xx - 44) ** 2 < 12 ** 2]).to(torch.uint8)  # (2, 64, 64)
    image = torch.zeros(3, 64, 64)
    image[0][masks[0].bool()] = 1.0
    image[1][masks[1].bool()] = 1.0
    boxes = torch.tensor([[6.0, 8, 34, 30], [32, 32, 57, 57]])
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long),
             "masks": torch.zeros(0, 64, 64, dtype=torch.uint8)}
    return [image, torch.zeros(3, 64, 64)], [{"boxes": boxes, "labels": torch.tensor([0, 1]), "masks": masks}, empty]


def test_registered_as_the_instance_task():
    assert "mask_rcnn" in list_models(task="instance")
    assert "mask_rcnn" not in list_models(task="detect")
    assert get_spec("mask_rcnn").task == "instance"


def test_train_mode_gives_finite_losses_with_a_mask_loss_that_backpropagates():
    model = build().train()
    images, targets = batch()
    losses = model(images, targets)
    assert {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"} == set(losses)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grad = model.detector.roi_heads.mask_predictor.mask_fcn_logits.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_eval_mode_returns_masks_as_torchvision_does_with_zero_based_labels():
    model = build(score_thresh=0.0).eval()
    images, _ = batch()
    with torch.no_grad():
        found = model(torch.stack(images))
    assert len(found) == 2
    for d in found:
        n = len(d["boxes"])
        assert set(d) == {"boxes", "scores", "labels", "masks"}
        assert d["masks"].shape == (n, 1, 64, 64) and d["masks"].dtype == torch.float32
        assert n == 0 or (0 <= d["masks"].min() and d["masks"].max() <= 1)
        assert ((d["labels"] >= 0) & (d["labels"] < 2)).all()
    model.set_postprocess(score_thresh=1.0)
    with torch.no_grad():
        assert all(len(d["masks"]) == 0 for d in model(images))


def test_fitting_one_batch_lowers_the_mask_loss():
    model = build(fpn=False)
    images, targets = batch()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.02, momentum=0.9)
    first = None
    for _ in range(8):
        losses = model.train()(images, targets)
        first = first if first is not None else float(losses["loss_mask"].detach())
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    assert float(losses["loss_mask"].detach()) < first


def test_one_line_errors():
    model = build().train()
    images, targets = batch()
    with pytest.raises(CnnkitError, match="lacks 'masks'") as info:
        model(images, [{k: v for k, v in t.items() if k != "masks"} for t in targets])
    assert "\n" not in str(info.value)
    with pytest.raises(CnnkitError, match="2 boxes but 1 masks"):
        model(images, [{**targets[0], "masks": targets[0]["masks"][:1]}, targets[1]])
    with pytest.raises(CnnkitError, match="did you mean"):
        create_model("mask_rcnn", num_classes=2, rpn_batch_size_per_imge=64)
    with pytest.raises(CnnkitError, match="in_channels=3"):
        create_model("mask_rcnn", num_classes=2, in_channels=1)


def test_named_imagenet_weights_as_the_backbone():
    from cnnkit.models.pretrained import lookup

    named = lookup("efficientnet_lite0.imagenet")
    try:
        named.locate()
    except Exception as err:  # noqa: BLE001  (the weights package is an optional extra)
        pytest.skip(f"efficientnet_lite0.imagenet weights unavailable ({err})")
    model = create_model("mask_rcnn", num_classes=1, backbone="efficientnet_lite0.imagenet", **SMALL)
    body = model.detector.backbone.body
    assert body.strides == [8, 16, 32]
    frozen = [p.requires_grad for p in body.stages[0].parameters()]
    assert frozen and not any(frozen)  # with weights, the early stages stay frozen (trainable_layers=3)


@pytest.mark.parametrize("norm", ["group", "batch", "none"])
def test_mask_head_normalisations(norm):
    model = build(mask_norm=norm).train()
    images, targets = batch()
    assert torch.isfinite(model(images, targets)["loss_mask"])
    with pytest.raises(CnnkitError, match="did you mean"):
        build(mask_norm="groups")
