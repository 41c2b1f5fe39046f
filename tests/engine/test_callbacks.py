"""The overfitting alarm on a synthetic history, its saved state, a real Trainer it stops, and the loggers."""
from __future__ import annotations

import sys
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnkit.cli.app import main
from cnnkit.engine.callbacks import OverfittingAlarm
from cnnkit.engine.loggers import TensorBoardLogger, make_loggers
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Batch
from cnnkit.tasks import make_task


def _feed(alarm: OverfittingAlarm, train: list[float], val: list[float]) -> list[int]:
    """Feed epochs to the alarm; the epochs at which it warned."""
    trainer = SimpleNamespace(dist=SimpleNamespace(is_main=True), stop_training=False)
    warned = []
    for epoch, (t, v) in enumerate(zip(train, val), 1):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            alarm.on_epoch_end(trainer, {"epoch": epoch, "train_loss": t, "val_loss": v})
        warned += [epoch] * len(caught)
    return warned


TRAIN = [1.0, 0.8, 0.6, 0.5, 0.4, 0.3, 0.2]
VAL = [0.9, 0.7, 0.5, 0.55, 0.6, 0.65, 0.7]  # down for 3 epochs, then up


def test_fires_at_the_third_rising_epoch_and_names_the_best() -> None:
    alarm = OverfittingAlarm(patience=3)
    assert _feed(alarm, TRAIN[:6], VAL[:6]) == [6]
    assert alarm.fired_epoch == 6 and alarm.best_epoch == 3
    assert _feed(OverfittingAlarm(patience=3), TRAIN, VAL) == [6]  # once only
    alarm = OverfittingAlarm(patience=3)
    trainer = SimpleNamespace(dist=SimpleNamespace(is_main=True), stop_training=False)
    with pytest.warns(UserWarning, match=r"overfitting at epoch 6.*best epoch was 3"):
        for epoch, (t, v) in enumerate(zip(TRAIN[:6], VAL[:6]), 1):
            alarm.on_epoch_end(trainer, {"epoch": epoch, "train_loss": t, "val_loss": v})
    assert not trainer.stop_training and alarm.as_dict()["fired_epoch"] == 6
    alarm.on_epoch_end(trainer, {"epoch": 7, "train_loss": 0.1, "val_loss": 0.4})  # a new best after the alarm
    assert alarm.as_dict() == {"patience": 3, "stop": False, "fired_epoch": 6, "best_epoch": 3,
                               "best_epoch_overall": 7}


def test_silent_when_the_training_loss_rises_too_or_patience_is_longer() -> None:
    rising_train = TRAIN[:3] + [0.62, 0.64, 0.66, 0.7]
    alarm = OverfittingAlarm(patience=3)
    assert _feed(alarm, rising_train, VAL) == [] and alarm.fired_epoch is None
    assert _feed(OverfittingAlarm(patience=5), TRAIN, VAL) == []
    # a dip in the val loss restarts the count
    assert _feed(OverfittingAlarm(patience=3), TRAIN, [0.9, 0.7, 0.5, 0.55, 0.52, 0.6, 0.65]) == []


def test_state_survives_a_resume() -> None:
    first = OverfittingAlarm(patience=3)
    _feed(first, TRAIN[:4], VAL[:4])
    second = OverfittingAlarm(patience=3)
    second.load_state_dict(first.state_dict())
    trainer = SimpleNamespace(dist=SimpleNamespace(is_main=True), stop_training=False)
    with pytest.warns(UserWarning, match="overfitting at epoch 6"):
        for epoch in (5, 6):
            second.on_epoch_end(trainer, {"epoch": epoch, "train_loss": TRAIN[epoch - 1], "val_loss": VAL[epoch - 1]})
    assert second.best_epoch == 3


def _memorising_trainer(callbacks: list, epochs: int) -> tuple[Trainer, list, list]:
    """A wide MLP on 32 random-label noise images: the training loss falls, the val loss (other noise) rises."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 4))
    task = make_task("multiclass", model)
    train = [Batch(torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,)))]
    val = [Batch(torch.randn(32, 1, 8, 8), torch.randint(0, 4, (32,)))]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    return Trainer(task, optimizer, epochs=epochs, callbacks=callbacks, device="cpu"), train, val


def test_stop_true_stops_a_real_trainer_early() -> None:
    alarm = OverfittingAlarm(patience=3, stop=True)
    trainer, train, val = _memorising_trainer([alarm], epochs=40)
    with pytest.warns(UserWarning, match="overfitting"):
        history = trainer.fit(train, val)
    assert alarm.fired_epoch is not None and len(history) == alarm.fired_epoch < 40
    assert alarm.best_epoch < alarm.fired_epoch


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

    trainer, train, val = _memorising_trainer([TensorBoardLogger(tmp_path / "tb")], epochs=3)
    history = trainer.fit(train, val)
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert {"loss/train", "loss/val", "accuracy/val", "lr"} <= set(events.Tags()["scalars"])
    logged = [(e.step, e.value) for e in events.Scalars("loss/val")]
    assert logged == [(r["epoch"], pytest.approx(r["val_loss"], rel=1e-6)) for r in history]
