"""cnnkit.engine.callbacks: the overfitting alarm (synthetic histories, its saved state, a real Trainer it stops),
early stopping, checkpoints and history.csv on a stand-in trainer whose every value is known."""
from __future__ import annotations

import csv
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from cnnkit.engine.callbacks import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    OverfittingAlarm,
    ProgressBar,
    write_history,
)
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.tasks import make_task
from cnnkit.tasks.base import Batch


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


def test_fires_at_the_third_rising_epoch_of_the_two_epoch_means_and_names_the_best() -> None:
    # means of 2 epochs: val .80 .60 .525 .575 .625 .675, train .90 .70 .55 .45 .35 .25: rises at epochs 5, 6, 7
    alarm = OverfittingAlarm(patience=3)
    assert _feed(alarm, TRAIN, VAL) == [7]
    assert alarm.fired_epoch == 7 and alarm.best_epoch == 3
    assert _feed(OverfittingAlarm(patience=3), TRAIN + [0.1], VAL + [0.8]) == [7]  # once only
    assert _feed(OverfittingAlarm(patience=3, window=1), TRAIN, VAL) == [6]  # raw losses: the third rise, epoch 6
    alarm = OverfittingAlarm(patience=3)
    trainer = SimpleNamespace(dist=SimpleNamespace(is_main=True), stop_training=False)
    with pytest.warns(UserWarning, match=r"overfitting at epoch 7.*best epoch was 3"):
        for epoch, (t, v) in enumerate(zip(TRAIN, VAL), 1):
            alarm.on_epoch_end(trainer, {"epoch": epoch, "train_loss": t, "val_loss": v})
    assert not trainer.stop_training and alarm.as_dict()["fired_epoch"] == 7
    alarm.on_epoch_end(trainer, {"epoch": 8, "train_loss": 0.1, "val_loss": 0.4})  # a new best after the alarm
    assert alarm.as_dict() == {"patience": 3, "stop": False, "on": "rise", "fired_epoch": 7, "best_epoch": 3,
                               "best_epoch_overall": 8}


def test_one_lucky_epoch_in_a_rising_val_curve_does_not_reset_the_count() -> None:
    """A real run (LeNet-5, 5 % of MNIST, epochs 12-17): the val loss climbs from its low with one small dip,
    which resets a count of raw rises but not one of 2-epoch means."""
    val = [0.2110, 0.1712, 0.1539, 0.1844, 0.1797, 0.1845, 0.1836]
    train = [0.0390, 0.0305, 0.0289, 0.0238, 0.0155, 0.0061, 0.0036]
    assert _feed(OverfittingAlarm(patience=3, window=1), train, val) == []
    alarm = OverfittingAlarm(patience=3)
    assert _feed(alarm, train, val) == [6] and alarm.best_epoch == 3  # means: .191 .163 .169 .182 .182


def test_silent_when_the_training_loss_rises_too_or_patience_is_longer() -> None:
    rising_train = TRAIN[:3] + [0.62, 0.64, 0.66, 0.7]
    alarm = OverfittingAlarm(patience=3)
    assert _feed(alarm, rising_train, VAL) == [] and alarm.fired_epoch is None
    assert _feed(OverfittingAlarm(patience=5), TRAIN, VAL) == []
    # a new low in the val loss restarts the count (means .80 .60 .525 .50 .525 .625: two rises)
    assert _feed(OverfittingAlarm(patience=3), TRAIN, [0.9, 0.7, 0.5, 0.55, 0.45, 0.6, 0.65]) == []
    with pytest.raises(CnnkitError, match="window must be at least 1"):
        OverfittingAlarm(window=0)


def test_state_survives_a_resume() -> None:
    first = OverfittingAlarm(patience=3)
    _feed(first, TRAIN[:5], VAL[:5])
    second = OverfittingAlarm(patience=3)
    second.load_state_dict(first.state_dict())
    trainer = SimpleNamespace(dist=SimpleNamespace(is_main=True), stop_training=False)
    with pytest.warns(UserWarning, match="overfitting at epoch 7"):
        for epoch in (6, 7):
            second.on_epoch_end(trainer, {"epoch": epoch, "train_loss": TRAIN[epoch - 1], "val_loss": VAL[epoch - 1]})
    assert second.best_epoch == 3


# the training loss falls all along while the val loss flattens at 0.39, with noise: the notes' overfitting
FLAT_TRAIN = [1.0, 0.7, 0.5, 0.4, 0.32, 0.26, 0.21, 0.17, 0.14, 0.12]
FLAT_VAL = [0.9, 0.6, 0.45, 0.40, 0.39, 0.396, 0.392, 0.395, 0.393, 0.396]
# recorded by `cnnkit demo` (LeNet-5 on the embedded digits, 30 epochs, cosine, seed 0): a good fit (val error 0.007)
# whose val loss wanders around 0.04 at the end while the augmented training loss still falls
DEMO_TRAIN = [1.5891, 0.6059, 0.4027, 0.3338, 0.2009, 0.1745, 0.1788, 0.1371, 0.1186, 0.12, 0.0902, 0.0903, 0.0897,
              0.0711, 0.0559, 0.062, 0.0585, 0.0398, 0.0293, 0.0394, 0.0246, 0.0306, 0.0309, 0.0249, 0.0247, 0.0265,
              0.0278, 0.0199, 0.0143, 0.0139]
DEMO_VAL = [0.5971, 0.2435, 0.1718, 0.1662, 0.1047, 0.0769, 0.0741, 0.0673, 0.0817, 0.0784, 0.0612, 0.0552, 0.0443,
            0.0462, 0.0621, 0.0454, 0.0326, 0.0533, 0.0288, 0.0483, 0.0544, 0.0485, 0.0471, 0.0385, 0.0411, 0.0401,
            0.0408, 0.0415, 0.0424, 0.0424]


def test_the_plateau_alarm_fires_when_the_val_loss_flattens_while_the_training_loss_falls() -> None:
    # 2-epoch means of val: .75 .525 .425 .395 .393 .394 .3935 .394 .3945: the last new low at epoch 6
    alarm = OverfittingAlarm(patience=3, on="plateau")
    assert _feed(alarm, FLAT_TRAIN, FLAT_VAL) == [9] and alarm.as_dict()["on"] == "plateau"
    assert _feed(OverfittingAlarm(patience=3, on="rise"), FLAT_TRAIN, FLAT_VAL) == []  # up and down: no 3 rises
    assert _feed(OverfittingAlarm(patience=3, on="both"), FLAT_TRAIN, FLAT_VAL) == [9]
    # min_delta: a new low by less than it is no improvement (.395 → .393 at epoch 6 counts as flat)
    assert _feed(OverfittingAlarm(patience=3, on="plateau", min_delta=0.01), FLAT_TRAIN, FLAT_VAL) == [8]
    assert _feed(OverfittingAlarm(patience=3, on="plateau"), [0.5] * 10, FLAT_VAL) == []  # train flat too


def test_the_plateau_alarm_stays_silent_on_the_demo_run_and_on_a_rising_curve() -> None:
    assert _feed(OverfittingAlarm(patience=3, on="plateau"), DEMO_TRAIN, DEMO_VAL) == []
    assert _feed(OverfittingAlarm(patience=3, on="plateau"), TRAIN, VAL) == []  # a climb is the rise alarm's case
    assert _feed(OverfittingAlarm(patience=3, on="both"), TRAIN, VAL) == [7]
    with pytest.raises(CnnkitError, match="unknown --alarm-on 'flat'"):
        OverfittingAlarm(on="flat")


@pytest.mark.slow  # the demo itself: 30 epochs of LeNet-5 on the embedded digits, about 15 s
def test_the_plateau_alarm_stays_silent_on_a_real_demo_run(tmp_path) -> None:
    import json
    from dataclasses import replace

    from cnnkit.api import demo_config, train

    cfg = demo_config(out=str(tmp_path / "demo"))
    cfg = replace(cfg, diagnose=replace(cfg.diagnose, alarm_on="plateau"))
    train(cfg)
    alarm = json.loads((tmp_path / "demo" / "diagnosis.json").read_text())["alarm"]
    assert alarm["on"] == "plateau" and alarm["fired_epoch"] is None


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


# ---------------------------------------------------------------- early stopping, checkpoints, history.csv

class FakeTrainer(SimpleNamespace):
    """What the callbacks read from a Trainer: the model, history, stop flag and the state to save."""

    def __init__(self, **kwargs):
        super().__init__(model=nn.Linear(2, 1), history=[], stop_training=False, interrupted=False, epoch=0,
                         dist=SimpleNamespace(is_main=True), **kwargs)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "model": self.model.state_dict(), "history": list(self.history)}

    def callback_states(self) -> dict:
        return {"Marker": {"epoch": self.epoch}}


def _epochs(callback, trainer: FakeTrainer, rows: list[dict]) -> None:
    """Run rows through the callback as the Trainer does: epoch counter, history, weights that change."""
    for row in rows:
        trainer.epoch += 1
        with torch.no_grad():
            trainer.model.weight.fill_(float(trainer.epoch))  # the weights record which epoch made them
        logs = {"epoch": trainer.epoch, **row}
        trainer.history.append(logs)
        callback.on_epoch_end(trainer, logs)
        if trainer.stop_training:
            break


def test_early_stopping_waits_patience_epochs_and_restores_the_best_weights() -> None:
    stop = EarlyStopping("val_loss", patience=2)
    trainer = FakeTrainer()
    _epochs(stop, trainer, [{"val_loss": v} for v in (1.0, 0.8, 0.9, 0.85, 0.7)])
    assert trainer.stop_training and stop.stopped_epoch == 4 and (stop.best, stop.best_epoch) == (0.8, 2)
    stop.on_fit_end(trainer)
    assert torch.equal(trainer.model.weight, torch.full((1, 2), 2.0))  # epoch 2's weights are back


def test_early_stopping_mode_and_min_delta() -> None:
    assert EarlyStopping("val_accuracy").mode == "max" and EarlyStopping("val_error").mode == "min"
    stop = EarlyStopping("val_accuracy", patience=2, min_delta=0.05, restore_best=False)
    trainer = FakeTrainer()
    _epochs(stop, trainer, [{"val_accuracy": v} for v in (0.5, 0.6, 0.63, 0.64, 0.9)])  # +0.03, +0.04: not enough
    assert stop.stopped_epoch == 4 and stop.best_epoch == 2 and stop.best_weights is None
    resumed = EarlyStopping("val_accuracy", patience=2, min_delta=0.05)
    resumed.load_state_dict(stop.state_dict())
    assert (resumed.best, resumed.best_epoch, resumed.wait) == (0.6, 2, 2)


def test_early_stopping_resumed_from_a_checkpoint_restores_the_best_weights_of_the_whole_run() -> None:
    """A resume after the best epoch (the weights travel in the state) or at it (they are the checkpoint's model,
    taken at the resumed fit's start) restores what an uninterrupted run would: epoch 2's weights."""
    rows = [{"val_loss": v} for v in (1.0, 0.8, 0.9, 0.85, 0.7)]
    for kill_after in (2, 3):
        first, trainer = EarlyStopping("val_loss", patience=2), FakeTrainer()
        _epochs(first, trainer, rows[:kill_after])
        state = first.state_dict()
        assert (state["best_weights"] is None) == (kill_after == 2)  # at the best epoch: the checkpoint's own model
        resumed = EarlyStopping("val_loss", patience=2)
        resumed.load_state_dict(state)
        resumed.on_fit_start(trainer)  # the trainer holds the checkpoint's weights
        _epochs(resumed, trainer, rows[kill_after:])
        assert resumed.stopped_epoch == 4
        resumed.on_fit_end(trainer)
        assert torch.equal(trainer.model.weight, torch.full((1, 2), 2.0))


def test_early_stopping_refusals_are_one_line() -> None:
    with pytest.raises(CnnkitError, match="patience must be at least 1, got 0"):
        EarlyStopping(patience=0)
    with pytest.raises(CnnkitError, match="monitors 'val_map', which is not logged; logged: epoch, val_loss") as info:
        EarlyStopping("val_map").on_epoch_end(FakeTrainer(), {"epoch": 1, "val_loss": 0.3})
    assert "\n" not in str(info.value)


def test_model_checkpoint_writes_best_and_last_atomically(tmp_path) -> None:
    saver = ModelCheckpoint(tmp_path / "checkpoints", monitor="val_loss")
    trainer = FakeTrainer()
    _epochs(saver, trainer, [{"val_loss": v} for v in (0.5, 0.3, 0.4)])
    best, last = (load_checkpoint(tmp_path / "checkpoints" / f"{n}.pt") for n in ("best", "last"))
    assert best["epoch"] == 2 and torch.equal(best["model"]["weight"], torch.full((1, 2), 2.0))
    assert last["epoch"] == 3 and [r["val_loss"] for r in last["history"]] == [0.5, 0.3, 0.4]
    assert best["callbacks"] == {"Marker": {"epoch": 2}}
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["best.pt", "last.pt"]  # no temp files
    assert saver.state_dict() == {"best": 0.3, "best_epoch": 2}
    # interrupted: the current state goes to last.pt; not interrupted: last.pt stays as the epoch left it
    trainer.epoch = 4
    saver.on_fit_end(trainer)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3
    trainer.interrupted = True
    saver.on_fit_end(trainer)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 4


def test_csv_logger_rewrites_every_row_with_every_column(tmp_path) -> None:
    path = tmp_path / "history.csv"
    logger, trainer = CSVLogger(path), FakeTrainer()
    _epochs(logger, trainer, [{"train_loss": 0.9}, {"train_loss": 0.7, "val_loss": 0.8}])
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows == [{"epoch": "1", "train_loss": "0.9", "val_loss": ""},
                    {"epoch": "2", "train_loss": "0.7", "val_loss": "0.8"}]
    assert [p.name for p in tmp_path.iterdir()] == ["history.csv"]
    write_history(tmp_path / "empty.csv", [])  # nothing to write: no file
    assert not (tmp_path / "empty.csv").exists()


def test_progress_bar_prints_one_line_per_epoch(capsys) -> None:
    bar = ProgressBar(live=False, echo=True)
    bar.on_epoch_end(SimpleNamespace(epochs=3), {"epoch": 2, "train_loss": 0.123456, "lr": 0.1, "time": 1.34})
    assert capsys.readouterr().out == "epoch 2/3  train_loss 0.1235  (1.3s)\n"


def test_epoch_reporter_hands_each_epoch_over_and_stops_when_told() -> None:
    from cnnkit.engine.callbacks import EpochReporter

    seen: list[tuple[int, float]] = []
    reporter = EpochReporter(lambda epoch, value: seen.append((epoch, value)) or epoch == 2, "val_loss")
    trainer = SimpleNamespace(stop_training=False)
    reporter.on_epoch_end(trainer, {"epoch": 1, "val_loss": 0.5})
    assert not trainer.stop_training
    reporter.on_epoch_end(trainer, {"epoch": 2, "val_loss": 0.4})
    assert trainer.stop_training and reporter.stopped_epoch == 2 and seen == [(1, 0.5), (2, 0.4)]
    with pytest.raises(CnnkitError, match="'val_mae' is not logged; logged: val_loss"):
        EpochReporter(lambda e, v: False, "val_mae").on_epoch_end(trainer, {"epoch": 1, "val_loss": 0.4})
