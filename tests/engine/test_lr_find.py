"""The learning-rate range test: its lr schedule, smoothing, early stop, suggestion rule, state restore, plot."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cnnkit.data.loader import TensorLoader
from cnnkit.engine import optimizers
from cnnkit.engine.lr_find import SKIP_END, lr_find, suggest_lr
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Batch, StepOutput, Task
from cnnkit.tasks.classification import ClassificationTask


class LrTask(Task):
    """A fake task whose loss is a function of the optimiser's current lr: f(log10 lr).

    The model's one parameter only gives the loss a gradient (always zero), so the weights never move."""

    def __init__(self, f, optimizer_box: list):
        super().__init__(torch.nn.Linear(1, 1, bias=False))
        self.f, self.box = f, optimizer_box

    def training_step(self, batch: Batch) -> StepOutput:
        lr = self.box[0].param_groups[0]["lr"]
        loss = torch.tensor(float(self.f(math.log10(lr)))) + 0.0 * self.model.weight.sum()
        return StepOutput(loss, {"loss": loss.detach()})


def _fake(f):
    box: list = []
    task = LrTask(f, box)
    box.append(torch.optim.SGD(task.model.parameters(), lr=0.1))
    loader = TensorLoader(torch.zeros(3, 1), torch.zeros(3), batch_size=1)  # 3 batches: cycled
    return task, box[0], loader


def parabola(x: float) -> float:
    return (x + 3) ** 2 + 1  # minimum 1 at lr = 1e-3


def test_lr_sequence_is_geometric_from_start_to_end() -> None:
    task, opt, loader = _fake(lambda x: 1.0)  # flat: never diverges, runs every step
    res = lr_find(task, opt, loader, start_lr=1e-6, end_lr=3.0, steps=37)
    assert len(res.lrs) == 37 and not res.stopped_early
    np.testing.assert_allclose(res.lrs, np.geomspace(1e-6, 3.0, 37), rtol=1e-12, atol=0)
    assert res.lrs[0] == pytest.approx(1e-6, rel=1e-12) and res.lrs[-1] == pytest.approx(3.0, rel=1e-12)
    assert opt.param_groups[0]["lr"] == 0.1  # restored


def test_raw_losses_follow_the_lr_and_smoothing_is_the_bias_corrected_ema() -> None:
    task, opt, loader = _fake(parabola)
    beta = 0.9
    res = lr_find(task, opt, loader, start_lr=1e-7, end_lr=1e-3, steps=30, smooth=beta)
    np.testing.assert_allclose(res.raw_losses, [parabola(math.log10(lr)) for lr in res.lrs], rtol=1e-6)
    avg, expected = 0.0, []
    for k, raw in enumerate(res.raw_losses, start=1):
        avg = beta * avg + (1 - beta) * raw
        expected.append(avg / (1 - beta ** k))
    np.testing.assert_allclose(res.losses, expected, rtol=1e-12)
    assert res.losses[0] == pytest.approx(res.raw_losses[0])  # bias correction: no pull towards 0


def test_stops_early_when_the_smoothed_loss_diverges() -> None:
    task, opt, loader = _fake(parabola)
    res = lr_find(task, opt, loader, start_lr=1e-7, end_lr=10.0, steps=100, smooth=0.0, diverge=4.0)
    assert res.stopped_early and len(res.lrs) < 100
    # without smoothing: stop at the first lr where (x + 3)² + 1 > 4 · best, i.e. x > −3 + √3 (best ≈ 1)
    assert res.losses[-1] > 4 * min(res.losses[:-1])
    assert all(v <= 4 * min(res.losses[:i + 1]) for i, v in enumerate(res.losses[:-1]))
    assert math.log10(res.lrs[-1]) > -3 + math.sqrt(3) > math.log10(res.lrs[-2])
    # with heavy smoothing it stops later but still before the end
    late = lr_find(task, opt, loader, start_lr=1e-7, end_lr=10.0, steps=100, smooth=0.9)
    assert late.stopped_early and len(res.lrs) < len(late.lrs) < 100
    assert late.losses[-1] > 4 * min(late.losses[:-1])


def test_suggestion_is_the_steepest_descent_of_the_smoothed_curve() -> None:
    # a parabola falls fastest at its left end
    task, opt, loader = _fake(parabola)
    res = lr_find(task, opt, loader, start_lr=1e-7, end_lr=10.0, steps=100, smooth=0.0)
    assert res.suggestion == res.lrs[0]
    # a tanh step falls fastest at its centre, lr = 1e-4 (within one grid step of 0.08 decades)
    task, opt, loader = _fake(lambda x: 2.0 - math.tanh(2 * (x + 4)) + max(0.0, x + 1) ** 2)
    res = lr_find(task, opt, loader, start_lr=1e-7, end_lr=10.0, steps=101, smooth=0.0)
    assert abs(math.log10(res.suggestion) + 4) < 0.081
    # the rule itself: the last SKIP_END points are ignored (there the loss may still be falling)
    lrs = list(np.geomspace(1e-5, 1.0, 20))
    losses = [1.0] * 14 + [0.9, 0.5, 0.1, -1.0, -5.0, -9.0]
    assert suggest_lr(lrs, losses) == lrs[20 - SKIP_END - 1]
    assert suggest_lr(lrs[:1], losses[:1]) is None


def _bn_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Dropout(0.2), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3))


def test_model_and_optimizer_state_are_unchanged() -> None:
    model = _bn_model()
    task = ClassificationTask(model)
    opt = optimizers.get("adam", model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    loader = TensorLoader(x, y, 16, shuffle=True)
    task.training_step(Batch(x[:16], y[:16])).loss.backward()  # a non-empty Adam state to preserve
    opt.step()
    opt.zero_grad()
    model.eval()
    before_model = {k: v.clone() for k, v in model.state_dict().items()}
    before_opt = opt.state_dict()
    before_opt = {"state": {i: {k: v.clone() for k, v in s.items()} for i, s in before_opt["state"].items()},
                  "groups": [dict(gr) for gr in before_opt["param_groups"]]}
    params = list(model.parameters())
    rng = torch.get_rng_state()

    res = lr_find(task, opt, loader, steps=40)

    assert len(res.lrs) >= 10
    after_model = model.state_dict()
    assert after_model.keys() == before_model.keys()
    for k, v in before_model.items():
        assert torch.equal(after_model[k], v), k
    after_opt = opt.state_dict()
    assert [dict(gr) for gr in after_opt["param_groups"]] == before_opt["groups"]
    assert after_opt["state"].keys() == before_opt["state"].keys()
    for i, s in before_opt["state"].items():
        assert after_opt["state"][i].keys() == s.keys()
        for k, v in s.items():
            assert torch.equal(after_opt["state"][i][k], v), (i, k)
    assert list(model.parameters()) == params and opt.param_groups[0]["params"] == params  # same objects
    assert all(p.grad is None for p in params)
    assert not model.training  # the mode is restored too
    assert torch.equal(torch.get_rng_state(), rng)


def test_bad_arguments_and_empty_loader() -> None:
    task, opt, loader = _fake(parabola)
    with pytest.raises(CnnkitError):
        lr_find(task, opt, loader, start_lr=1.0, end_lr=1e-3)
    with pytest.raises(CnnkitError):
        lr_find(task, opt, loader, steps=1)
    with pytest.raises(CnnkitError, match="no batches"):
        lr_find(task, opt, TensorLoader(torch.zeros(0, 1), torch.zeros(0), 4), steps=5)
    assert opt.param_groups[0]["lr"] == 0.1


def test_plot_writes_a_png(tmp_path) -> None:
    task, opt, loader = _fake(parabola)
    res = lr_find(task, opt, loader, start_lr=1e-6, end_lr=1.0, steps=30)
    out = res.plot(tmp_path / "plots" / "lr_find.png")
    assert out == tmp_path / "plots" / "lr_find.png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
