"""cnnkit.engine.hooks: every Callback hook exists and does nothing; a subclass's hooks are what a Trainer calls,
in order, with the logs of each epoch."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from cnnkit.engine.hooks import Callback
from cnnkit.engine.trainer import Trainer
from cnnkit.tasks import make_task
from cnnkit.tasks.base import Batch

HOOKS = ("on_fit_start", "on_epoch_start", "on_train_batch_end", "on_validation_end", "on_epoch_end", "on_fit_end")


def test_every_hook_exists_and_is_a_no_op() -> None:
    base, trainer, logs = Callback(), object(), {"epoch": 1, "val_loss": 0.5}
    for hook in HOOKS:
        args = (trainer, logs) if "logs" in inspect.signature(getattr(Callback, hook)).parameters else (trainer,)
        assert getattr(base, hook)(*args) is None
    assert logs == {"epoch": 1, "val_loss": 0.5}  # untouched
    assert base.state_dict() == {} and base.load_state_dict({"x": 1}) is None
    assert Callback.all_ranks is False  # writers run on rank 0 only


class Recorder(Callback):
    def __init__(self):
        self.calls: list[tuple] = []

    def on_fit_start(self, trainer):
        self.calls.append(("on_fit_start",))

    def on_epoch_start(self, trainer):
        self.calls.append(("on_epoch_start", trainer.epoch))

    def on_train_batch_end(self, trainer):
        self.calls.append(("on_train_batch_end", trainer.batch_index))

    def on_validation_end(self, trainer, logs):
        self.calls.append(("on_validation_end", sorted(logs)))

    def on_epoch_end(self, trainer, logs):
        self.calls.append(("on_epoch_end", logs["epoch"]))

    def on_fit_end(self, trainer):
        self.calls.append(("on_fit_end",))

    def state_dict(self):
        return {"calls": len(self.calls)}


class OnlyEpochEnd(Callback):
    """Overrides one hook; the others stay the base class's no-ops."""

    def __init__(self):
        self.logs: list[dict] = []

    def on_epoch_end(self, trainer, logs):
        self.logs.append(dict(logs))


def test_a_trainer_calls_the_overridden_hooks_in_order() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 2))
    train = [Batch(torch.randn(4, 1, 2, 2), torch.randint(0, 2, (4,))) for _ in range(3)]
    val = [Batch(torch.randn(4, 1, 2, 2), torch.randint(0, 2, (4,)))]
    recorder, only = Recorder(), OnlyEpochEnd()
    trainer = Trainer(make_task("multiclass", model), torch.optim.SGD(model.parameters(), lr=0.1), epochs=2,
                      callbacks=[recorder, only], device="cpu")
    history = trainer.fit(train, val)
    epoch = [("on_train_batch_end", 0), ("on_train_batch_end", 1), ("on_train_batch_end", 2),
             ("on_validation_end", ["epoch", "train_accuracy", "train_loss", "val_accuracy", "val_loss"])]
    assert recorder.calls == [("on_fit_start",),
                              ("on_epoch_start", 0), *epoch, ("on_epoch_end", 1),
                              ("on_epoch_start", 1), *epoch, ("on_epoch_end", 2),
                              ("on_fit_end",)]
    assert only.logs == history and [row["epoch"] for row in history] == [1, 2]
    assert trainer.callback_states() == {"Recorder": {"calls": 1 + 2 * 6 + 1}, "OnlyEpochEnd": {}}
