"""cnnkit.tasks.multilabel: BinaryTask and MultilabelTask, a sigmoid and binary cross-entropy against PyTorch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.tasks import Batch, BinaryTask, MultilabelTask

torch.manual_seed(0)
N, K = 6, 4
IMAGES = torch.zeros(N, 1, 2, 2)
LOGITS = torch.randn(N, K)
MULTI_HOT = (torch.rand(N, K) > 0.5).float()


def loss_of(task, targets, weights=None) -> float:
    return float(task.training_step(Batch(IMAGES, targets, weights)).loss.detach())


def test_binary_is_one_sigmoid_output_with_binary_cross_entropy(fixed):
    z = LOGITS[:, :1]  # (N, 1)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    task = BinaryTask(fixed(z))
    expected = F.binary_cross_entropy_with_logits(z[:, 0], y.float())
    out = task.training_step(Batch(IMAGES, y))
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(out.logs["accuracy"]) == pytest.approx(float(((z[:, 0] > 0).long() == y).float().mean()))
    p = torch.sigmoid(z)
    assert torch.allclose(task.predict_step(IMAGES), torch.cat([1 - p, p], 1))


def test_binary_sample_weights_weigh_the_mean(fixed):
    z, y, w = LOGITS[:, :1], torch.tensor([0, 1, 1, 0, 1, 0]), torch.tensor([1.0, 2, 0, 1, 3, 1])
    per = F.binary_cross_entropy_with_logits(z[:, 0], y.float(), reduction="none")
    assert loss_of(BinaryTask(fixed(z)), y, w) == pytest.approx(float((per * w).sum() / w.sum()), rel=1e-6)


def test_binary_under_mixup_takes_the_weight_of_class_one(fixed):
    z = LOGITS[:, :1]
    soft = torch.tensor([[0.3, 0.7]] * N)  # mixup's (N, 2) rows
    task = BinaryTask(fixed(z), mix=lambda images, targets: (images, soft))
    expected = F.binary_cross_entropy_with_logits(z, torch.full((N, 1), 0.7))
    assert loss_of(task, torch.zeros(N, dtype=torch.long)) == pytest.approx(float(expected), rel=1e-6)


def test_binary_class_weight_weighs_each_target(fixed):
    """class_weight (w_0, w_1) multiplies each element's loss: torch's pos_weight-free weighted BCE."""
    z, y = LOGITS[:, :1], torch.tensor([0, 1, 1, 0, 1, 0])
    w = torch.tensor([0.5, 3.0])
    per = F.binary_cross_entropy_with_logits(z[:, 0], y.float(), weight=w[y], reduction="none")
    assert loss_of(BinaryTask(fixed(z), class_weight=w), y) == pytest.approx(float(per.mean()), rel=1e-6)


def test_multilabel_is_a_sigmoid_and_binary_cross_entropy_per_label(fixed):
    task = MultilabelTask(fixed(LOGITS))
    out = task.training_step(Batch(IMAGES, MULTI_HOT))
    expected = F.binary_cross_entropy_with_logits(LOGITS, MULTI_HOT)
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    right = ((LOGITS > 0).float() == MULTI_HOT).float().mean()
    assert float(out.logs["binary_accuracy"]) == pytest.approx(float(right))
    assert torch.allclose(task.predict_step(IMAGES), torch.sigmoid(LOGITS))
