"""`cnnkit prune RUN --sparsity 0.5,0.8,0.9`: magnitude pruning of a run's model at each sparsity, optionally
fine-tuned with the run's own config, each saved as a run folder and measured on the val split (never test)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from cnnkit.config import Config, config_from_dict, save_config
from cnnkit.data.split import write_split
from cnnkit.engine.callbacks import ModelCheckpoint
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.prune import SCOPES, make_permanent, prune_model, sparsity
from cnnkit.recipes import recipe_for
from cnnkit.recipes.base import Context, Recipe
from cnnkit.recipes.runner import make_trainer, measure
from cnnkit.runs.folder import load_model, run_file, save_model


def check_sparsities(sparsities: list[float]) -> list[float]:
    amounts = list(dict.fromkeys(float(s) for s in sparsities))  # in order, each once
    if not amounts:
        raise CnnkitError("give at least one sparsity, e.g. --sparsity 0.5,0.8,0.9")
    for s in amounts:
        if not 0.0 <= s < 1.0:
            raise CnnkitError(f"sparsity must be in [0, 1) (the fraction of weights set to zero), got {s:g}")
    return amounts


def finetune(recipe: Recipe, model: torch.nn.Module, ctx: Context, epochs: int) -> float | None:
    """Train the pruned `model` for `epochs` epochs as RUN's config says (the masks keep the zeros), logging to
    the context's folder/history.csv; the last epoch's weights are kept (no selection on val). Returns the val
    accuracy before."""
    cfg = replace(ctx.cfg, train=replace(ctx.cfg.train, epochs=epochs, patience=None))
    ctx = replace(ctx, cfg=cfg)
    train_loader = recipe.loader(cfg, ctx.source, ctx.split["train"], ctx.card, train=True)
    val_loader = recipe.loader(cfg, ctx.source, ctx.split["val"], ctx.card, train=False)
    trainer = make_trainer(cfg, recipe.build(ctx, model), len(train_loader), ctx.run_dir)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
    before = trainer.evaluate(val_loader).get("accuracy")
    trainer.fit(train_loader, val_loader)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return before


def prune_run(run: str | Path, sparsities: list[float], scope: str = "global", finetune_epochs: int = 0,
              out: str | Path | None = None) -> list[dict]:
    """See cnnkit.api.prune."""
    amounts = check_sparsities(sparsities)
    if scope not in SCOPES:
        raise CnnkitError(f"unknown pruning scope {scope!r}{did_you_mean(scope, SCOPES)}")
    if finetune_epochs < 0:
        raise CnnkitError(f"--finetune-epochs must be 0 or more, got {finetune_epochs}")
    run = Path(run)
    _, card = load_model(run)
    recipe = recipe_for(card.problem)
    base = measure(recipe, run, "val")  # a missing run or an empty val split fails here
    if "accuracy" not in base:
        raise CnnkitError(f"prune reports val accuracy, which the {card.task} run {run} has not")
    cfg: Config = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()))
    record = json.loads(run_file(run, "split.json").read_text())
    source = recipe.open_source(cfg)
    split = {name: recipe.read_split(source, record, name) for name in ("train", "val")}
    out = Path(out) if out else run / "pruned"
    rows = [_prune_one(recipe, run, amount, scope, finetune_epochs,
                       Context(cfg, source, split, card, out / f"s{amount * 100:g}", record)) for amount in amounts]
    report = {"run": str(run), "scope": scope, "finetune_epochs": finetune_epochs,
              "unpruned": {"val_accuracy": base["accuracy"], "val_loss": base["loss"]}, "rows": rows}
    (out / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    return rows


def _prune_one(recipe: Recipe, run: Path, amount: float, scope: str, epochs: int, ctx: Context) -> dict:
    """A fresh copy of RUN's model pruned to `amount`, fine-tuned, saved as a run folder, measured on val."""
    model, card = load_model(run)
    folder: Path = ctx.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    prune_model(model, amount, scope=scope)
    before = finetune(recipe, model, ctx, epochs) if epochs else None
    make_permanent(model)  # plain `weight` keys: load_model reads it like any run's model
    save_model(folder / "model.pt", model, card, ctx.cfg.train.save_format)
    write_split(folder / "split.json", ctx.record)
    save_config(replace(ctx.cfg, out=str(folder)), folder / "config.yaml")
    val = measure(recipe, folder, "val")
    return {"sparsity_target": amount, "sparsity": sparsity(model)[0], "val_accuracy": val["accuracy"],
            "val_loss": val["loss"], "val_accuracy_before_ft": val["accuracy"] if before is None else before,
            "run": str(folder)}


__all__ = ["check_sparsities", "finetune", "prune_run"]
