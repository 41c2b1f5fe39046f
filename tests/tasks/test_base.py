"""cnnkit.tasks.base: StepOutput and what every Task's training step shares (weights, aux heads, attack, penalty)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from cnnkit.tasks.base import Batch, StepOutput, Task

torch.manual_seed(0)
N = 5
IMAGES = torch.randn(N, 1, 2, 2)
OUTPUTS = torch.randn(N, 3)
TARGETS = torch.randn(N, 3)


class SquaredError(nn.Module):
    """Per-sample mean squared error (N,): a loss given as a module (no pairing check, no reduction)."""

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return ((prediction - target) ** 2).mean(1)


def per_sample(outputs: torch.Tensor = OUTPUTS) -> torch.Tensor:
    return ((outputs - TARGETS) ** 2).mean(1)


def test_step_output_logs_default_to_a_fresh_dict():
    a, b = StepOutput(torch.tensor(1.0)), StepOutput(torch.tensor(2.0))
    a.logs["x"] = torch.tensor(0.0)
    assert b.logs == {} and float(b.loss) == 2.0


def test_reduce_is_the_mean_or_the_weighted_mean_of_per_sample_losses(fixed):
    task = Task(fixed(OUTPUTS), SquaredError())
    assert float(task._reduce(OUTPUTS, Batch(IMAGES, TARGETS))) == pytest.approx(float(per_sample().mean()))
    weights = torch.tensor([1.0, 0.0, 2.0, 0.5, 3.0])
    hand = sum(float(w) * float(v) for w, v in zip(weights, per_sample())) / float(weights.sum())
    assert float(task._reduce(OUTPUTS, Batch(IMAGES, TARGETS, weights))) == pytest.approx(hand, rel=1e-6)
    out = task.validation_step(Batch(IMAGES, TARGETS, weights))
    assert float(out.logs["loss"]) == pytest.approx(hand, rel=1e-6) and not out.logs["loss"].requires_grad


def test_auxiliary_heads_count_0_3_each(fixed):
    model = fixed(OUTPUTS)
    aux = [torch.randn(N, 3), torch.randn(N, 3)]
    model.aux_outputs = aux  # as GoogLeNet sets them in training
    out = Task(model, SquaredError()).training_step(Batch(IMAGES, TARGETS))
    expected = per_sample().mean() + 0.3 * (per_sample(aux[0]).mean() + per_sample(aux[1]).mean())
    assert float(out.loss.detach()) == pytest.approx(float(expected), rel=1e-6)
    assert float(out.logs["loss"]) == pytest.approx(float(per_sample().mean()), rel=1e-6)  # the main head's


def test_adversarial_examples_make_half_the_loss(fixed):
    seen = {}

    class ByImage(nn.Module):  # outputs depend on the images, so the adversarial ones give another loss
        def forward(self, images):
            return images.flatten(1)[:, :3] + OUTPUTS

    def attack(net, images, targets):
        seen["net"], seen["targets"] = net, targets
        return images + 1.0

    model = ByImage()
    out = Task(model, SquaredError(), attack=attack).training_step(Batch(IMAGES, TARGETS))
    clean = per_sample(IMAGES.flatten(1)[:, :3] + OUTPUTS).mean()
    adversarial = per_sample(IMAGES.flatten(1)[:, :3] + 1.0 + OUTPUTS).mean()
    assert float(out.loss.detach()) == pytest.approx(float(0.5 * clean + 0.5 * adversarial), rel=1e-6)
    assert float(out.logs["adv_loss"]) == pytest.approx(float(adversarial), rel=1e-6)
    assert seen["net"] is model and seen["targets"] is TARGETS


def test_penalty_is_added_to_the_loss_and_logged_apart(fixed):
    model = fixed(OUTPUTS)
    task = Task(model, SquaredError(), penalty=lambda net: 0.1 * (net.scale ** 2).sum())
    out = task.training_step(Batch(IMAGES, TARGETS))
    assert float(out.loss.detach()) == pytest.approx(float(per_sample().mean()) + 0.1, rel=1e-6)
    assert float(out.logs["penalty"]) == pytest.approx(0.1) and float(out.logs["loss"]) == pytest.approx(
        float(per_sample().mean()), rel=1e-6)
    out.loss.backward()  # d/ds of mean((s·o − t)²) + 0.1 s² at s = 1
    expected = (2 * (OUTPUTS - TARGETS) * OUTPUTS).mean() + 0.2
    assert float(model.scale.grad) == pytest.approx(float(expected), rel=1e-5)


def test_the_base_task_predicts_nothing_and_has_no_epoch_metrics(fixed):
    task = Task(fixed(OUTPUTS), SquaredError())
    with pytest.raises(NotImplementedError):
        task.predict_step(IMAGES)
    task.reset_metrics()
    assert task.epoch_metrics() == {}
