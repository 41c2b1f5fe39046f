"""What the detection, instance and segmentation runs share: a split by image index, starting or resuming a
run, its Trainer, fitting and saving it, and reading one of its splits back.

Their split.json is {"task", "seed", "fractions", "count", "splits": {name: [image indices]}}: the sources
(COCO, VOC, YOLO, Penn-Fudan, mask folders, built-ins) have no class label per image to stratify on.

    split, card, run_dir = start(cfg, source, lambda: index_split(cfg, source), make_card, run_dir, state)
    trainer = make_trainer(cfg, task, len(train_loader), run_dir, monitor)
    fit_and_save(trainer, cfg, card, run_dir, state, index_record(cfg, source, split), train_loader, val_loader)
    model, card, cfg, source, indices = open_split(run, "val", open_source)
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np

from cnnkit.engine import optimizers

from cnnkit.engine import schedules
from cnnkit.config import Config, config_from_dict, save_config
from cnnkit.data.split import write_split
from cnnkit.engine.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ProgressBar, write_history
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.errors import CnnkitError
from cnnkit.runs.folder import ModelCard, new_run_dir, open_run, run_file, save_model
from cnnkit.tasks.base import Task

log = logging.getLogger("cnnkit")


class _SplitView:
    """What make_split reads of a source: its length, labels to stratify on (none here), given splits."""

    def __init__(self, n: int, presplit: dict | None = None):
        self.labels, self.presplit = np.zeros(n, dtype=np.int64), dict(presplit or {})

    def __len__(self) -> int:
        return len(self.labels)


def index_split(cfg: Config, source, presplit: dict | None = None) -> dict[str, np.ndarray]:
    """A seeded split by image (the test share locked); `presplit` keeps given train/val/test indices."""
    from cnnkit.data.split import make_split

    return make_split(_SplitView(len(source), presplit), cfg.data.val, cfg.data.test, cfg.train.seed)


def index_record(cfg: Config, source, split: dict) -> dict:
    return {"task": cfg.task, "seed": cfg.train.seed, "fractions": {"val": cfg.data.val, "test": cfg.data.test},
            "count": len(source), "splits": {k: [int(i) for i in v] for k, v in split.items()}}


def start(cfg: Config, source, make_split: Callable[[], dict], make_card: Callable[[dict], ModelCard],
          run_dir: Path | None, state: dict | None) -> tuple[dict, ModelCard, Path]:
    """(split, card, run folder): new ones from the config, or, with `state` (RUN's last.pt), RUN's own."""
    if state is None:
        split = make_split()
        card = make_card(split)
        return split, card, Path(cfg.out) if cfg.out else new_run_dir(f"{cfg.model.name}-{source.name}")
    record = json.loads(run_file(run_dir, "split.json").read_text())
    split = {k: np.asarray(v, dtype=np.int64) for k, v in record["splits"].items()}
    return split, ModelCard(**state["meta"]["card"]), run_dir


def make_trainer(cfg: Config, task: Task, steps: int, run_dir: Path, monitor: str) -> Trainer:
    """The Trainer of `task`: the configured optimiser over its trainable parameters, the schedule stepped per
    batch (`steps` per epoch), early stopping on `monitor` when --patience is set, checkpoints selected on the
    task's own metric (task.monitor), history.csv, a progress bar."""
    seed_everything(cfg.train.seed)
    t = cfg.train
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = optimizers.get(t.optimizer, params, lr=t.lr, weight_decay=t.weight_decay, **t.optimizer_options)
    scheduler = schedules.get(t.schedule, optimizer, steps_per_epoch=steps, epochs=t.epochs, interval="batch",
                              warmup=round(t.warmup_epochs * steps), **t.schedule_options)
    callbacks = [EarlyStopping(monitor, t.patience, t.min_delta, restore_best=t.restore_best)] if t.patience else []
    callbacks += [ModelCheckpoint(run_dir / "checkpoints", monitor=task.monitor), CSVLogger(run_dir / "history.csv"),
                  ProgressBar()]
    return Trainer(task, optimizer, epochs=t.epochs, scheduler=scheduler, callbacks=callbacks, device=t.device,
                   amp=t.amp, grad_clip=t.grad_clip, seed=t.seed)


def fit_and_save(trainer: Trainer, cfg: Config, card: ModelCard, run_dir: Path, state: dict | None, record: dict,
                 train_loader, val_loader) -> None:
    """Write split.json and config.yaml (a new run), fit (resuming `state`), keep the best checkpoint's weights
    unless interrupted, then save model.pt, history.csv and the learning curves."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if state is None:
        write_split(run_dir / "split.json", record)
        save_config(cfg, run_dir / "config.yaml")
    trainer.meta = {"card": asdict(card)}
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming %s after epoch %d of %d", run_dir, trainer.epoch, trainer.epochs)
    trainer.fit(train_loader, val_loader)
    best = run_dir / "checkpoints" / "best.pt"
    if best.is_file() and not trainer.interrupted:
        trainer.model.load_state_dict(load_checkpoint(best)["model"])
    save_model(run_dir / "model.pt", trainer.model, card)
    write_history(run_dir / "history.csv", trainer.history)
    if trainer.history:
        from cnnkit.diagnose.curves import plot_learning_curves

        plot_learning_curves(trainer.history, run_dir / "plots" / "learning_curves.png")
