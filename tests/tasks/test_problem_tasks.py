"""Each problem type's task: its loss against PyTorch's own functions, its activation, its predictions."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.tasks import Batch, BinaryTask, ClassificationTask, MultilabelTask, RegressionTask, make_task


class Fixed(nn.Module):
    """A 'model' that returns given outputs, so the task's maths can be checked alone."""

    def __init__(self, outputs: torch.Tensor):
        super().__init__()
        self.outputs = outputs
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.outputs * self.scale


torch.manual_seed(0)
N, K = 6, 4
IMAGES = torch.zeros(N, 1, 2, 2)
LOGITS = torch.randn(N, K)
LABELS = torch.tensor([0, 1, 2, 3, 1, 0])
MULTI_HOT = (torch.rand(N, K) > 0.5).float()


def loss_of(task, targets, weights=None) -> float:
    return float(task.training_step(Batch(IMAGES, targets, weights)).loss.detach())


def test_multiclass_defaults_to_softmax_cross_entropy():
    task = ClassificationTask(Fixed(LOGITS))
    assert loss_of(task, LABELS) == pytest.approx(float(F.cross_entropy(LOGITS, LABELS)), rel=1e-6)
    assert torch.allclose(task.predict_step(IMAGES), LOGITS.softmax(1))


def test_multiclass_mse_compares_softmax_probabilities_with_one_hot_rows():
    with pytest.warns(UserWarning):
        task = ClassificationTask(Fixed(LOGITS), "mse")
    expected = F.mse_loss(LOGITS.softmax(1), F.one_hot(LABELS, K).float())
    assert loss_of(task, LABELS) == pytest.approx(float(expected), rel=1e-6)


def test_multiclass_hinge_is_one_versus_rest_on_raw_scores():
    task = ClassificationTask(Fixed(LOGITS), "hinge")
    y = 2 * F.one_hot(LABELS, K).float() - 1  # ±1
    expected = (1 - y * LOGITS).clamp_min(0).mean()
    assert loss_of(task, LABELS) == pytest.approx(float(expected), rel=1e-6)


def test_binary_is_one_sigmoid_output_with_binary_cross_entropy():
    z = LOGITS[:, :1]  # (N, 1)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    task = BinaryTask(Fixed(z))
    expected = F.binary_cross_entropy_with_logits(z[:, 0], y.float())
    out = task.training_step(Batch(IMAGES, y))
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(out.logs["accuracy"]) == pytest.approx(float(((z[:, 0] > 0).long() == y).float().mean()))
    p = torch.sigmoid(z)
    assert torch.allclose(task.predict_step(IMAGES), torch.cat([1 - p, p], 1))


def test_binary_sample_weights_weigh_the_mean():
    z, y, w = LOGITS[:, :1], torch.tensor([0, 1, 1, 0, 1, 0]), torch.tensor([1.0, 2, 0, 1, 3, 1])
    per = F.binary_cross_entropy_with_logits(z[:, 0], y.float(), reduction="none")
    assert loss_of(BinaryTask(Fixed(z)), y, w) == pytest.approx(float((per * w).sum() / w.sum()), rel=1e-6)


def test_binary_under_mixup_takes_the_weight_of_class_one():
    z = LOGITS[:, :1]
    soft = torch.tensor([[0.3, 0.7]] * N)  # mixup's (N, 2) rows
    task = BinaryTask(Fixed(z), mix=lambda images, targets: (images, soft))
    expected = F.binary_cross_entropy_with_logits(z, torch.full((N, 1), 0.7))
    assert loss_of(task, torch.zeros(N, dtype=torch.long)) == pytest.approx(float(expected), rel=1e-6)


def test_multilabel_is_a_sigmoid_and_binary_cross_entropy_per_label():
    task = MultilabelTask(Fixed(LOGITS))
    out = task.training_step(Batch(IMAGES, MULTI_HOT))
    assert float(out.loss.detach()) == pytest.approx(float(F.binary_cross_entropy_with_logits(LOGITS, MULTI_HOT)), rel=1e-6)
    assert float(out.logs["binary_accuracy"]) == pytest.approx(float(((LOGITS > 0).float() == MULTI_HOT).float().mean()))
    assert torch.allclose(task.predict_step(IMAGES), torch.sigmoid(LOGITS))


def test_regression_learns_standardised_targets_and_predicts_in_their_units():
    targets = torch.randn(N, 2) * torch.tensor([10.0, 0.5]) + torch.tensor([100.0, -3.0])
    mean, std = targets.mean(0), targets.std(0)
    outputs = torch.randn(N, 2)
    task = RegressionTask(Fixed(outputs), mean=mean.tolist(), std=std.tolist())
    out = task.training_step(Batch(IMAGES, targets))
    assert float(out.loss.detach()) == pytest.approx(float(F.mse_loss(outputs, (targets - mean) / std)), rel=1e-5)
    predictions = task.predict_step(IMAGES).detach()
    assert torch.allclose(predictions, outputs * std + mean)
    assert float(out.logs["mae"]) == pytest.approx(float((predictions - targets).abs().mean()), rel=1e-5)


def test_regression_to_the_unit_interval_uses_a_sigmoid():
    targets, outputs = torch.rand(N, 1), torch.randn(N, 1)
    mse = RegressionTask(Fixed(outputs), bounded=True)
    assert loss_of(mse, targets) == pytest.approx(float(F.mse_loss(outputs.sigmoid(), targets)), rel=1e-6)
    bce = RegressionTask(Fixed(outputs), "binary_crossentropy", bounded=True)
    assert loss_of(bce, targets) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(outputs, targets)), rel=1e-6)
    assert torch.allclose(mse.predict_step(IMAGES), outputs.sigmoid())


def test_regression_without_scaling_compares_raw_outputs():
    targets, outputs = torch.rand(N, 3) * 5, torch.rand(N, 3) * 5
    task = RegressionTask(Fixed(outputs), "msle")
    expected = ((torch.log1p(outputs) - torch.log1p(targets)) ** 2).mean()
    assert loss_of(task, targets) == pytest.approx(float(expected), rel=1e-5)


def test_make_task_names_the_problem_types():
    assert isinstance(make_task("classify", Fixed(LOGITS)), ClassificationTask)  # the old name still loads
    assert isinstance(make_task("multilabel", Fixed(LOGITS)), MultilabelTask)
    with pytest.raises(CnnkitError, match="did you mean 'multilabel'"):
        make_task("multilable", Fixed(LOGITS))


def test_a_regression_model_trains_to_a_high_r2():
    """A linear model on 4 pixels learns 2 linear targets through the standardised loss (R² formula)."""
    torch.manual_seed(0)
    x = torch.rand(256, 1, 2, 2)
    w = torch.tensor([[3.0, -1.0, 0.5, 2.0], [0.0, 10.0, -4.0, 1.0]])
    y = x.flatten(1) @ w.T + torch.tensor([50.0, -7.0])
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    task = RegressionTask(model, mean=y.mean(0).tolist(), std=y.std(0).tolist())
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        task.training_step(Batch(x, y)).loss.backward()
        opt.step()
    with torch.no_grad():
        pred = task.predict_step(x)
    r2 = 1 - ((pred - y) ** 2).sum(0) / ((y - y.mean(0)) ** 2).sum(0)
    assert (r2 > 0.99).all()
