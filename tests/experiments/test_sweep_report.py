"""The sweep's outputs from rows of trials: the table, the best trial, trials.csv and the parallel-coordinates plot."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from cnnkit.experiments.sweep import Param, Space, read_trials
from cnnkit.experiments.sweep_report import (
    SweepResult,
    best_row,
    direction_of,
    format_sweep,
    plot_parallel,
    write_trials_csv,
)

SPACE = Space({}, [Param("lr", "train.lr", low=1e-4, high=1e-1, log=True),
                   Param("optimizer", "train.optimizer", choices=("sgd", "adam"))])
ROWS = [{"trial": 0, "state": "complete", "value": 0.5, "lr": 1e-3, "optimizer": "sgd", "epochs": 2, "run": "t0"},
        {"trial": 1, "state": "complete", "value": 0.2, "lr": 1e-2, "optimizer": "adam", "epochs": 2, "run": "t1"},
        {"trial": 2, "state": "pruned", "value": 0.9, "lr": 1e-4, "optimizer": "adam", "epochs": 1, "run": "t2"}]


def test_direction_and_the_best_complete_trial() -> None:
    assert direction_of("val_loss") == "minimize" and direction_of("val_accuracy") == "maximize"
    assert best_row(ROWS, "val_loss")["trial"] == 1 and best_row(ROWS, "val_accuracy")["trial"] == 0
    assert best_row(ROWS[2:], "val_loss") is None


def test_table_csv_and_plot(tmp_path: Path) -> None:
    path = write_trials_csv(ROWS, tmp_path / "trials.csv", "val_loss", ["lr", "optimizer"])
    assert [r["val_loss"] for r in read_trials(path)] == ["0.5", "0.2", "0.9"]
    png = plot_parallel(ROWS, SPACE, "val_loss", tmp_path / "parallel.png")
    assert Image.open(png).size[0] > 300
    result = SweepResult(tmp_path, "val_loss", "minimize", ["lr", "optimizer"], ROWS, best_row(ROWS, "val_loss"),
                         {"lr": 0.8, "optimizer": 0.2}, {"csv": path, "png": png})
    text = format_sweep(result)
    assert text.splitlines()[0].split() == ["trial", "state", "val_loss", "lr", "optimizer", "epochs"]
    assert "importance: lr 0.80  optimizer 0.20" in text
    assert "best: trial 1 val_loss 0.2  lr=0.01  optimizer=adam  (t1)" in text
