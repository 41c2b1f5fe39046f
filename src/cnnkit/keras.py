"""A Keras-like façade over the core: Model(...).compile(...).fit(...), evaluate, predict, save.

    model = cnnkit.Model("lenet5", num_classes=10)
    model.summary()                                           # the layer table of `cnnkit inspect`
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.compile(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=True)   # optimiser options by keyword
    model.compile(optimizer=torch.optim.SGD, lr=0.01, momentum=0.9)      # or a class, a factory, an object
    history = model.fit(x, y, epochs=20, batch_size=64, validation_split=0.15,
                        callbacks=[cnnkit.callbacks.EarlyStopping(patience=3)])

The task picks the last layer's activation and the default loss (the notes' table): "multiclass" (y: class
indices), "binary" (y: 0/1, one sigmoid output), "multilabel" (y: (N, K) 0/1 rows) or "regression"
(y: (N,) or (N, D) numbers; `num_classes` is then D).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnkit.data.loader import make_loader, train_stats
from cnnkit.data.sources import ImageSource, from_arrays
from cnnkit.data.transforms import Augment
from cnnkit.engine import optimizers, schedules
from cnnkit.engine.callbacks import Callback, ProgressBar
from cnnkit.engine.precision import check_precision
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.models.factory import create_model, get_spec
from cnnkit.recipes.classifier import split_metrics
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import save_model
from cnnkit.tasks import problem_name
from cnnkit.tasks.regression import STANDARDIZED_LOSSES

SUPPORTED_METRICS = ("accuracy", "acc", "binary_accuracy", "top_5_accuracy", "f1_macro", "f1_micro", "map", "mae",
                     "rmse", "r2")  # fit logs the per-batch one; evaluate reports all of the task's


@dataclass
class History:
    """Like Keras' History: `history.history['val_loss']` is one value per epoch."""

    epoch: list[int] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def from_rows(cls, rows: list[dict]) -> History:
        h = cls([r["epoch"] - 1 for r in rows])
        for row in rows:
            for k, v in row.items():
                if k != "epoch":
                    h.history.setdefault(k.removeprefix("train_"), []).append(v)
        return h


def _as_source(x, y, classes: list[str] | None, check: bool = True, problem: str = "multiclass") -> ImageSource:
    if isinstance(x, ImageSource):
        return x
    if y is None:
        raise CnnkitError("give labels: fit(x, y) with x images and y integer class indices (or targets)")
    if problem in ("multilabel", "regression"):
        return from_arrays(x, y, classes, check=check, problem=problem)
    return from_arrays(x, y, classes, check=check)


class Model:
    """An architecture from the registry plus everything `fit` learns about the data (the model card)."""

    def __init__(self, architecture: str, task: str = "multiclass", *, num_classes: int = 10,
                 in_channels: int | None = None, image_size: int | None = None, classes: list[str] | None = None,
                 weights: str | Path | None = None, resize: str = "resize", **options):
        task = problem_name(task)
        spec = get_spec(architecture)
        if task == "binary" and not classes:
            num_classes = 2
        self.classes = list(classes) if classes else [str(i) for i in range(num_classes)]
        channels = in_channels or spec.input_size[0]
        size = image_size or spec.input_size[1]
        self.card = ModelCard(architecture, task, self.classes, [channels, size, size], [0.5] * channels,
                              [0.5] * channels, False, resize, dict(options))
        if task == "binary" and len(self.classes) != 2:
            raise CnnkitError(f"a binary model has 2 classes, got {len(self.classes)}; use task='multiclass'")
        self.network = create_model(architecture, num_classes=self.card.outputs, in_channels=channels,
                                    input_size=self.card.input_size, weights=weights, **options)
        self._compiled: dict | None = None

    def compile(self, optimizer: str | type[torch.optim.Optimizer] | Callable | torch.optim.Optimizer = "adam",
                loss: str | None = None, metrics: Sequence[str] = ("accuracy",), *, lr: float | None = None,
                weight_decay: float | None = None, schedule: str = "none", schedule_interval: str | None = None,
                schedule_options: dict | None = None, device: str = "auto", amp: bool = False,
                precision: str = "auto", on_nan: str = "stop", **options) -> None:
        """As Keras' compile. `optimizer`: a name of cnnkit.engine.optimizers, a torch.optim.Optimizer class, a
        factory params → optimiser, or an optimiser made over `model.network.parameters()`; `options` are the
        optimiser's (momentum=0.9, nesterov=True, betas=(0.9, 0.99), ...). `schedule` with its
        `schedule_options` counts per `schedule_interval` (epoch | batch; default: the schedule's own).
        `precision` (auto, fp32, bf16, fp16) is cnnkit.engine.precision's: auto trains in bf16 with
        channels_last where the hardware has bf16. `on_nan`: a NaN or infinite loss stops fit with a one-line
        error naming the epoch and batch ('stop', Keras' TerminateOnNaN), or the batch is skipped and the learning
        rate halved ('skip'; 5 in a row stop)."""
        unknown = [m for m in metrics if m not in SUPPORTED_METRICS]
        if unknown:
            raise CnnkitError(f"unknown metric {unknown[0]!r}; fit logs the task's per-batch metric and the loss, "
                              "evaluate adds all the task's metrics")
        if not isinstance(optimizer, torch.optim.Optimizer):  # fail now on a bad name or option
            optimizers.build(optimizer, [torch.zeros(1, requires_grad=True)], lr=lr, weight_decay=weight_decay,
                             **options)
        schedules.check_options(schedule, schedule_options)
        schedules.run_interval(schedule, schedule_interval, schedule_options)
        check_precision(precision)
        if on_nan not in ("stop", "skip"):
            raise unknown_name("on_nan", on_nan, ("stop", "skip"))
        self._compiled = dict(optimizer=optimizer, loss=loss, lr=lr, weight_decay=weight_decay, schedule=schedule,
                              schedule_interval=schedule_interval, schedule_options=dict(schedule_options or {}),
                              options=options, device=device, amp=amp, precision=precision, on_nan=on_nan)

    def summary(self, print_fn: Callable[[str], None] | None = print) -> str:
        """The layer table of `cnnkit inspect` (shapes, parameters, FLOPs, receptive fields) at the card's input
        size, printed with `print_fn` (None: not printed) and returned."""
        from cnnkit.diagnose.inspect import format_report, inspect_model

        was_training = self.network.training
        try:
            text = format_report(inspect_model(self.network.eval(), tuple(self.card.input_size)))
        finally:
            self.network.train(was_training)
        if print_fn is not None:
            print_fn(text)
        return text

    def _loader(self, source: ImageSource, idx: np.ndarray, batch_size: int, shuffle: bool = False,
                augment: Augment | None = None, seed: int = 0):
        c, s, _ = self.card.input_size
        return make_loader(source, idx, channels=c, size=s, resize=self.card.resize, mean=self.card.mean,
                           std=self.card.std, augment=augment, batch_size=batch_size, shuffle=shuffle, seed=seed)

    def fit(self, x, y=None, *, epochs: int = 1, batch_size: int = 32, validation_split: float = 0.0,
            validation_data: tuple | None = None, shuffle: bool = True, class_weight: dict | None = None,
            callbacks: Sequence[Callback] = (), initial_epoch: int = 0, verbose: int = 1,
            augment: Augment | None = None, seed: int = 0) -> History:
        """Train; like Keras, `validation_split` holds out the *last* fraction of x before shuffling."""
        if self._compiled is None:
            raise CnnkitError("call compile(optimizer=..., loss=...) before fit")
        if batch_size < 1 or epochs < 1 or not 0 <= validation_split < 1:
            raise CnnkitError("need epochs >= 1, batch_size >= 1 and 0 <= validation_split < 1")
        source = _as_source(x, y, self.classes, problem=self.card.problem)
        n_val = int(len(source) * validation_split)
        train_idx, val_idx = np.arange(len(source) - n_val), np.arange(len(source) - n_val, len(source))
        c, s, _ = self.card.input_size
        self.card.mean, self.card.std = train_stats(source, train_idx, c, s, self.card.resize, seed=seed)
        if self.card.problem == "regression":
            self._scale_targets(source.targets[train_idx])
        seed_everything(seed)
        trainer = self._trainer(epochs, batch_size, len(train_idx), class_weight, callbacks, verbose, seed)
        trainer.epoch = initial_epoch
        train_loader = self._loader(source, train_idx, batch_size, shuffle, augment, seed)
        val_loader = None
        if validation_data is not None:
            vs = _as_source(*validation_data, self.classes, check=False, problem=self.card.problem) \
                if isinstance(validation_data, tuple) else validation_data
            val_loader = self._loader(vs, np.arange(len(vs)), batch_size)
        elif n_val:
            val_loader = self._loader(source, val_idx, batch_size)
        return History.from_rows(trainer.fit(train_loader, val_loader))

    def _scale_targets(self, t: np.ndarray) -> None:
        """As `cnnkit train`: a sigmoid for targets in [0, 1], else the model learns standardised targets."""
        self.card.bounded = bool(t.min() >= 0 and t.max() <= 1)
        if not self.card.bounded and (self._compiled["loss"] or "mse") in STANDARDIZED_LOSSES:
            std = t.std(0)
            self.card.target_mean, self.card.target_std = t.mean(0).tolist(), np.where(std > 0, std, 1.0).tolist()

    def _trainer(self, epochs: int, batch_size: int, n_train: int, class_weight: dict | None,
                 callbacks: Sequence[Callback], verbose: int, seed: int) -> Trainer:
        cfg = self._compiled
        weight = None
        if class_weight:
            weight = torch.ones(len(self.classes))
            for k, w in class_weight.items():
                weight[int(k)] = float(w)
        task = self.card.make_task(self.network, cfg["loss"], class_weight=weight)
        optimizer = optimizers.build(cfg["optimizer"], self.network.parameters(), lr=cfg["lr"],
                                     weight_decay=cfg["weight_decay"], **cfg["options"])
        steps = -(-n_train // batch_size)  # per epoch
        scheduler = schedules.for_run(cfg["schedule"], optimizer, steps_per_epoch=steps, epochs=epochs,
                                      interval=cfg["schedule_interval"], options=cfg["schedule_options"])
        cbs = list(callbacks) + ([ProgressBar(echo=True)] if verbose else [])
        return Trainer(task, optimizer, epochs=epochs, scheduler=scheduler, callbacks=cbs, device=cfg["device"],
                       amp=cfg["amp"], seed=seed, precision=cfg["precision"], on_nan=cfg["on_nan"])

    def evaluate(self, x, y=None, batch_size: int = 256) -> dict[str, float]:
        """{'loss': ..., then the task's metrics} on the given data (Keras' return_dict=True): accuracy and F1
        for classes, map for labels, mae/rmse/r2 for values (see cnnkit.metrics.core)."""
        source = _as_source(x, y, self.classes, check=False, problem=self.card.problem)
        loss = self._compiled["loss"] if self._compiled else None
        trainer = Trainer(self.card.make_task(self.network, loss), None, epochs=1, **self._inference())
        metrics = split_metrics(trainer, self.card, self._loader(source, np.arange(len(source)), batch_size))
        return {k: v for k, v in metrics.items() if not isinstance(v, dict)}  # scalars, as Keras returns

    def predict(self, x, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (N, K) (binary: (N, 2)), label probabilities (N, K), or values (N, D)."""
        source = x if isinstance(x, ImageSource) else from_arrays(x, np.zeros(len(x), dtype=np.int64), self.classes,
                                                                   check=False)
        trainer = Trainer(self.card.make_task(self.network), None, epochs=1, **self._inference())
        return trainer.predict(self._loader(source, np.arange(len(source)), batch_size)).numpy()

    def _inference(self) -> dict:
        """The device and precision that evaluate and predict run at: compile's, or auto."""
        cfg = self._compiled or {}
        return {"device": cfg.get("device", "auto"), "precision": cfg.get("precision", "auto")}

    def save(self, path: str | Path) -> Path:
        """model.pt with its card (FILE.pt, or DIR/model.pt), or FILE.safetensors (the card in its metadata):
        `cnnkit predict` works on the folder that holds model.pt or model.safetensors."""
        path = Path(path)
        if path.suffix not in (".pt", ".safetensors"):
            path = path / "model.pt"
        return save_model(path, self.network, self.card)
