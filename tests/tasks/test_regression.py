"""cnnkit.tasks.regression: standardised targets, the unit interval, raw outputs; losses against PyTorch."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.tasks import Batch, RegressionTask

torch.manual_seed(0)
N = 6
IMAGES = torch.zeros(N, 1, 2, 2)


def loss_of(task, targets, weights=None) -> float:
    return float(task.training_step(Batch(IMAGES, targets, weights)).loss.detach())


def test_regression_learns_standardised_targets_and_predicts_in_their_units(fixed):
    targets = torch.randn(N, 2) * torch.tensor([10.0, 0.5]) + torch.tensor([100.0, -3.0])
    mean, std = targets.mean(0), targets.std(0)
    outputs = torch.randn(N, 2)
    task = RegressionTask(fixed(outputs), mean=mean.tolist(), std=std.tolist())
    out = task.training_step(Batch(IMAGES, targets))
    assert float(out.loss.detach()) == pytest.approx(float(F.mse_loss(outputs, (targets - mean) / std)), rel=1e-5)
    predictions = task.predict_step(IMAGES).detach()
    assert torch.allclose(predictions, outputs * std + mean)
    assert float(out.logs["mae"]) == pytest.approx(float((predictions - targets).abs().mean()), rel=1e-5)


def test_regression_to_the_unit_interval_uses_a_sigmoid(fixed):
    targets, outputs = torch.rand(N, 1), torch.randn(N, 1)
    mse = RegressionTask(fixed(outputs), bounded=True)
    assert loss_of(mse, targets) == pytest.approx(float(F.mse_loss(outputs.sigmoid(), targets)), rel=1e-6)
    bce = RegressionTask(fixed(outputs), "binary_crossentropy", bounded=True)
    assert loss_of(bce, targets) == pytest.approx(
        float(F.binary_cross_entropy_with_logits(outputs, targets)), rel=1e-6)
    assert torch.allclose(mse.predict_step(IMAGES), outputs.sigmoid())


def test_regression_without_scaling_compares_raw_outputs(fixed):
    targets, outputs = torch.rand(N, 3) * 5, torch.rand(N, 3) * 5
    task = RegressionTask(fixed(outputs), "msle")
    expected = ((torch.log1p(outputs) - torch.log1p(targets)) ** 2).mean()
    assert loss_of(task, targets) == pytest.approx(float(expected), rel=1e-5)


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
