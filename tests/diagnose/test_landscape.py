"""The loss landscape (Li et al. 2018): filter-normalised directions, the centre is the trained model's loss,
the weights come back, the grid is square and odd, and a small time budget shrinks it."""
from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cnnkit.diagnose.landscape import filter_normalized_direction, loss_surface, mean_loss
from cnnkit.errors import CnnkitError
from cnnkit.tasks import make_task
from cnnkit.tasks.base import Batch


def tiny_task():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    model.eval()
    g = torch.Generator().manual_seed(1)
    batches = [Batch(torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)) for _ in range(2)]
    return make_task("multiclass", model), batches


def test_filter_normalisation_and_zero_bias_and_bn():
    task, _ = tiny_task()
    d = filter_normalized_direction(task.model, torch.Generator().manual_seed(0))
    for (name, p), dp in zip(task.model.named_parameters(), d):
        assert dp.shape == p.shape
        if p.dim() <= 1:  # biases, BN γ and β: "ignore BN"
            assert torch.count_nonzero(dp) == 0, name
        else:  # every filter (output channel / row) has the norm of the weights' filter
            torch.testing.assert_close(dp.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))
            assert not torch.allclose(dp, p.detach())  # a random direction, not the weights


def test_centre_is_the_unperturbed_loss_and_the_weights_come_back():
    task, batches = tiny_task()
    before = {k: v.clone() for k, v in task.model.state_dict().items()}
    loss = mean_loss(task, batches)
    result = loss_surface(task, batches, steps=4, span=0.5, dims=2, budget_s=60)
    s = result["steps"]
    assert result["steps_requested"] == s == 5 and not result["reduced"] and result["note"] is None  # made odd
    mid = s // 2
    alphas = result["alphas"]
    assert len(alphas) == s and alphas[mid] == 0.0 and alphas[0] == -0.5 and alphas[-1] == 0.5
    assert alphas == [-a for a in reversed(alphas)]  # symmetric about the trained weights
    assert len(result["grid"]) == s and all(len(row) == s for row in result["grid"])
    assert result["centre_loss"] == pytest.approx(loss, abs=1e-6)
    assert result["grid"][mid][mid] == pytest.approx(loss, abs=1e-6)  # evaluated at α = β = 0
    assert result["loss_1d"] == result["grid"][mid]
    assert max(result["loss_1d"]) > loss  # moving away from the weights changes the loss
    for k, v in task.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_one_dimension_and_bad_arguments():
    task, batches = tiny_task()
    result = loss_surface(task, batches, steps=5, dims=1, budget_s=60)
    assert result["grid"] is None and len(result["loss_1d"]) == 5
    assert result["loss_1d"][2] == pytest.approx(result["centre_loss"], abs=1e-6)
    for kwargs, message in (({"steps": 2}, "steps ≥ 3"), ({"span": 0}, "span must be positive"),
                            ({"dims": 3}, "1 or 2 dimensions"), ({"budget_s": -1}, "budget must be positive")):
        with pytest.raises(CnnkitError, match=message):
            loss_surface(task, batches, **kwargs)


def test_a_small_budget_shrinks_the_grid_up_front(monkeypatch):
    import time

    import cnnkit.diagnose.landscape as landscape

    point = landscape._point
    monkeypatch.setattr(landscape, "_point", lambda *a: (time.sleep(0.005), point(*a))[1])  # ≥ 5 ms a point
    task, batches = tiny_task()
    budget = 0.2  # 21 × 21 points would take ≥ 2.2 s
    result = loss_surface(task, batches, steps=21, dims=2, budget_s=budget)
    s = result["steps"]
    assert result["reduced"] and 3 <= s < 21 and s % 2 == 1
    assert len(result["grid"]) == s and len(result["alphas"]) == s
    assert "reduced from 21 to" in result["note"] and "budget" in result["note"]
    # the plan fits the budget by the measured cost of a point, unless even 3×3 would not
    assert s == 3 or s**2 * result["seconds_per_point"] <= budget
    # and points past the deadline are skipped (a busy machine): at most the 1-D row and one point beyond it
    assert result["eval_seconds"] <= budget + (s + 1) * result["seconds_per_point"] + 0.5
    assert all(v is not None for v in result["loss_1d"])


def test_points_past_the_deadline_are_skipped(monkeypatch):
    import cnnkit.diagnose.landscape as landscape

    task, batches = tiny_task()
    monkeypatch.setattr(landscape, "_affordable_steps", lambda steps, *_: steps)  # a far too hopeful plan
    result = loss_surface(task, batches, steps=21, dims=2, budget_s=0.01)
    assert all(v is not None for v in result["loss_1d"])  # the β = 0 row is always complete
    skipped = sum(v is None for row in result["grid"] for v in row)
    assert skipped >= 21 * 20 - 21 and f"{skipped} of 441 points not evaluated" in result["note"]


def test_landscape_of_a_run_through_the_cli(tmp_path, tiny_folder, capsys):
    from cnnkit.cli.app import main

    run = tmp_path / "run"
    assert main(["-q", "train", "--data", str(tiny_folder), "--model", "lenet5", "--epochs", "1",
                 "--out", str(run)]) == 0
    model_bytes = (run / "model.pt").read_bytes()
    capsys.readouterr()
    assert main(["-q", "diagnose", str(run), "--landscape", "--budget", "2", "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == str(run)
    result = json.loads(lines[0])
    land = result["landscape"]
    assert land["images"] == len(json.loads((run / "split.json").read_text())["splits"]["train"]["ids"])
    mid = land["steps"] // 2
    assert land["grid"][mid][mid] == pytest.approx(land["centre_loss"], abs=1e-5)
    for name in ("learning_curves", "landscape_1d", "landscape_2d"):
        assert (run / "plots" / f"{name}.png").is_file(), name
        assert result["plots"][name] == str(run / "plots" / f"{name}.png")
    assert (run / "plots" / "landscape.json").is_file()
    assert (run / "model.pt").read_bytes() == model_bytes  # the run's weights are untouched
