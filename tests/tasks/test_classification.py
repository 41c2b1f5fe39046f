"""cnnkit.tasks.classification: single-label classification's loss against PyTorch, its accuracy, its predictions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnkit.tasks import Batch, ClassificationTask
from cnnkit.tasks.classification import accuracy

torch.manual_seed(0)
N, K = 6, 4
IMAGES = torch.zeros(N, 1, 2, 2)
LOGITS = torch.randn(N, K)
LABELS = torch.tensor([0, 1, 2, 3, 1, 0])


def loss_of(task, targets, weights=None) -> float:
    return float(task.training_step(Batch(IMAGES, targets, weights)).loss.detach())


def test_multiclass_defaults_to_softmax_cross_entropy(fixed):
    task = ClassificationTask(fixed(LOGITS))
    assert loss_of(task, LABELS) == pytest.approx(float(F.cross_entropy(LOGITS, LABELS)), rel=1e-6)
    assert torch.allclose(task.predict_step(IMAGES), LOGITS.softmax(1))


def test_multiclass_mse_compares_softmax_probabilities_with_one_hot_rows(fixed):
    with pytest.warns(UserWarning):
        task = ClassificationTask(fixed(LOGITS), "mse")
    expected = F.mse_loss(LOGITS.softmax(1), F.one_hot(LABELS, K).float())
    assert loss_of(task, LABELS) == pytest.approx(float(expected), rel=1e-6)


def test_multiclass_hinge_is_one_versus_rest_on_raw_scores(fixed):
    task = ClassificationTask(fixed(LOGITS), "hinge")
    y = 2 * F.one_hot(LABELS, K).float() - 1  # ±1
    expected = (1 - y * LOGITS).clamp_min(0).mean()
    assert loss_of(task, LABELS) == pytest.approx(float(expected), rel=1e-6)


def test_label_smoothing_matches_torch(fixed):
    task = ClassificationTask(fixed(LOGITS), label_smoothing=0.2)
    expected = F.cross_entropy(LOGITS, LABELS, label_smoothing=0.2)
    assert loss_of(task, LABELS) == pytest.approx(float(expected), rel=1e-6)


def test_mixed_soft_targets_take_categorical_cross_entropy(fixed):
    """Under mixup the sparse default becomes −Σ_k t_k log softmax(z)_k: torch's cross-entropy with probabilities."""
    soft = torch.softmax(torch.randn(N, K), 1)
    task = ClassificationTask(fixed(LOGITS), mix=lambda images, targets: (images, soft))
    assert loss_of(task, LABELS) == pytest.approx(float(F.cross_entropy(LOGITS, soft)), rel=1e-6)


def test_accuracy_logged_per_batch_is_the_share_of_right_argmaxes(fixed):
    out = ClassificationTask(fixed(LOGITS)).training_step(Batch(IMAGES, LABELS))
    hand = sum(int(LOGITS[i].argmax()) == int(LABELS[i]) for i in range(N)) / N
    assert float(out.logs["accuracy"]) == pytest.approx(hand)
    # one-hot (or soft) rows count by their arg-max
    assert float(accuracy(LOGITS, F.one_hot(LABELS, K).float())) == pytest.approx(hand)
