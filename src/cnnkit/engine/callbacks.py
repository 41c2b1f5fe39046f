"""Callbacks: small objects with hooks the Trainer calls. Early stopping, checkpoints, history and the
progress bar are all callbacks."""
from __future__ import annotations

import csv
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.engine.checkpoint import atomic_save
from cnnkit.engine.hooks import Callback
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.files import atomic_open

if TYPE_CHECKING:
    from cnnkit.engine.trainer import Trainer

log = logging.getLogger("cnnkit")


def _better(mode: str, value: float, best: float, min_delta: float) -> bool:
    return value < best - min_delta if mode == "min" else value > best + min_delta


def _mode_for(monitor: str) -> str:
    return "min" if "loss" in monitor or "error" in monitor else "max"


class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs; optionally restore the
    best weights. Runs on every rank (the metric is already reduced), so all ranks stop together."""

    all_ranks = True

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0, mode: str = "auto",
                 restore_best: bool = True):
        if patience < 1:
            raise CnnkitError(f"patience must be at least 1, got {patience}")
        self.monitor, self.patience, self.min_delta, self.restore_best = monitor, patience, min_delta, restore_best
        self.mode = _mode_for(monitor) if mode == "auto" else mode
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch, self.wait, self.best_weights = 0, 0, None
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if self.monitor not in logs:
            raise CnnkitError(f"early stopping monitors {self.monitor!r}, which is not logged; logged: "
                              f"{', '.join(logs)}")
        value = logs[self.monitor]
        if _better(self.mode, value, self.best, self.min_delta):
            self.best, self.best_epoch, self.wait = value, logs["epoch"], 0
            if self.restore_best:
                self.best_weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = logs["epoch"]
                trainer.stop_training = True

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_weights is not None and self.stopped_epoch is not None:
            trainer.model.load_state_dict(self.best_weights)

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.best_weights is None and self.restore_best and self.best_epoch and self.wait == 0:  # resumed
            self.best_weights = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}

    def state_dict(self) -> dict:
        """With restore_best, the best weights too once a later epoch has been worse (before that they are the
        checkpoint's own model, taken back at the resumed fit's start): a resume restores what one run would."""
        kept = self.best_weights if self.restore_best and self.wait else None
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait, "best_weights": kept}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.best_weights = state.get("best_weights")


ALARM_MODES = ("rise", "plateau", "both")  # what counts as overfitting (--alarm-on; see docs/diagnosis.md)
PLATEAU_BAND = 0.05  # a val mean up to 5 % above its lowest is still on the plateau; further up it is climbing


_WHAT = {"rise": "risen", "plateau": "made no new low (a plateau)", "both": "risen or made no new low"}


class OverfittingAlarm(Callback):
    """Warn at the epoch where, for `patience` consecutive epochs, the training loss kept falling while the val loss
    rose (`on="rise"`), or stayed flat: no new low beyond `min_delta`, within PLATEAU_BAND of the lowest
    (`on="plateau"`, the notes' "the validation error flattens"), or did either (`on="both"`); name the best epoch
    (lowest val loss) and, with `stop`, stop training there. `fired_epoch` and `best_epoch` record it. Runs on every
    rank so all ranks stop together.

    Both losses are compared as running means of the last `window` epochs (2 by default), so one lucky epoch in a
    rising val curve does not reset the count; a real new low does. The price is one epoch of delay on a clean
    curve. A val mean that climbs beyond the band counts toward `rise` only."""

    all_ranks = True

    def __init__(self, patience: int = 3, stop: bool = False, window: int = 2, on: str = "rise",
                 min_delta: float = 0.0):
        if patience < 1:
            raise CnnkitError(f"alarm patience must be at least 1, got {patience}")
        if window < 1:
            raise CnnkitError(f"alarm window must be at least 1, got {window}")
        if on not in ALARM_MODES:
            raise unknown_name("--alarm-on", on, ALARM_MODES)
        self.patience, self.stop, self.window, self.on, self.min_delta = patience, stop, window, on, min_delta
        self.best, self.best_epoch, self.rises = math.inf, 0, 0  # rises: the epochs counted in a row
        self.best_mean = math.inf  # the lowest running mean of the val loss so far (the plateau's reference)
        self.recent: list[tuple[float, float]] = []  # (val_loss, train_loss) of the last `window` + 1 epochs
        self.fired_epoch: int | None = None
        self.fired_best_epoch: int | None = None  # the best epoch as the warning named it

    def _mean(self, pairs: list[tuple[float, float]]) -> tuple[float, float]:
        return sum(v for v, _ in pairs) / len(pairs), sum(t for _, t in pairs) / len(pairs)

    def counts(self, val_then: float, val_now: float, train_then: float, train_now: float) -> bool:
        """Whether an epoch whose running means moved from (val_then, train_then) to (val_now, train_now) counts
        toward the alarm: the training loss fell and the val loss rose (rise), or stayed on its plateau: no new low
        beyond min_delta and within PLATEAU_BAND of the lowest mean (plateau)."""
        self.best_mean = min(self.best_mean, val_then)
        rising = val_now > val_then
        flat = self.best_mean - self.min_delta <= val_now <= self.best_mean + PLATEAU_BAND * abs(self.best_mean)
        self.best_mean = min(self.best_mean, val_now)
        return train_now < train_then and {"rise": rising, "plateau": flat, "both": rising or flat}[self.on]

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        val, train = logs.get("val_loss"), logs.get("train_loss")
        if val is None or train is None:
            return
        self.recent = (self.recent + [(float(val), float(train))])[-(self.window + 1):]
        if len(self.recent) == self.window + 1:
            (val_then, train_then), (val_now, train_now) = self._mean(self.recent[:-1]), self._mean(self.recent[1:])
            self.rises = self.rises + 1 if self.counts(val_then, val_now, train_then, train_now) else 0
        if val < self.best:
            self.best, self.best_epoch = val, logs["epoch"]
        if self.rises >= self.patience and self.fired_epoch is None:
            self.fired_epoch, self.fired_best_epoch = logs["epoch"], self.best_epoch
            if trainer.dist.is_main:
                warnings.warn(f"overfitting at epoch {self.fired_epoch}: the val loss has {_WHAT[self.on]} for "
                              f"{self.rises} epochs while the training loss fell (means of {self.window} epochs); "
                              f"the best epoch was {self.best_epoch} (val loss {self.best:.4g})"
                              + ("; stopping" if self.stop else "; --alarm-stop stops here"), stacklevel=2)
            trainer.stop_training = trainer.stop_training or self.stop

    def as_dict(self) -> dict:
        """fired_epoch (None: never), best_epoch as the warning named it, and the best epoch of the whole run."""
        return {"patience": self.patience, "stop": self.stop, "on": self.on, "fired_epoch": self.fired_epoch,
                "best_epoch": self.fired_best_epoch, "best_epoch_overall": self.best_epoch or None}

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "rises": self.rises,
                "recent": [list(pair) for pair in self.recent], "fired_epoch": self.fired_epoch,
                "fired_best_epoch": self.fired_best_epoch, "best_mean": self.best_mean}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch, self.rises = state["best"], state["best_epoch"], state["rises"]
        self.recent = [tuple(pair) for pair in state.get("recent", [])]
        self.fired_epoch, self.fired_best_epoch = state["fired_epoch"], state.get("fired_best_epoch")
        self.best_mean = state.get("best_mean", math.inf)


class EpochReporter(Callback):
    """Hand `monitor` to `report(epoch, value)` after every epoch; when it answers True, stop training there
    (`stopped_epoch`). A sweep reports each trial's learning curve so that its pruner can stop a hopeless one."""

    def __init__(self, report: Callable[[int, float], bool], monitor: str = "val_loss"):
        self.report, self.monitor = report, monitor
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if self.monitor not in logs:
            raise CnnkitError(f"{self.monitor!r} is not logged; logged: {', '.join(k for k in logs if k != 'epoch')}")
        if self.report(int(logs["epoch"]), float(logs[self.monitor])):
            self.stopped_epoch = int(logs["epoch"])
            trainer.stop_training = True


class ModelCheckpoint(Callback):
    """checkpoints/last.pt after every epoch and best.pt when `monitor` improves; atomic writes.
    On Ctrl-C an epoch that ended but was not yet saved goes to last.pt; a half-trained epoch never does (its
    weights with an earlier epoch's number would make the resume train part of that epoch twice, and a one-cycle
    schedule overrun): last.pt stays the last whole epoch, so `--resume` is exact, and the runner writes the
    interrupted weights to model.pt."""

    def __init__(self, folder: str | Path, monitor: str = "val_loss", mode: str = "auto"):
        self.folder, self.monitor = Path(folder), monitor
        self.mode = _mode_for(monitor) if mode == "auto" else mode
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch = 0
        self.saved_epoch = 0  # the epoch that last.pt holds

    def on_fit_start(self, trainer: Trainer) -> None:
        self.saved_epoch = trainer.epoch

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        value = logs.get(self.monitor)
        improved = value is not None and _better(self.mode, value, self.best, 0.0)
        if improved:
            self.best, self.best_epoch = value, logs["epoch"]
        state = self._state(trainer)  # after the update above, so a resume knows the best so far
        if improved:
            atomic_save(state, self.folder / "best.pt")
        atomic_save(state, self.folder / "last.pt")
        self.saved_epoch = trainer.epoch

    def on_fit_end(self, trainer: Trainer) -> None:
        if trainer.interrupted and trainer.epoch > self.saved_epoch:  # ended, interrupted before it was saved
            atomic_save(self._state(trainer), self.folder / "last.pt")

    @staticmethod
    def _state(trainer: Trainer) -> dict:
        return {**trainer.state_dict(), "callbacks": trainer.callback_states()}

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.best, self.best_epoch = state["best"], state["best_epoch"]


class CSVLogger(Callback):
    """history.csv: one row per epoch, rewritten whole each time so it always matches the checkpoint."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        write_history(self.path, trainer.history)


def write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    keys = list(dict.fromkeys(k for row in history for k in row))
    with atomic_open(path, "w") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def _fmt(logs: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in logs.items() if k not in ("epoch", "time", "lr"))


class ProgressBar(Callback):
    """A live bar (loss, metrics, ETA) on a terminal, then one log line per epoch (logger 'cnnkit', INFO),
    which is all that shows when output is piped, and nothing under `cnnkit -q`."""

    def __init__(self, live: bool | None = None, refresh: float = 0.25, echo: bool = False):
        self.live = sys.stdout.isatty() if live is None else live
        self.echo = echo  # print the epoch lines instead of logging them (Keras' verbose=1 in a notebook)
        self.refresh, self._progress, self._task, self._last = refresh, None, None, 0.0

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.live:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                      TextColumn("{task.completed}/{task.total}"),
                                      TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"), transient=True)
            self._progress.start()

    def on_epoch_start(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(f"epoch {trainer.epoch + 1}/{trainer.epochs}",
                                                 total=trainer.steps_per_epoch, metrics="")

    def on_train_batch_end(self, trainer: Trainer) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._last >= self.refresh:  # reading the running loss syncs a GPU: not on every batch
            self._last = now
            self._progress.update(self._task, completed=trainer.batch_index + 1, metrics=_fmt(trainer.running_logs()))

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        if self._progress is not None:
            self._progress.remove_task(self._task)
        line = f"epoch {logs['epoch']}/{trainer.epochs}  {_fmt(logs)}  ({logs['time']:.1f}s)"
        if self.echo:
            print(line, flush=True)
        else:
            log.info(line)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
