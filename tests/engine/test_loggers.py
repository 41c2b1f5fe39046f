"""cnnkit.engine.loggers: unknown names and missing packages refused in one line; TensorBoard's tags and events."""
from __future__ import annotations

import sys

import pytest
import torch
from torch import nn

from cnnkit.cli.app import main
from cnnkit.engine.loggers import MLflowLogger, TensorBoardLogger, _tag, make_loggers
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks import make_task
from cnnkit.tasks.base import Batch


def _trainer(callbacks: list, epochs: int) -> tuple[Trainer, list, list]:
    """A small MLP on random-label noise images, enough to log a few epochs."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))
    task = make_task("multiclass", model)
    train = [Batch(torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,)))]
    val = [Batch(torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,)))]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return Trainer(task, optimizer, epochs=epochs, callbacks=callbacks, device="cpu"), train, val


def test_tags_put_train_and_val_of_a_metric_on_one_chart() -> None:
    assert [_tag(k) for k in ("train_loss", "val_accuracy", "val_map50", "lr", "time", "training")] == [
        "loss/train", "accuracy/val", "map50/val", "lr", "time", "training"]


def test_each_logger_refuses_to_start_without_its_package(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: find_spec gives None
    monkeypatch.setitem(sys.modules, "mlflow", None)
    with pytest.raises(CnnkitError) as info:
        TensorBoardLogger(tmp_path)
    assert str(info.value) == "the tensorboard logger needs the tensorboard package: pip install tensorboard"
    with pytest.raises(CnnkitError, match="^the mlflow logger needs the mlflow package: pip install mlflow$"):
        MLflowLogger("run")


def test_make_loggers_makes_each_name_once(tmp_path, monkeypatch) -> None:
    """Duplicated names give one logger; an MLflow run is named after the run folder (as if mlflow were there)."""
    monkeypatch.setattr("cnnkit.engine.loggers._require", lambda module, package: None)
    loggers = make_loggers(["mlflow", "mlflow"], tmp_path / "run7", params={"lr": 0.1})
    assert len(loggers) == 1 and isinstance(loggers[0], MLflowLogger)
    assert loggers[0].run_name == "run7" and loggers[0].params == {"lr": 0.1}


def test_unknown_logger_and_missing_package(tmp_path, monkeypatch) -> None:
    with pytest.raises(CnnkitError, match="unknown logger 'tensorbord'; did you mean 'tensorboard'"):
        make_loggers(["tensorbord"], tmp_path)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed: find_spec gives None
    with pytest.raises(CnnkitError, match="pip install mlflow"):
        make_loggers(["mlflow"], tmp_path)


def test_cli_log_flag(tmp_path, monkeypatch, capsys) -> None:
    """--log without the package: one line and no run folder; with TensorBoard installed, RUN/tensorboard/ events."""
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    argv = ["-q", "train", "--data", "synthetic-shapes:n=60", "--epochs", "1", "--log", "tensorboard"]
    assert main([*argv, "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err == "error: the tensorboard logger needs the tensorboard package: pip install tensorboard\n"
    assert not (tmp_path / "none").exists()
    monkeypatch.delitem(sys.modules, "tensorboard")
    pytest.importorskip("tensorboard")
    assert main([*argv, "--out", str(tmp_path / "tb")]) == 0
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))


def test_tensorboard_event_file_reads_back(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer, train, val = _trainer([TensorBoardLogger(tmp_path / "tb")], epochs=3)
    history = trainer.fit(train, val)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"loss/train", "loss/val", "accuracy/val", "lr"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("loss/val")]
    assert logged == [(r["epoch"], pytest.approx(r["val_loss"], rel=1e-6)) for r in history]
