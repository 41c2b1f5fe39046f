"""`cnnkit prune RUN --structured --sparsity 0.25,0.5`: whole filters removed (L1 norm or BN γ; in CIFAR ResNets
each stage's residual width too, unless --no-residual), a physically smaller model fine-tuned with the run's
config and saved as a run folder (the kept widths in its card), then parameters, FLOPs, the CPU latency measured
in this process against the unpruned model, and val accuracy."""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from torch import nn

from cnnkit.config import config_from_dict, save_config
from cnnkit.data.split import write_split
from cnnkit.diagnose.inspect import trace_model
from cnnkit.engine.inference import fold_batch_norm
from cnnkit.errors import CnnkitError, unknown_name
from cnnkit.experiments.prune import check_sparsities, finetune
from cnnkit.models.structured import CRITERIA, prunable_groups
from cnnkit.models.structured_groups import merge_pruned, prune_model, residual_streams
from cnnkit.recipes import recipe_for
from cnnkit.recipes.base import Context, Recipe
from cnnkit.recipes.runner import measure
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import load_model, run_file, save_model

CLASSIFICATION = ("binary", "multiclass", "multilabel")


@torch.inference_mode()
def latencies_ms(models: Sequence[nn.Module], input_shape: Sequence[int], warmup: int = 10,
                 repeats: int = 100) -> list[float]:
    """The median wall time of one forward pass of each model on the CPU, in ms, as the inference verbs run it
    (eval mode, BN folded into the convs): `warmup` passes first, then `repeats` rounds that time every model
    once in turn (so drift in the machine hits them alike)."""
    x = torch.randn(*input_shape)  # (N, C, H, W)
    models = [fold_batch_norm(m.eval()) for m in models]
    for model in models:
        for _ in range(warmup):
            model(x)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(repeats):
        for i, model in enumerate(models):
            start = time.perf_counter()
            model(x)
            times[i].append(time.perf_counter() - start)
    return [statistics.median(t) * 1e3 for t in times]


def _size(model: nn.Module, card: ModelCard) -> dict:
    return {"params": sum(p.numel() for p in model.parameters()),
            "flops": trace_model(model, card.input_size, label=card.architecture).total_flops}


def _check(run: Path, card: ModelCard, criterion: str, finetune_epochs: int) -> None:
    if card.problem not in CLASSIFICATION:
        raise CnnkitError(f"structured pruning takes classification runs; {run} is a {card.problem} run")
    if criterion not in CRITERIA:
        raise unknown_name("pruning criterion", criterion, CRITERIA)
    if finetune_epochs < 0:
        raise CnnkitError(f"--finetune-epochs must be 0 or more, got {finetune_epochs}")


def structured_prune_run(run: str | Path, sparsities: list[float], criterion: str = "l1", finetune_epochs: int = 0,
                         out: str | Path | None = None, latency_batch: int = 1,
                         residual: bool | None = None) -> list[dict]:
    """See cnnkit.api.prune (structured=True). The first row is the unpruned model."""
    amounts = check_sparsities(sparsities)
    run = Path(run)
    model, card = load_model(run)
    _check(run, card, criterion, finetune_epochs)
    prunable_groups(model, card.input_size)  # an architecture it cannot prune fails here, before any data is read
    if residual:
        residual_streams(model)
    recipe = recipe_for(card.problem)
    base = measure(recipe, run, "val")
    if "accuracy" not in base:
        raise CnnkitError(f"prune reports val accuracy, which the {card.task} run {run} has not")
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()))
    record = json.loads(run_file(run, "split.json").read_text())
    source = recipe.open_source(cfg)
    split = {name: recipe.read_split(source, record, name) for name in ("train", "val")}
    out = Path(out) if out else run / "pruned"
    rows = [{"sparsity_target": 0.0, **_size(model, card), "val_accuracy_before_ft": base["accuracy"],
             "val_accuracy": base["accuracy"], "val_loss": base["loss"], "run": str(run)}]
    for amount in amounts:
        ctx = Context(cfg, source, split, card, out / f"s{amount * 100:g}", record)
        rows.append(_prune_one(recipe, run, amount, (criterion, residual), finetune_epochs, ctx))
    _add_latency(rows, [int(latency_batch), *card.input_size])
    report = {"run": str(run), "structured": True, "criterion": criterion, "residual": residual,
              "finetune_epochs": finetune_epochs,
              "latency_batch": latency_batch, "threads": torch.get_num_threads(), "rows": rows}
    out.mkdir(parents=True, exist_ok=True)
    (out / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    return rows


def _prune_one(recipe: Recipe, run: Path, amount: float, how: tuple[str, bool | None], epochs: int,
               ctx: Context) -> dict:
    """A fresh copy of RUN's model with `amount` of each prunable conv's filters (and, `how` = (criterion,
    residual), of each residual stream's channels) removed, fine-tuned, saved as a run folder whose card carries
    the kept widths, measured on val."""
    model, card = load_model(run)
    widths = prune_model(model, amount, how[0], card.input_size, residual=how[1])
    card = replace(card, pruned=merge_pruned(card.pruned, widths))
    folder: Path = ctx.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    ctx = replace(ctx, card=card)
    before = finetune(recipe, model, ctx, epochs) if epochs else None
    save_model(folder / "model.pt", model, card, ctx.cfg.train.save_format)
    write_split(folder / "split.json", ctx.record)
    save_config(replace(ctx.cfg, out=str(folder)), folder / "config.yaml")
    val = measure(recipe, folder, "val")  # reloaded from the folder: the card rebuilds the smaller model
    return {"sparsity_target": amount, **_size(model, card), "val_accuracy": val["accuracy"], "val_loss": val["loss"],
            "val_accuracy_before_ft": val["accuracy"] if before is None else before, "run": str(folder)}


def _add_latency(rows: list[dict], input_shape: list[int]) -> None:
    """Each row's model reloaded from its folder and timed together with the others, in this process."""
    models = [load_model(r["run"])[0] for r in rows]
    for row, ms in zip(rows, latencies_ms(models, input_shape)):
        row["latency_ms"] = ms
        row["speedup"] = rows[0].get("latency_ms", ms) / ms


def format_structured(rows: list[dict]) -> str:
    """The table: one line per model, the unpruned first; the folder of the pruned runs last."""
    lines = ["sparsity  params     MFLOPs  latency ms  speed-up  acc before ft  val acc"]
    for r in rows:
        label = "unpruned" if r["run"] == rows[0]["run"] else f"{r['sparsity_target']:8.2f}"
        lines.append(f"{label:>8}  {r['params']:9,d}  {r['flops'] / 1e6:6.2f}  {r['latency_ms']:10.3f}  "
                     f"{r['speedup']:7.2f}×  {r['val_accuracy_before_ft']:13.4f}  {r['val_accuracy']:7.4f}")
    lines.append(str(Path(rows[-1]["run"]).parent))
    return "\n".join(lines)


__all__ = ["format_structured", "latencies_ms", "structured_prune_run"]
