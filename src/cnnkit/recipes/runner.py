"""The one runner: everything around a recipe's answers, done once for every task.

    result = train(recipe, cfg)                  # or train(recipe, None, resume=RUN)
    metrics = measure(recipe, RUN, "val")        # whole-split metrics of a saved run

train: start or resume → split (rank 0 names the folder; every rank splits alike, seeded) → card → model →
loaders (each rank its shard) → Trainer (optimiser, schedule, callbacks) → fit → rank 0 has written best.pt
(barrier) → the best weights → val metrics → the verdict (train split in eval mode against val) → rank 0
saves model.pt, history.csv, diagnosis.json, the curves and report.html. Only rank 0 writes the run folder.
"""
from __future__ import annotations

import inspect
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import yaml

from cnnkit.config import Config, TrainConfig, config_from_dict, save_config
from cnnkit.data.split import write_split
from cnnkit.diagnose.verdict import Verdict, make_verdict, write_diagnosis
from cnnkit.engine import optimizers, schedules
from cnnkit.engine.callbacks import (
    CSVLogger,
    EarlyStopping,
    ModelCheckpoint,
    OverfittingAlarm,
    ProgressBar,
    write_history,
)
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.distributed import barrier, broadcast_object, init_distributed
from cnnkit.engine.hooks import Callback
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.errors import CnnkitError
from cnnkit.files import DiskFull
from cnnkit.models.spec import run_label
from cnnkit.recipes.base import Build, Context, Recipe, TrainResult
from cnnkit.runs import lock
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import new_run_dir, open_run, run_file, save_model

log = logging.getLogger("cnnkit")


def resume_state(run: str | Path) -> tuple[Config, dict | None, dict]:
    """(config, checkpoints/last.pt, split.json) of a run to resume; the state is None for a run stopped before
    its first epoch ended (it starts again from its own config and split)."""
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()) or {})
    record = json.loads(run_file(run, "split.json").read_text())
    last = Path(run) / "checkpoints" / "last.pt"
    return cfg, load_checkpoint(last) if last.is_file() else None, record


def start(recipe: Recipe, cfg: Config, resume: str | Path | None = None,
          resumed: tuple[dict, dict] | None = None) -> Context:
    """The run's context: a new split, card and folder from `cfg`, or RUN's own when resuming."""
    info = init_distributed()
    source = recipe.open_source(cfg)
    if resume is None:
        split, record = recipe.new_split(cfg, source)  # seeded: equal on every rank
        name = f"{run_label(cfg.model.name)}-{getattr(source, 'name', 'data')}"
        run_dir = broadcast_object(Path(cfg.out) if cfg.out else new_run_dir(name), info)
        card = recipe.card(cfg, source, split)
        return recipe.prepare(Context(cfg, source, split, card, run_dir, record))
    state, record = resumed
    split = {name: recipe.read_split(source, record, name) for name in ("train", "val")}
    card = recipe.card(cfg, source, split) if state is None else ModelCard(**state["meta"]["card"])
    return recipe.prepare(Context(cfg, source, split, card, Path(resume), record, state))


def make_trainer(cfg: Config, built: Build, steps: int, run_dir: Path) -> Trainer:
    """The Trainer of a recipe's task: the configured optimiser over its parameter groups, the schedule
    (per epoch or per optimiser step: --schedule-interval, else the schedule's default; with --accumulate N an
    optimiser step is N batches), early stopping when --patience is set, the overfitting alarm, checkpoints
    selected on the task's own metric, history.csv, a progress bar, the recipe's callbacks and any --log
    loggers. (The Trainer seeds each epoch itself.)"""
    t = cfg.train
    params = built.param_groups
    if params is None:
        params = [p for p in built.task.model.parameters() if p.requires_grad]
    optimizer = optimizers.get(t.optimizer, params, lr=t.lr, weight_decay=t.weight_decay, **t.optimizer_options)
    scheduler = schedules.for_run(t.schedule, optimizer, steps_per_epoch=-(-steps // t.accumulate), epochs=t.epochs,
                                  interval=t.schedule_interval, warmup_epochs=t.warmup_epochs,
                                  options=t.schedule_options)
    monitor = built.monitor or t.monitor
    callbacks = [EarlyStopping(monitor, t.patience, t.min_delta, restore_best=t.restore_best)] if t.patience else []
    callbacks += [OverfittingAlarm(cfg.diagnose.alarm_patience, cfg.diagnose.alarm_stop,  # before the checkpoint
                                   on=cfg.diagnose.alarm_on, min_delta=t.min_delta),
                  ModelCheckpoint(run_dir / "checkpoints", monitor=built.task.monitor),
                  CSVLogger(run_dir / "history.csv"), ProgressBar()] + list(built.callbacks)
    if t.log:
        from cnnkit.engine.loggers import make_loggers

        callbacks += make_loggers(t.log, run_dir, {"model": cfg.model.name, "data": cfg.data.source})
    return Trainer(built.task, optimizer, epochs=t.epochs, scheduler=scheduler, callbacks=callbacks,
                   device=t.device, amp=t.amp, grad_clip=t.grad_clip, seed=t.seed, precision=t.precision,
                   accumulate=t.accumulate, on_nan=t.on_nan)


def write_start(ctx: Context) -> None:
    """The run folder, locked for this process (a second trainer into it fails in one line), with a new run's
    split.json and resolved config.yaml (rank 0 only). `train` gives the lock back when it returns."""
    lock.acquire(ctx.run_dir)
    for folder in (ctx.run_dir, ctx.run_dir / "checkpoints"):  # a killed writer's half-made files (cnnkit.files)
        for stale in folder.glob(".*.tmp") if folder.is_dir() else ():
            stale.unlink(missing_ok=True)
    if ctx.state is None:
        write_split(ctx.run_dir / "split.json", ctx.record)
        save_config(ctx.cfg, ctx.run_dir / "config.yaml")


def train(recipe: Recipe, cfg: Config | None = None, *, resume: str | Path | None = None,
          callbacks: Sequence[Callback] = (), **train_overrides) -> TrainResult:
    """Train as `cfg` says with `recipe`; or, with `resume=RUN`, continue RUN from checkpoints/last.pt.
    `callbacks` join the Trainer's own (a sweep's pruning reporter). The test split is written to split.json and
    never read here."""
    resumed = None
    if resume is not None:
        cfg, state, record = resume_state(resume)
        resumed = (state, record)
    cfg = cfg or Config()
    cfg.train = replace(cfg.train, **train_overrides)
    if resume is None:
        cfg.train = model_train_defaults(cfg.model.name, cfg.train)
    cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
    recipe.check(cfg)
    schedules.check_options(cfg.train.schedule, cfg.train.schedule_options)  # before any data is read
    schedules.run_interval(cfg.train.schedule, cfg.train.schedule_interval, cfg.train.schedule_options)
    ctx = start(recipe, cfg, resume, resumed)
    ctx.callbacks = list(callbacks)
    try:
        direct = recipe.fit_directly(ctx) if ctx.state is None else None  # a new run, or one killed before epoch 1
        return direct if direct is not None else fit(recipe, ctx)
    except DiskFull as err:
        raise DiskFull(err.path, err.reason, f"free some space, then `cnnkit train --resume {ctx.run_dir}` goes on "
                                             "from the last checkpoint") from None
    finally:
        lock.release(ctx.run_dir)


def model_train_defaults(model: str, train: TrainConfig) -> TrainConfig:
    """`train` with the model's own training recipe (its registry spec's `train`: optimizer, lr, schedule,
    warm-up, ...) wherever `train` keeps cnnkit's global default: SSD, for one, needs another optimiser and a
    warm-up than the classifiers. A value the user set (one that differs from the global default) stays."""
    from cnnkit.models.registry import registered

    spec = registered(model)
    if spec is None or not spec.train:
        return train
    base = TrainConfig()
    kept = {k: v for k, v in spec.train.items() if getattr(train, k) == getattr(base, k)}
    return replace(train, **kept)


def fit(recipe: Recipe, ctx: Context) -> TrainResult:
    """Fit the context's run and save it (see the module docstring)."""
    cfg, card, split = ctx.cfg, ctx.card, ctx.split
    seed_everything(cfg.train.seed)
    model = recipe.model(cfg, card, fresh=ctx.state is None)
    info = init_distributed()
    train_loader = recipe.loader(cfg, ctx.source, split["train"], card, train=True, dist=info)
    built = recipe.build(ctx, model)
    built.callbacks = [*built.callbacks, *ctx.callbacks]
    trainer = make_trainer(cfg, built, len(train_loader), ctx.run_dir)
    cfg.train.precision, cfg.train.amp = trainer.precision.name, False  # config.yaml keeps what ran
    if trainer.dist.is_main:  # only now: a bad model option has failed before the run folder exists
        write_start(ctx)
    val_loader = recipe.loader(cfg, ctx.source, split["val"], card, train=False) if len(split["val"]) else None
    trainer.meta = {"card": asdict(card)}
    if ctx.state is None:
        recipe.start_model(ctx, trainer.model)
    else:
        trainer.load_state_dict(ctx.state)
        log.info("resuming %s after epoch %d of %d", ctx.run_dir, trainer.epoch, trainer.epochs)
    trainer.fit(train_loader, val_loader)
    barrier(trainer.dist)  # rank 0 has written best.pt
    best = ctx.run_dir / "checkpoints" / "best.pt"
    if best.is_file() and not trainer.interrupted:  # model selection on val, never on test
        trainer.model.load_state_dict(load_checkpoint(best)["model"])
    val, verdict = {}, None
    if val_loader is not None and not trainer.interrupted:
        val = recipe.metrics(trainer.model, card, cfg, val_loader, precision=trainer.precision.name)
        verdict = train_verdict(recipe, ctx, trainer, val)
    if trainer.dist.is_main:
        save_run(recipe, ctx, trainer, verdict)
    barrier(trainer.dist)  # every rank returns once the run folder is complete
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)  # after any unfreezing
    return TrainResult(ctx.run_dir, trainer.history, val, trainer.interrupted, verdict, trainable)


def train_verdict(recipe: Recipe, ctx: Context, trainer: Trainer, val: dict) -> Verdict | None:
    """The bias/variance verdict of the selected model: its training split measured again in eval mode,
    without augmentation or dropout (not the epoch's running average), against `val`."""
    loader = recipe.loader(ctx.cfg, ctx.source, ctx.split["train"], ctx.card, train=False)
    train = recipe.metrics(trainer.model, ctx.card, ctx.cfg, loader, precision=trainer.precision.name)
    try:
        return make_verdict(recipe.verdict_problem(ctx.card), train, val, ctx.cfg, trainer.history,
                            val_count=len(ctx.split["val"]))
    except CnnkitError as err:  # e.g. no positive label in the val split: no mAP; the model is still saved
        warnings.warn(f"no verdict: {err}", stacklevel=2)
        return None


def save_run(recipe: Recipe, ctx: Context, trainer: Trainer, verdict: Verdict | None) -> None:
    """model.pt, history.csv, diagnosis.json (alarm and verdict), the learning curves and report.html."""
    run_dir = ctx.run_dir
    save_model(run_dir / "model.pt", trainer.model, ctx.card, ctx.cfg.train.save_format)
    write_history(run_dir / "history.csv", trainer.history)
    alarm = next((c.as_dict() for c in trainer.callbacks if isinstance(c, OverfittingAlarm)), None)
    write_diagnosis(run_dir, alarm=alarm, verdict=verdict.as_dict() if verdict else None)
    if trainer.history:
        from cnnkit.diagnose.curves import plot_learning_curves  # matplotlib only once there is a plot

        plot_learning_curves(trainer.history, run_dir / "plots" / "learning_curves.png", metric=recipe.curve_metric)
    if trainer.history and not trainer.interrupted and ctx.report:
        write_report_quietly(recipe, run_dir)


def write_report(recipe: Recipe, run_dir: str | Path) -> Path:
    """RUN/report.html with the recipe's sections (cnnkit.diagnose.report)."""
    from cnnkit.diagnose.report import write_report as write

    return write(run_dir, sections=recipe.report_sections, curve_metric=recipe.curve_metric)


def write_report_quietly(recipe: Recipe, run_dir: Path) -> None:
    """RUN/report.html at the end of training; a failure to build it warns and keeps the run."""
    try:
        log.info("report: %s", write_report(recipe, run_dir))
    except Exception as err:  # noqa: BLE001  (the run is saved; `cnnkit report RUN` can retry)
        warnings.warn(f"report.html not written ({type(err).__name__}: {err}); retry with `cnnkit report "
                      f"{run_dir}`", stacklevel=2)


def open_split(recipe: Recipe, run: str | Path, split: str, batch_size: int | None = None):
    """(model, card, config, source, indices, loader) of RUN's `split`; a missing split, an empty one or data
    that changed since training is a one-line error."""
    model, card, cfg, record = open_run(run)
    cfg = config_from_dict(cfg)
    if split not in record["splits"]:
        raise CnnkitError(f"unknown split {split!r}; choose train, val or test")
    source = recipe.open_source(cfg)
    indices = recipe.read_split(source, record, split)
    if len(indices) == 0:
        raise CnnkitError(f"the {split} split of {run} is empty")
    if batch_size is not None:
        cfg.train.batch_size = batch_size
    loader = recipe.loader(cfg, source, indices, card, train=False)
    return model, card, cfg, source, indices, loader


def measure(recipe: Recipe, run: str | Path, split: str, **options) -> dict:
    """{"split", "count", loss and the recipe's whole-split metrics} of RUN's saved model on `split`; an option
    that the recipe's metrics do not take (e.g. --attack for a detector) is a one-line error."""
    check_options(recipe.metrics, options, recipe)
    model, card, cfg, _, indices, loader = open_split(recipe, run, split, recipe.eval_batch_size)
    options = {**recipe.measure_options(Path(run), split), **options}
    return {"split": split, "count": int(len(indices)), **recipe.metrics(model, card, cfg, loader, **options)}


def check_options(hook, options: dict, recipe: Recipe) -> None:
    """Refuse, in one line, the options a recipe's `hook` does not take."""
    accepted = inspect.signature(hook).parameters
    for name in options:
        if name not in accepted:
            flag = "--" + name.replace("_", "-")
            raise CnnkitError(f"{flag} is not supported for a {recipe.name} run (--task {'|'.join(recipe.tasks)})")

