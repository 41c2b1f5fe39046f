"""SSD (cnnkit.models.detection.ssd): the detector contract, the extra stride-2 maps after the backbone's three,
default boxes per map, and the option checks."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision.models.detection.ssd import SSDHead

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.backbones import StageFeatures
from cnnkit.models.detection.ssd import TRAIN, L2Norm, SSDBackbone, init_head
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


# the fix of docs/detection.md "Why SSD did not learn": every map L2-normalised before the heads, and the
# class biases set so that each default box starts as background with probability 1 − prior


def test_l2norm_gives_each_position_the_norm_of_its_scale():
    norm = L2Norm(5, scale=20.0)
    x = torch.randn(2, 5, 3, 4) * 100
    y = norm(x)
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 3, 4), 20.0))
    torch.testing.assert_close(y, 20.0 * x / x.norm(dim=1, keepdim=True))  # the direction is kept


def test_maps_reach_the_heads_normalised():
    body = StageFeatures.from_registry("resnet18", levels=3)
    features = SSDBackbone(body, extra_layers=2, width=32, norm_scale=20.0).eval()
    with torch.no_grad():
        maps = features(torch.rand(1, 3, 128, 128))
    for m in maps.values():  # whatever the raw scale of each map (backbone or extra block), ‖x‖₂ = 20 per cell
        torch.testing.assert_close(m.norm(dim=1), torch.full(m.shape[-2:], 20.0)[None], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("num_classes, prior", [(1, 0.01), (3, 0.1)])
def test_initial_class_probabilities_are_the_prior(num_classes, prior):
    torch.manual_seed(0)
    head = SSDHead([8, 16], [4, 6], num_classes + 1)
    init_head(head, num_classes, prior)
    zero = [torch.zeros(2, 8, 5, 5), torch.zeros(2, 16, 3, 3)]  # the biases alone
    probs = head(zero)["cls_logits"].softmax(-1)  # (N, anchors, 1 + classes), background first
    assert probs.shape == (2, 5 * 5 * 4 + 3 * 3 * 6, num_classes + 1)
    torch.testing.assert_close(probs[..., 0], torch.full(probs.shape[:-1], 1 - prior))
    torch.testing.assert_close(probs[..., 1:], torch.full((*probs.shape[:-1], num_classes), prior / num_classes))
    assert torch.equal(head(zero)["bbox_regression"], torch.zeros(2, probs.shape[1], 4))


def test_initial_classification_loss_is_that_of_the_prior(detectors):
    """At step 0 the loss per matched box is −log(prior/C) for the positive plus 3 (the hard-negative ratio)
    × −log(1 − prior) for the negatives, up to the small N(0, 0.01²) weights: not torchvision's xavier init,
    whose logits on these maps gave a loss of about 146 on Penn-Fudan."""
    prior, c = 0.01, detectors.num_classes
    model = detectors.build("ssd", prior=prior).train()
    images, targets = detectors.batch()
    loss = model(images, targets)["loss_classifier"].item()
    expected = -math.log(prior / c) - 3 * math.log(1 - prior)
    assert loss == pytest.approx(expected, rel=0.15), (loss, expected)


def test_the_old_initialisation_is_an_option():
    torch.manual_seed(0)
    model = create_model("ssd", num_classes=2, image_size=96, norm_scale=None, prior=None)
    assert model.detector.backbone.norms is None
    assert all(conv.bias.abs().sum() == 0 for conv in model.detector.head.classification_head.module_list)
    with pytest.raises(CnnkitError, match="prior must be in"):
        create_model("ssd", num_classes=2, image_size=96, prior=1.5)


def test_the_training_recipe_is_the_models_own():
    from cnnkit.config import TrainConfig
    from cnnkit.recipes.runner import model_train_defaults

    kept = model_train_defaults("ssd", TrainConfig())
    assert (kept.optimizer, kept.lr, kept.warmup_epochs) == (TRAIN["optimizer"], TRAIN["lr"], TRAIN["warmup_epochs"])
    assert model_train_defaults("ssd", TrainConfig(lr=3e-4)).lr == 3e-4  # what the user set stays


def test_the_recipes_warm_up_leaves_a_one_epoch_run_possible():
    from cnnkit.engine import schedules

    warmup = TRAIN["warmup_epochs"]
    for steps in range(1, 40):  # as cnnkit.recipes.runner converts warmup_epochs to batches
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
        assert round(warmup * steps) < steps  # the warm-up ends inside the one epoch
        schedule = schedules.get(TRAIN["schedule"], opt, steps_per_epoch=steps, epochs=1, interval="batch",
                                 warmup=round(warmup * steps))  # the scheduler accepts it (raises otherwise)
        assert schedule is not None
