"""The pieces of a classification run (binary, multiclass, multilabel, regression) from its config: the problem
type, the model card (the data contract), the loaders, the model, the task with its regularisers, the
whole-split metrics and each image's prediction. cnnkit.recipes.classification wires them into the recipe;
the experiments (data curve, pruning, transfer comparison) reuse them.

    problem, source = problem_source(cfg.task, open_source(cfg.data.source))
    card = card_for(cfg, source, split, cfg.train.seed)
    task = make_classifier_task(cfg, card, model, source.labels[split["train"]])
"""
from __future__ import annotations

import csv
import json
import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.data.loader import train_stats
from cnnkit.data.sources import ImageSource
from cnnkit.engine.regularizers import Penalty, cutmix, mixup
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError, brief, did_you_mean
from cnnkit.metrics.core import task_metrics
from cnnkit.models.factory import create_model, get_spec
from cnnkit.models.initializers import apply_init, parse_init
from cnnkit.models.pretrained import lookup as lookup_pretrained
from cnnkit.models.spec import canonical_name, is_spec
from cnnkit.runs.card import ModelCard
from cnnkit.tasks.adversarial import fgsm, input_range, pgd, pixel_eps
from cnnkit.tasks.base import Task
from cnnkit.tasks.regression import STANDARDIZED_LOSSES

log = logging.getLogger("cnnkit")


def _target_scaling(cfg: Config, source: ImageSource, train: np.ndarray) -> dict:
    """Regression: a sigmoid output when every training target lies in [0, 1]; otherwise the training
    targets' mean and std, so the model learns standardised targets (for the shift-free losses)."""
    t = source.targets[train]  # (n, D)
    if t.min() >= 0 and t.max() <= 1:
        return {"bounded": True}
    if (cfg.train.loss or "mse") not in STANDARDIZED_LOSSES:
        return {}
    std = t.std(0)
    return {"target_mean": t.mean(0).tolist(), "target_std": np.where(std > 0, std, 1.0).tolist()}


def card_for(cfg: Config, source: ImageSource, split: dict, seed: int) -> ModelCard:
    """The run's card. Pretrained weights (e.g. efficientnet_lite0.imagenet) keep their own normalisation,
    input size and interpolation, which transfer needs; the card names their architecture, so the saved
    model loads without the weight file."""
    weights = lookup_pretrained(cfg.model.name)
    if weights is not None:
        return _pretrained_card(cfg, source, split, weights)
    spec = get_spec(cfg.model.name)
    channels = cfg.data.channels or _spec_channels(cfg, source) or spec.input_size[0]
    size = cfg.data.image_size or spec.input_size[1]
    mean, std = train_stats(source, split["train"], channels, size, cfg.data.resize, seed=seed)
    scaling = _target_scaling(cfg, source, split["train"]) if cfg.task == "regression" else {}
    return ModelCard(canonical_name(cfg.model.name), cfg.task, list(source.classes), [channels, size, size], mean,
                     _std(cfg, std), _whiten(cfg), cfg.data.resize, _card_options(cfg), **scaling)


def _card_options(cfg: Config, base: dict | None = None) -> dict:
    """The card's architecture options: `base` (pretrained weights' own), the model options, a batch-norm mode
    other than "on" (off changes the state-dict keys) and the inserted dropout (it adds modules)."""
    options = {**(base or {}), **cfg.model.options}
    if cfg.model.batch_norm != "on":
        options["batch_norm_mode"] = cfg.model.batch_norm
    if cfg.model.insert_dropout:
        options["insert_dropout"] = dict(cfg.model.insert_dropout)
    return options


def _std(cfg: Config, std: list[float]) -> list[float]:
    """The card's std: the training split's, or 1 per channel for mean-only normalisation (--normalize mean)."""
    return [1.0] * len(std) if cfg.data.normalize == "mean" else list(std)


def _whiten(cfg: Config) -> bool:
    return bool(cfg.data.whiten or cfg.data.normalize == "whiten")


def _spec_channels(cfg: Config, source: ImageSource) -> int | None:
    """A spec network takes the channels of in-memory images (digits: 1); other sources say None (3)."""
    arrays = getattr(source, "arrays", None)
    if is_spec(cfg.model.name) and arrays is not None and arrays.shape[1] in (1, 3):
        return int(arrays.shape[1])
    return None


def _pretrained_card(cfg: Config, source: ImageSource, split: dict, weights) -> ModelCard:
    c, h, _ = weights.input_size
    if cfg.data.channels not in (None, c):
        raise CnnkitError(f"{cfg.model.name} takes {c}-channel images; drop --channels {cfg.data.channels}")
    size = cfg.data.image_size or h
    scaling = _target_scaling(cfg, source, split["train"]) if cfg.task == "regression" else {}
    fields = weights.card_fields()
    return ModelCard(weights.architecture, cfg.task, list(source.classes), [c, size, size], fields["mean"],
                     _std(cfg, fields["std"]), _whiten(cfg), cfg.data.resize, _card_options(cfg, weights.options),
                     interpolation=weights.interpolation, **scaling)


def _class_weight(cfg: Config, labels: np.ndarray, classes: list[str]) -> torch.Tensor | None:
    """None, 'balanced' (n / (K·n_c)), or the weights of a CSV/JSON file of class → weight (missing: 1)."""
    given, k = cfg.train.class_weight, len(classes)
    if given is None:
        return None
    if cfg.task in ("multilabel", "regression"):
        raise CnnkitError(f"--class-weight {given} weighs single-label classes; a {cfg.task} task has none "
                          "(use sample weights)")
    if given != "balanced":
        return torch.tensor(read_class_weights(given, classes), dtype=torch.float32)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return torch.tensor(len(labels) / (k * np.maximum(counts, 1)), dtype=torch.float32)  # n / (K n_c)


def read_class_weights(path: str | Path, classes: list[str]) -> list[float]:
    """One weight per class from a JSON file ({class: weight}, or a list of K weights) or a CSV file (rows
    class,weight; a header row allowed). Classes are named, or given by index; a class left out weighs 1."""
    path = Path(path)
    if not path.is_file():
        raise CnnkitError(f"--class-weight {path}: neither 'balanced' nor a file (a CSV or JSON of class → weight)")
    try:
        pairs = _json_weights(path, len(classes)) if path.suffix.lower() == ".json" else _csv_weights(path)
    except (ValueError, csv.Error, UnicodeDecodeError, RecursionError) as err:  # ValueError: JSON's too
        raise CnnkitError(f"--class-weight {path}: not a CSV of class,weight rows or a JSON mapping "
                          f"({brief(str(err).splitlines()[0] if str(err) else type(err).__name__)})") from None
    weights = [1.0] * len(classes)
    for key, value in pairs:
        weights[_class_index(str(key).strip(), classes, path)] = _weight(value, key, path)
    return weights


def _json_weights(path: Path, k: int) -> list[tuple]:
    data = json.loads(path.read_text())
    if isinstance(data, list):
        if len(data) != k:
            raise ValueError(f"a list of {len(data)} weights for {k} classes")
        return list(enumerate(data))
    if not isinstance(data, dict):
        raise ValueError("expected {class: weight} or a list of weights")
    return list(data.items())


def _csv_weights(path: Path) -> list[tuple]:
    rows = [r for r in csv.reader(path.read_text().splitlines()) if r and any(c.strip() for c in r)]
    if any(len(r) != 2 for r in rows):
        raise ValueError("every row must be class,weight")
    if len(rows) > 1 and not _is_number(rows[0][1]):
        rows = rows[1:]  # a header
    return [(c, w) for c, w in rows]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _class_index(key: str, classes: list[str], path: Path) -> int:
    if key in classes:
        return classes.index(key)
    if key.isascii() and key.isdigit() and len(key) < 10 and int(key) < len(classes):  # not '²', not 5000 digits
        return int(key)
    raise CnnkitError(f"--class-weight {path}: unknown class {brief(key)}{did_you_mean(key, classes)} (classes: "
                      f"{', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})")


def _weight(value: object, key: object, path: Path) -> float:
    try:
        weight = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an integer of 400 digits
        weight = -1.0
    if isinstance(value, bool) or not weight >= 0 or weight == float("inf"):
        raise CnnkitError(f"--class-weight {path}: the weight of {brief(key)} must be a number of at least 0, got "
                          f"{brief(value)}")
    return weight


def make_attack(name: str | None, eps: float, card: ModelCard, steps: int = 7):
    """None, or (model, images, targets) → adversarial images within `eps` (pixel units) of the images, kept
    inside the valid pixel range of the card's normalisation."""
    if name is None:
        return None
    if name not in ("fgsm", "pgd"):
        raise CnnkitError(f"unknown attack {name!r}{did_you_mean(name, ('fgsm', 'pgd'))}")
    if card.whiten:  # each image has its own scale: a budget in pixel units has no single size in model inputs
        raise CnnkitError("adversarial attacks need the dataset's mean/std normalisation; this run whitens each "
                          "image (--whiten), so a pixel budget has no fixed size: train without --whiten")
    budget, clamp = pixel_eps(eps, card.std), input_range(card.mean, card.std)
    if name == "fgsm":
        return partial(fgsm, eps=budget, clamp=clamp)
    return partial(pgd, eps=budget, alpha=budget * 2.5 / steps, steps=steps, clamp=clamp)


def _mixer(mixup_alpha: float, cutmix_alpha: float, k: int):
    """None, or a function (images, targets) → (mixed images, soft targets) drawing mixup or CutMix per batch."""
    if not mixup_alpha and not cutmix_alpha:
        return None

    def mix(images: torch.Tensor, targets: torch.Tensor):
        use_cutmix = cutmix_alpha and (not mixup_alpha or torch.rand(()) < 0.5)
        mixed = cutmix(images, targets, k, alpha=cutmix_alpha) if use_cutmix else \
            mixup(images, targets, k, alpha=mixup_alpha)
        return mixed.images, mixed.targets

    return mix


def _check_regularizers(cfg: Config) -> None:
    """Refuse the training options that have no meaning for the problem type."""
    t, problem = cfg.train, cfg.task
    if problem == "regression" and (t.mixup or t.cutmix or t.label_smoothing):
        raise CnnkitError("mixup, cutmix and label smoothing mix class labels; a regression task has none")
    if t.adversarial and problem != "multiclass":
        raise CnnkitError(f"adversarial training attacks the softmax cross-entropy of a multiclass task, not a "
                          f"{problem} one; train with --task multiclass or without --adversarial")


def new_model(cfg: Config, card: ModelCard) -> torch.nn.Module:
    """The network `cfg` asks for, sized by the card (outputs, input channels), with its weights, BN mode and
    inserted dropout; a fresh one initialised by --init where given."""
    placed = {"insert_dropout": cfg.model.insert_dropout} if cfg.model.insert_dropout else {}
    model = create_model(cfg.model.name, num_classes=card.outputs, in_channels=card.input_size[0],
                         input_size=card.input_size, weights=cfg.model.weights, batch_norm_mode=cfg.model.batch_norm,
                         **cfg.model.options, **placed)
    if cfg.model.init:
        check_model_knobs(cfg)
        apply_init(model, cfg.model.init)
    return model


def check_model_knobs(cfg: Config) -> None:
    """Refuse, before any data is read, a bad --init (or one for pretrained weights, which it would overwrite)
    and a --insert-dropout that is not GLOB=RATE pairs."""
    m = cfg.model
    if m.init:
        parse_init(m.init)
        if m.weights is not None or lookup_pretrained(m.name) is not None:
            raise CnnkitError(f"--init {m.init} initialises a fresh model; {m.weights or m.name} brings trained "
                              "weights, which it would overwrite: drop --init or the weights")
    if m.insert_dropout is not None and not isinstance(m.insert_dropout, dict):
        raise CnnkitError(f"--insert-dropout takes GLOB=RATE pairs such as 'features.*.conv=0.1', got "
                          f"{m.insert_dropout!r}")


def make_classifier_task(cfg: Config, card: ModelCard, model: torch.nn.Module, train_labels: np.ndarray) -> Task:
    """The card's task around `model` with the configured loss, label smoothing, L1/L2 penalties, mixup or
    CutMix, adversarial training and class weights."""
    _check_regularizers(cfg)
    t = cfg.train
    penalty = Penalty(t.l1, t.l2, layers=t.penalty_layers) if t.l1 or t.l2 else None
    return card.make_task(model, t.loss, label_smoothing=t.label_smoothing, penalty=penalty,
                          mix=_mixer(t.mixup, t.cutmix, len(card.classes)),
                          attack=make_attack(t.adversarial, t.adv_eps, card, t.adv_steps),
                          class_weight=_class_weight(cfg, train_labels, list(card.classes)))


def split_metrics(trainer: Trainer, card: ModelCard, loader) -> dict:
    """The loss and per-batch means (`trainer.evaluate`), then the whole-split metrics of the problem type:
    accuracy, top-5, F1 (macro, micro) for classes; mAP and per-label F1 for labels; MAE, RMSE, R² for values."""
    metrics = trainer.evaluate(loader)
    outputs, targets = trainer.predict(loader, targets=True)
    if card.problem == "binary":
        outputs = outputs[:, 1]  # P(class 1)
    return {**metrics, **task_metrics(card.problem, outputs, targets, card.classes)}


def prediction(card: ModelCard, path, output: torch.Tensor, k: int, threshold: float) -> dict:
    """One image's result. Classes: the top-k {label, probability}. Multilabel: every label's probability, best
    first, plus `labels`, those at or above `threshold`. Regression: `values`, {target name: value}."""
    if card.problem == "regression":
        return {"path": str(path), "values": {n: round(float(v), 6) for n, v in zip(card.classes, output)}}
    probs, idx = output.topk(len(card.classes) if card.problem == "multilabel" else k)
    result = {"path": str(path), "predictions": [
        {"label": card.classes[int(c)], "probability": round(float(p), 6)} for p, c in zip(probs, idx)]}
    if card.problem == "multilabel":
        result["labels"] = [card.classes[int(c)] for p, c in zip(probs, idx) if p >= threshold]
    return result
