"""`cnnkit prune` as an experiment on a run: the sparsities checked, one run folder per sparsity under RUN/pruned,
prune.json with the unpruned model's val numbers, and bad input refused before anything is written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from cnnkit import api
from cnnkit.config import load_config
from cnnkit.errors import CnnkitError
from cnnkit.experiments.prune import check_sparsities, prune_run
from cnnkit.models.prune import prune_model, sparsity
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


# ---------------------------------------------------------------- `cnnkit prune` and api.prune, end to end

def test_api_prune_zeroes_the_globally_smallest_weights_and_never_reads_test(run, tmp_path, monkeypatch):
    import cnnkit.recipes.classification as recipe  # the classification recipe reads the run's split through it

    asked = []
    real = recipe.indices_from_record
    monkeypatch.setattr(recipe, "indices_from_record", lambda s, r, name: asked.append(name) or real(s, r, name))
    rows = api.prune(run, [0.5, 0.9], out=tmp_path / "pruned")
    assert "test" not in asked and "val" in asked
    original = _weights(load_model(run)[0])
    n = original.numel()
    for row, s in zip(rows, (0.5, 0.9)):
        k = round(s * n)
        assert row["sparsity_target"] == s and row["sparsity"] == pytest.approx(k / n)  # exact up to rounding
        assert row["sparsity"] == pytest.approx(s, abs=1e-3)
        pruned = _weights(load_model(row["run"])[0])  # a run folder that load_model reads
        smallest = torch.topk(original.abs(), k, largest=False).indices
        assert torch.all(pruned[smallest] == 0)
        kept = torch.ones(n, dtype=torch.bool)
        kept[smallest] = False
        assert torch.equal(pruned[kept], original[kept])  # the rest untouched (no fine-tuning)
        assert row["val_accuracy_before_ft"] == row["val_accuracy"]
    metrics = api.evaluate(rows[-1]["run"])  # `cnnkit evaluate` reads a pruned folder like any run
    assert metrics["accuracy"] == rows[-1]["val_accuracy"] and metrics["loss"] == rows[-1]["val_loss"]
    assert [Path(r["run"]).name for r in rows] == ["s50", "s90"]
    saved = json.loads((tmp_path / "pruned" / "prune.json").read_text())
    assert saved["rows"] == rows and saved["scope"] == "global"
    assert set(saved["unpruned"]) == {"val_accuracy", "val_loss"}


def test_api_prune_layer_scope_prunes_each_layer_by_the_fraction(run, tmp_path):
    row, = api.prune(run, [0.6], scope="layer", out=tmp_path)
    model = load_model(row["run"])[0]
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert int((m.weight == 0).sum()) == round(0.6 * m.weight.numel()), name


def test_fine_tuning_keeps_the_mask_and_trains_the_rest(run, tmp_path):
    tuned, = api.prune(run, [0.8], finetune_epochs=1, out=tmp_path)
    plain = load_model(run)[0]
    prune_model(plain, 0.8)  # the same prune by hand, without fine-tuning
    before, after = _weights(plain), _weights(load_model(tuned["run"])[0])
    mask = before == 0
    assert torch.all(after[mask] == 0)  # pruned weights stayed exactly zero through training
    assert not torch.equal(after[~mask], before[~mask])  # the others did train
    assert tuned["sparsity"] == pytest.approx(sparsity(plain)[0])
    history = (Path(tuned["run"]) / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val_accuracy" in history[0]


def test_cli_prune_prints_the_table_and_the_folder(run, tmp_path, capsys):
    from cnnkit.cli.app import main

    out = tmp_path / "cli"
    assert main(["-q", "prune", str(run), "--sparsity", "0,0.7", "--scope", "layer", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:4] == ["sparsity", "measured", "val", "acc"]
    assert [line.split()[:2] for line in lines[1:3]] == [["0.00", "0.0000"], ["0.70", "0.7000"]]
    assert lines[-1] == str(out) and (out / "s70" / "model.pt").is_file()
    assert main(["prune", str(run), "--sparsity", "0.5", "--json", "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["sparsity"] == pytest.approx(0.5, abs=1e-3)
