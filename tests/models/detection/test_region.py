"""SPP-net and Fast R-CNN (cnnkit.models.detection.region): the detector contract, the paper's pooling layers
against torchvision's roi_pool and a formula, and SPP-net's frozen feature maps read back from the disk cache."""
from __future__ import annotations

import pytest
import torch
from torchvision.ops import roi_pool

from cnnkit.errors import CnnkitError
from cnnkit.models.detection.region import RoIMaxPool, SpatialPyramidPool
from cnnkit.models.factory import create_model

KEYS = ("fast_rcnn", "spp_net")


@pytest.mark.parametrize("key", KEYS)
def test_train_mode_gives_finite_scalar_losses(detectors, key):
    detectors.train(key)


@pytest.mark.parametrize("key", KEYS)
def test_eval_mode_gives_detections_in_the_image(detectors, key):
    detectors.eval(key)


@pytest.mark.parametrize("key", KEYS)
def test_thresholds_take_effect(detectors, key):
    detectors.thresholds(key)


@pytest.mark.slow  # 40-60 steps with a ResNet-18: 20-60 s each on 2 cores
@pytest.mark.parametrize("key", KEYS)
def test_overfits_one_batch_and_recovers_the_boxes(detectors, key):
    detectors.overfit(key)


def test_roi_max_pool_is_torchvisions_roi_pool_on_the_map() -> None:
    x = torch.randn(2, 8, 12, 12)
    boxes = [torch.tensor([[0.0, 0.0, 95.0, 63.0]]), torch.tensor([[16.0, 8.0, 80.0, 90.0], [0, 0, 10, 10]])]
    out = RoIMaxPool(7, 1 / 8)({"0": x}, boxes, [(96, 96)] * 2)
    assert out.shape == (3, 8, 7, 7)
    assert torch.equal(out, roi_pool(x, boxes, 7, 1 / 8))


def test_spatial_pyramid_pool_bins_are_maxima_of_the_window() -> None:
    """SPP's level-1 bin is the window's maximum per channel, level 2 its quadrants' maxima; the length is
    C · Σ n² whatever the window's size."""
    x = torch.randn(1, 4, 8, 8)
    # stride 8; roi_pool's windows include both end cells: [0, 56] is cells 0-7, the whole map; [0, 24] × [0, 8]
    # is columns 0-3 and rows 0-1
    whole = [torch.tensor([[0.0, 0.0, 56.0, 56.0], [0.0, 0.0, 24.0, 8.0]])]
    out = SpatialPyramidPool((1, 2, 4), 1 / 8)({"0": x}, whole, [(64, 64)])
    assert out.shape == (2, 4 * (1 + 4 + 16))
    assert torch.equal(out[0, :4], x[0].amax((1, 2)))
    quadrants = out[0, 4:20].view(4, 2, 2)  # channel-major: C × 2 × 2
    assert torch.equal(quadrants[:, 0, 1], x[0, :, :4, 4:].amax((1, 2)))
    assert torch.equal(out[1, :4], x[0, :, :2, :4].amax((1, 2)))  # the corner window: rows 0-1, columns 0-3


def test_spp_net_reads_its_frozen_feature_maps_back_from_the_cache(detectors) -> None:
    model = detectors.build("spp_net").eval()
    images, _ = detectors.batch()
    with torch.no_grad():
        first = model(images)
    assert (model.feature_cache.hits, model.feature_cache.misses) == (0, 2)
    assert (model.proposer.cache.hits, model.proposer.cache.misses) == (0, 2)
    with torch.no_grad():
        again = model(images)
    assert (model.feature_cache.hits, model.proposer.cache.hits) == (2, 2)  # nothing computed twice
    assert torch.equal(first[0]["boxes"], again[0]["boxes"])
    assert not any(p.requires_grad for p in model.body.parameters())  # frozen: only the FC layers train
    changed = [images[0].flip(-1), images[1]]  # another image misses; the same one hits
    with torch.no_grad():
        model(changed)
    assert (model.feature_cache.hits, model.feature_cache.misses) == (3, 3)
    with torch.no_grad():  # other backbone weights: every map is computed again, none served stale
        next(model.body.parameters()).mul_(2)
        model(images)
    assert model.feature_cache.misses == 5


def test_fast_rcnn_fine_tunes_its_backbone_and_spp_net_does_not(detectors) -> None:
    fast, spp = detectors.build("fast_rcnn"), detectors.build("spp_net")
    assert any(p.requires_grad for p in fast.body.parameters()) and fast.feature_cache is None
    assert not any(p.requires_grad for p in spp.body.parameters())
    assert fast.body.strides == [16] and detectors.build("fast_rcnn", feature_stride=32).body.strides == [32]


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(CnnkitError, match="feature_stride must be 16 or 32"):
        create_model("fast_rcnn", num_classes=2, feature_stride=8)
    with pytest.raises(CnnkitError, match="levels must be positive"):
        create_model("spp_net", num_classes=2, levels=(0, 2))
    with pytest.raises(CnnkitError, match="proposals must be at least 1"):
        create_model("fast_rcnn", num_classes=2, proposals=0)
