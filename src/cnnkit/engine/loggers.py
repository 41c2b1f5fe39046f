"""Optional experiment loggers as callbacks: TensorBoard event files and MLflow. history.csv (CSVLogger) is
always written; these need their package (`pip install cnnkit[loggers]`) and say so in one line otherwise."""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from cnnkit.engine.callbacks import Callback
from cnnkit.errors import CnnkitError, unknown_name

if TYPE_CHECKING:
    from cnnkit.engine.trainer import Trainer

LOGGERS = ("tensorboard", "mlflow")


def _require(module: str, package: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise CnnkitError(f"the {package} logger needs the {package} package: pip install {package}")


def _tag(key: str) -> str:
    """train_loss → loss/train, val_accuracy → accuracy/val (train and val on one chart); lr, time as they are."""
    for split in ("train", "val"):
        if key.startswith(split + "_"):
            return f"{key[len(split) + 1:]}/{split}"
    return key


class TensorBoardLogger(Callback):
    """Every epoch's logs as TensorBoard scalars (step = epoch) in `log_dir`: `tensorboard --logdir LOG_DIR`."""

    def __init__(self, log_dir: str | Path):
        _require("tensorboard", "tensorboard")
        self.log_dir, self.writer = Path(log_dir), None

    def on_fit_start(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir))

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        for key, value in logs.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(_tag(key), value, logs["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowLogger(Callback):
    """Every epoch's logs as MLflow metrics (step = epoch) in one MLflow run; `params` logged at the start."""

    def __init__(self, run_name: str | None = None, params: dict | None = None):
        _require("mlflow", "mlflow")
        self.run_name, self.params = run_name, params or {}

    def on_fit_start(self, trainer: Trainer) -> None:
        import mlflow

        mlflow.start_run(run_name=self.run_name)
        if self.params:
            mlflow.log_params(self.params)

    def on_epoch_end(self, trainer: Trainer, logs: dict) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in logs.items() if k != "epoch"}, step=logs["epoch"])

    def on_fit_end(self, trainer: Trainer) -> None:
        import mlflow

        mlflow.end_run()


def make_loggers(names: list[str], run_dir: Path, params: dict | None = None) -> list[Callback]:
    """The loggers named by `--log` (tensorboard → RUN/tensorboard/, mlflow → an MLflow run named after RUN)."""
    out: list[Callback] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            out.append(TensorBoardLogger(run_dir / "tensorboard"))
        elif name == "mlflow":
            out.append(MLflowLogger(run_dir.name, params))
        else:
            raise unknown_name("logger", name, LOGGERS)
    return out
