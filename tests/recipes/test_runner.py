"""The one runner gives every task the same run: a detection run gets its verdict (on 1 − mAP), diagnosis.json
and report.html like a classifier; measuring and predicting refuse, in one line, the options of other tasks; a
run folder written the old way (task 'classify') still evaluates and predicts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cnnkit import api
from cnnkit.cli import main
from cnnkit.config import load_config
from cnnkit.errors import CnnkitError
from cnnkit.recipes import RECIPES, recipe_for
from cnnkit.recipes.base import COMMON_OPTIONS, Recipe

DETECT = "synthetic-shapes:count=2,n=24,size=64"


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("detect") / "run"
    cfg = load_config(overrides={"task": "detect", "data": {"source": DETECT, "image_size": 64},
                                 "model": {"name": "yolo", "options": {"grid": 4}},
                                 "train": {"epochs": 2, "batch_size": 8}, "out": str(out)})
    result = api.train(cfg)
    assert result.run_dir == out and result.verdict is not None
    return out


def test_a_detection_run_has_the_verdict_and_the_report(detector: Path) -> None:
    diagnosis = json.loads((detector / "diagnosis.json").read_text())
    verdict = diagnosis["verdict"]
    history = [line.split(",") for line in (detector / "history.csv").read_text().splitlines()]
    val_map = float(dict(zip(history[0], history[-1]))["val_map"])
    assert verdict["val_error"] == pytest.approx(1 - val_map, abs=0.02)  # the best epoch's model, 1 − mAP
    page = (detector / "report.html").read_text()
    assert 'id="detection"' in page and 'id="summary"' in page


def test_evaluate_json_of_a_detection_run_has_the_verdict(detector: Path, capsys) -> None:
    assert main(["-q", "evaluate", str(detector), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"label", "bias", "variance"} <= set(metrics["verdict"])
    assert metrics["verdict"]["val_error"] == pytest.approx(1 - metrics["map"])
    assert (detector / "plots" / "pr_curves_val.png").is_file()


def test_options_of_other_tasks_are_refused_in_one_line(detector: Path, tmp_path: Path) -> None:
    with pytest.raises(CnnkitError, match=r"^--attack is not supported for a detection run"):
        api.evaluate(detector, attack="fgsm")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    with pytest.raises(CnnkitError, match=r"^--top-k is not supported for a detection run"):
        api.predict(detector, [image], top_k=3)


def test_every_task_has_one_recipe_and_unknown_tasks_get_a_suggestion() -> None:
    tasks = [t for r in RECIPES for t in r.tasks]
    assert len(tasks) == len(set(tasks))
    assert {"binary", "multiclass", "multilabel", "regression", "detect", "instance", "segment"} <= set(tasks)
    with pytest.raises(CnnkitError, match="did you mean 'detect'"):
        recipe_for("detekt")
    for recipe in RECIPES:  # every recipe answers every hook and reads at least the common options
        assert isinstance(recipe, Recipe) and COMMON_OPTIONS - recipe.excluded <= recipe.supported
        for hook in ("open_source", "new_split", "read_split", "loader", "card", "model", "build", "metrics",
                     "predict"):
            assert getattr(type(recipe), hook) is not getattr(Recipe, hook), (recipe.name, hook)


def test_a_run_written_as_classify_still_evaluates_and_predicts(tmp_path: Path) -> None:
    out = tmp_path / "old"
    cfg = load_config(overrides={"data": {"source": "digits"}, "model": {"name": "lenet5"},
                                 "train": {"epochs": 1, "batch_size": 128}, "out": str(out)})
    api.train(cfg)
    config = yaml.safe_load((out / "config.yaml").read_text())
    config["task"] = "classify"  # runs written before the problem types had names
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    metrics = api.evaluate(out, verdict=False)
    assert metrics["split"] == "val" and 0 <= metrics["accuracy"] <= 1
    image = tmp_path / "digit.png"
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(image)
    (row,) = api.predict(out, [image], top_k=2)
    assert len(row["predictions"]) == 2


def test_a_schedule_option_that_cnnkit_sets_is_one_line_before_any_work(tmp_path: Path, capsys) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  schedule_options: {epochs: 3}\n")
    out = tmp_path / "run"
    assert main(["-q", "train", "--config", str(config), "--data", "digits", "--model", "lenet5", "--epochs", "1",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "schedule_options cannot set 'epochs'" in err
    assert not out.exists()


def test_diagnoses_of_classifiers_are_refused_for_a_detector_in_one_line(detector: Path) -> None:
    for option in ({"landscape": True}, {"gradcam": True}, {"data_curve": [50]}):
        with pytest.raises(CnnkitError, match=r"^--[a-z-]+ is not supported for a detection run"):
            api.diagnose(detector, **option)
    assert Path(api.diagnose(detector)["plots"]["learning_curves"]).is_file()


def test_a_models_own_training_recipe_applies_where_the_run_keeps_the_global_defaults(monkeypatch) -> None:
    from dataclasses import replace as set_fields

    from cnnkit.config import TrainConfig
    from cnnkit.models import registry
    from cnnkit.recipes.runner import model_train_defaults

    spec = registry.registered("ssd")
    monkeypatch.setitem(registry._REGISTRY, "ssd", set_fields(spec, train={"optimizer": "sgd", "lr": 0.01,
                                                                           "warmup_epochs": 1.0}))
    got = model_train_defaults("ssd", TrainConfig(epochs=3))
    assert (got.optimizer, got.lr, got.warmup_epochs, got.epochs) == ("sgd", 0.01, 1.0, 3)
    mine = model_train_defaults("ssd", TrainConfig(lr=0.5, optimizer="adamw"))  # set by the user: kept
    assert (mine.optimizer, mine.lr, mine.warmup_epochs) == ("adamw", 0.5, 1.0)
    assert model_train_defaults("lenet5", TrainConfig()) == TrainConfig()  # no recipe of its own
    assert model_train_defaults("no-such-model", TrainConfig()) == TrainConfig()  # refused later, by name
