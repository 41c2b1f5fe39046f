"""cnnkit.tasks.segmentation: SegmentationTask's loss against torch's cross-entropy, its pixel accuracy by hand,
its epoch mIoU against scikit-learn, and its refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import jaccard_score
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.tasks import Batch, SegmentationTask

C = 3
torch.manual_seed(0)
IMAGES = torch.zeros(2, 3, 4, 5)
LOGITS = torch.randn(2, C, 4, 5)
MASKS = torch.randint(0, C, (2, 4, 5))
MASKS[0, 0, :3] = 255  # ignored pixels: 3 in image 0, 1 in image 1
MASKS[1, 2, 2] = 255


def test_loss_is_torch_cross_entropy_with_ignore_index_per_image(fixed):
    task = SegmentationTask(fixed(LOGITS), num_classes=C)
    out = task.training_step(Batch(IMAGES, MASKS))
    per_image = [F.cross_entropy(LOGITS[i:i + 1], MASKS[i:i + 1], ignore_index=255) for i in range(2)]
    assert float(out.loss.detach()) == pytest.approx(float(sum(per_image) / 2), rel=1e-6)


def test_pixel_accuracy_counts_the_right_non_ignored_pixels(fixed):
    out = SegmentationTask(fixed(LOGITS), num_classes=C).training_step(Batch(IMAGES, MASKS))
    guess, right, valid = LOGITS.argmax(1), 0, 0
    for i, h, w in np.ndindex(*MASKS.shape):
        if MASKS[i, h, w] != 255:
            valid += 1
            right += int(guess[i, h, w] == MASKS[i, h, w])
    assert valid == 36 and float(out.logs["pixel_accuracy"]) == pytest.approx(right / valid)


def test_validation_ends_the_epoch_with_the_miou_of_scikit_learn(fixed):
    model = fixed(LOGITS).eval()
    task = SegmentationTask(model, num_classes=C)
    assert task.epoch_metrics() == {}  # nothing seen yet
    for _ in range(2):  # the same batch twice: the same scores
        task.validation_step(Batch(IMAGES, MASKS))
    metrics = task.epoch_metrics()
    valid = MASKS != 255
    truth, guess = MASKS[valid].numpy(), LOGITS.argmax(1)[valid].numpy()
    assert set(truth) == set(range(C))  # every class present: the mean is over all of them
    assert metrics["miou"] == pytest.approx(jaccard_score(truth, guess, average="macro", labels=list(range(C))))
    assert set(metrics) == {"miou", "fw_iou", "dice"}
    assert task.epoch_metrics() == {}  # reset after reading


def test_refuses_a_model_that_changes_height_and_width(fixed):
    task = SegmentationTask(fixed(LOGITS[:, :, :2, :2]), num_classes=C)
    with pytest.raises(CnnkitError, match=r"gave \(2, 2\) logits for \(4, 5\) masks") as info:
        task.training_step(Batch(IMAGES, MASKS))
    assert "\n" not in str(info.value)


def test_refuses_options_of_other_tasks_and_needs_num_classes(fixed):
    with pytest.raises(CnnkitError, match="label_smoothing do not apply to segmentation"):
        SegmentationTask(fixed(LOGITS), num_classes=C, label_smoothing=0.1)
    with pytest.raises(CnnkitError, match="needs num_classes"):
        SegmentationTask(nn.Identity())
    assert SegmentationTask(fixed(LOGITS), num_classes=C, penalty=None).num_classes == C  # None counts as unset


def test_predict_step_is_the_softmax_over_classes(fixed):
    assert torch.allclose(SegmentationTask(fixed(LOGITS), num_classes=C).predict_step(IMAGES), LOGITS.softmax(1))
