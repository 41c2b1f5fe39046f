"""`cnnkit prune` as an experiment on a run: the sparsities checked, one run folder per sparsity under RUN/pruned,
prune.json with the unpruned model's val numbers, and bad input refused before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit.config import load_config
from cnnkit.errors import CnnkitError
from cnnkit.experiments.prune import check_sparsities, prune_run
from cnnkit.recipes import recipe_for
from cnnkit.recipes.runner import measure
from cnnkit.runs.folder import load_model


def test_check_sparsities_keeps_the_order_and_drops_repeats() -> None:
    assert check_sparsities([0.9, 0.5, 0.9, "0.8", 0]) == [0.9, 0.5, 0.8, 0.0]


@pytest.mark.parametrize(("given", "message"), [
    ([], "give at least one sparsity"),
    ([0.5, 1.0], "sparsity must be in \\[0, 1\\).*got 1"),
    ([-0.1], "got -0.1"),
])
def test_check_sparsities_refuses_in_one_line(given: list, message: str) -> None:
    with pytest.raises(CnnkitError, match=message) as err:
        check_sparsities(given)
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from cnnkit import api

    out = tmp_path_factory.mktemp("prune") / "run"
    cfg = load_config(overrides={"data": {"source": "synthetic-shapes:n=30"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 32}, "out": str(out)})
    return api.train(cfg).run_dir


def _weights(model: nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.detach().flatten() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))])


def test_prune_run_writes_a_run_folder_per_sparsity_and_prune_json(run: Path) -> None:
    rows = prune_run(run, [0.7, 0.7])  # the repeat is one row; default folder RUN/pruned
    assert len(rows) == 1
    row = rows[0]
    folder = run / "pruned" / "s70"
    assert row["run"] == str(folder) and (folder / "config.yaml").is_file()
    assert json.loads((folder / "split.json").read_text()) == json.loads((run / "split.json").read_text())
    n = _weights(load_model(run)[0]).numel()
    pruned = _weights(load_model(folder)[0])
    assert int((pruned == 0).sum()) == round(0.7 * n) and row["sparsity"] == pytest.approx(round(0.7 * n) / n)
    recipe = recipe_for("multiclass")
    val = measure(recipe, folder, "val")  # the row is the pruned folder measured on val
    assert (row["val_accuracy"], row["val_loss"]) == (val["accuracy"], val["loss"])
    assert row["val_accuracy_before_ft"] == row["val_accuracy"]  # no fine-tuning
    report = json.loads((run / "pruned" / "prune.json").read_text())
    base = measure(recipe, run, "val")
    assert report["unpruned"] == {"val_accuracy": base["accuracy"], "val_loss": base["loss"]}
    assert report["rows"] == rows and report["scope"] == "global" and report["finetune_epochs"] == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"scope": "globl"}, "unknown pruning scope 'globl'; did you mean 'global'"),
    ({"finetune_epochs": -1}, "--finetune-epochs must be 0 or more"),
])
def test_bad_options_are_refused_before_anything_is_written(run: Path, tmp_path: Path, options: dict,
                                                            message: str) -> None:
    with pytest.raises(CnnkitError, match=message):
        prune_run(run, [0.5], out=tmp_path / "out", **options)
    assert not (tmp_path / "out").exists()


def test_a_missing_run_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match="run folder not found") as err:
        prune_run(tmp_path / "nowhere", [0.5])
    assert "\n" not in str(err.value)
