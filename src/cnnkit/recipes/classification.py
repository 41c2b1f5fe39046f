"""The classification recipe: binary, multiclass, multilabel and regression runs on a folder, CSV or built-in
data set, with transfer strategies, the linear probe and every regulariser.

    cnnkit train --data digits --model lenet5          # the problem type inferred from the data
    cnnkit train --data ants_bees --model efficientnet_lite0.imagenet --strategy fine-tune
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.config import Config, option_keys
from cnnkit.data.builtin import open_source
from cnnkit.data.loader import run_loader
from cnnkit.data.sources import problem_source
from cnnkit.data.split import indices_from_record, make_split, split_record
from cnnkit.engine.inference import fold_batch_norm, for_inference
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.models.tweaks import set_dropout
from cnnkit.recipes.base import Build, Context, Recipe, TrainResult
from cnnkit.recipes.classifier import (
    card_for,
    check_model_knobs,
    make_attack,
    make_classifier_task,
    new_model,
    prediction,
    split_metrics,
)
from cnnkit.recipes.transfer import fit_probe, probe_head, settle_strategy, transfer_plan, wants_probe_head
from cnnkit.runs.card import ModelCard
from cnnkit.runs.inputs import image_batches


class ClassificationRecipe(Recipe):
    name = "classification"
    tasks = ("auto", "binary", "multiclass", "multilabel", "regression", "classify")
    options = option_keys() - {"data.images"}  # every option: the options were first written for classifiers
    report_sections = ("summary", "verdict", "curves", "alarm", "classification", "gradcam", "data", "kernels",
                       "timing", "model", "config")
    curve_metric = None  # accuracy for classes, mAP for labels, MAE for values: whichever the history has
    eval_batch_size = 256
    diagnoses = ("--data-curve", "--landscape", "--gradcam")
    embeds = True

    def check(self, cfg: Config) -> None:
        """The transfer options that only make sense together; --init and --insert-dropout."""
        check_model_knobs(cfg)
        t = cfg.train
        trained_heads = ("fine-tune", "feature-extractor", "head-only", "partial", "auto")
        if t.head_init == "probe" and t.strategy not in trained_heads:
            raise CnnkitError(f"--head-init probe starts a trained head from a linear probe; it goes with --strategy "
                              f"fine-tune, feature-extractor, head-only or partial, not {t.strategy}")
        if t.keep_stages is not None and (t.keep_stages < 1 or t.strategy != "partial"):
            raise CnnkitError(f"--keep-stages goes with --strategy partial and must be at least 1, got "
                              f"{t.keep_stages} with strategy {t.strategy}")
        if t.unfreeze_every < 0 or t.unfreeze_every and t.strategy != "fine-tune":
            raise CnnkitError(f"--unfreeze-every goes with --strategy fine-tune and must be 0 (off) or more, got "
                              f"{t.unfreeze_every} with strategy {t.strategy}")

    def open_source(self, cfg: Config) -> Any:
        cfg.task, source = problem_source(cfg.task, open_source(cfg.data.source, cfg.data.max_bad_fraction))
        return source

    def new_split(self, cfg: Config, source: Any) -> tuple[dict[str, np.ndarray], dict]:
        split = make_split(source, cfg.data.val, cfg.data.test, cfg.train.seed)
        return split, self.split_record(cfg, source, split)

    def split_record(self, cfg: Config, source: Any, split: dict[str, np.ndarray]) -> dict:
        return split_record(source, split, cfg.train.seed, {"val": cfg.data.val, "test": cfg.data.test})

    def read_split(self, source: Any, record: dict, name: str) -> np.ndarray:
        return indices_from_record(source, record, name)

    def loader(self, cfg: Config, source: Any, indices: np.ndarray, card: ModelCard, *, train: bool,
               dist: Any = None) -> Any:
        return run_loader(source, indices, card, cfg, train=train, dist=dist)

    def card(self, cfg: Config, source: Any, split: dict) -> ModelCard:
        return card_for(cfg, source, split, cfg.train.seed)

    def prepare(self, ctx: Context) -> Context:
        return settle_strategy(ctx)

    def fit_directly(self, ctx: Context) -> TrainResult | None:
        return fit_probe(ctx) if ctx.cfg.train.strategy == "linear-probe" else None

    def model(self, cfg: Config, card: ModelCard, *, fresh: bool) -> torch.nn.Module:
        return new_model(cfg, card)

    def build(self, ctx: Context, model: torch.nn.Module) -> Build:
        cfg, card = ctx.cfg, ctx.card
        plan = transfer_plan(cfg, card, model)
        model = plan.model if plan else model
        if cfg.model.dropout is not None:  # training only: the card need not carry it
            set_dropout(model, cfg.model.dropout)
        task = make_classifier_task(cfg, card, model, ctx.source.labels[ctx.split["train"]])
        groups = plan.param_groups if plan else list(model.parameters())
        return Build(task, groups, plan.callbacks if plan else [])

    def start_model(self, ctx: Context, model: torch.nn.Module) -> None:
        if wants_probe_head(ctx.cfg, ctx.card):
            probe_head(ctx.cfg, ctx.source, ctx.split, ctx.card, model)

    def metrics(self, model: torch.nn.Module, card: ModelCard, cfg: Config, loader: Any, *,
                attack: str | None = None, eps: float = 0.1, precision: str = "auto") -> dict:
        """The loss, then accuracy, top-5, F1 ... (split_metrics) of the model with its batch norms folded, in
        `precision` (the metrics from fp32 outputs); with `attack` ('fgsm' or 'pgd'), also the accuracy on
        adversarial images within `eps` (pixel units)."""
        from cnnkit.tasks.adversarial import robust_accuracy

        with warnings.catch_warnings():  # a mismatched loss was reported when the run trained
            warnings.simplefilter("ignore", UserWarning)
            task = card.make_task(fold_batch_norm(model), cfg.train.loss)
        trainer = Trainer(task, None, epochs=1, device=cfg.train.device, precision=precision)
        metrics = split_metrics(trainer, card, loader)
        if attack is not None:
            metrics["robust_accuracy"] = robust_accuracy(trainer.model, loader, make_attack(attack, eps, card))
            metrics.update(attack=attack, eps=eps)
        return metrics

    @torch.inference_mode()
    def predict(self, model: torch.nn.Module, card: ModelCard, paths: list[Path], *, top_k: int = 5,
                batch_size: int = 64, threshold: float = 0.5, precision: str = "auto") -> list[dict]:
        """Each image's top-k classes, labels at or above `threshold`, or values, from the model with its batch
        norms folded, in `precision` (probabilities from fp32 outputs); images decoded a batch at a time by
        worker processes, so a large folder fits in memory; unreadable ones skipped with one warning."""
        from cnnkit.errors import CnnkitError

        model, mode = for_inference(model, precision)
        with warnings.catch_warnings():  # a mismatched loss was reported when the run trained
            warnings.simplefilter("ignore", UserWarning)
            task = card.make_task(model)
        k = max(1, min(top_k, len(card.classes)))
        results, skipped = [], []
        for batch_paths, images in image_batches(paths, card, batch_size, skipped):
            with mode.autocast():  # predict_step reads fp32 outputs: (n, K) probabilities, or (n, D) values
                outputs = task.predict_step(mode.input(images.to(mode.device))).float().cpu()
            results += [prediction(card, p, out, k, threshold) for p, out in zip(batch_paths, outputs)]
        if skipped:
            warnings.warn(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:5])}", stacklevel=2)
        if not results:
            raise CnnkitError("no readable images to predict")
        return results

    def augment_preview(self, source: str, out: str | Path, **options: Any) -> Path:
        from cnnkit.data.preview import augment_preview

        return augment_preview(source, out, options.pop("preset", "standard"), **options)
