"""How a run is assembled from its config: the problem type, the model card (the data contract), the
loaders, the model (weights, transfer strategy, head) and the Trainer with its task, optimiser, schedule and
callbacks. `cnnkit.api`'s verbs (train, prune, lr_find, the diagnoses) build runs with these.

    problem, source = problem_source(cfg.task, open_source(cfg.data.source))
    card = card_for(cfg, source, split, cfg.train.seed)
    trainer = build_trainer(cfg, card, source.labels[split["train"]], len(train_loader), run_dir)
"""
from __future__ import annotations

import logging
from functools import partial
from pathlib import Path

import numpy as np
import torch

from cnnkit.engine import optimizers

from cnnkit.engine import schedules
from cnnkit.tasks.adversarial import fgsm, input_range, pgd, pixel_eps
from cnnkit.config import Config
from cnnkit.data.loader import make_loader, train_stats
from cnnkit.data.sources import ImageSource, as_problem, infer_problem
from cnnkit.data.transforms import make_augment
from cnnkit.engine.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, OverfittingAlarm, ProgressBar
from cnnkit.engine.distributed import DistInfo
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.models.tweaks import set_dropout
from cnnkit.models.pretrained import lookup as lookup_pretrained
from cnnkit.models.registry import create_model, get_spec
from cnnkit.engine.regularizers import Penalty, cutmix, mixup
from cnnkit.runs.folder import ModelCard
from cnnkit.tasks import problem_name
from cnnkit.tasks.regression import STANDARDIZED_LOSSES

log = logging.getLogger("cnnkit")


def problem_source(task: str, source: ImageSource) -> tuple[str, ImageSource]:
    """The problem type (`task`, or inferred from the data when 'auto') and the source's targets for it."""
    problem = infer_problem(source) if task == "auto" else problem_name(task)
    return problem, as_problem(source, problem)


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
    channels = cfg.data.channels or spec.input_size[0]
    size = cfg.data.image_size or spec.input_size[1]
    mean, std = train_stats(source, split["train"], channels, size, cfg.data.resize, seed=seed)
    bn = {} if cfg.model.batch_norm == "on" else {"batch_norm_mode": cfg.model.batch_norm}  # "off" changes the keys
    scaling = _target_scaling(cfg, source, split["train"]) if cfg.task == "regression" else {}
    return ModelCard(cfg.model.name, cfg.task, list(source.classes), [channels, size, size], mean, std,
                     cfg.data.whiten, cfg.data.resize, {**cfg.model.options, **bn}, **scaling)


def _pretrained_card(cfg: Config, source: ImageSource, split: dict, weights) -> ModelCard:
    c, h, _ = weights.input_size
    if cfg.data.channels not in (None, c):
        raise CnnkitError(f"{cfg.model.name} takes {c}-channel images; drop --channels {cfg.data.channels}")
    size = cfg.data.image_size or h
    bn = {} if cfg.model.batch_norm == "on" else {"batch_norm_mode": cfg.model.batch_norm}
    scaling = _target_scaling(cfg, source, split["train"]) if cfg.task == "regression" else {}
    fields = weights.card_fields()
    return ModelCard(weights.architecture, cfg.task, list(source.classes), [c, size, size], fields["mean"],
                     fields["std"], cfg.data.whiten, cfg.data.resize, {**weights.options, **cfg.model.options, **bn},
                     interpolation=weights.interpolation, **scaling)


def run_loader(source, indices, card: ModelCard, cfg: Config, *, train: bool, dist: DistInfo | None = None):
    aug = make_augment(cfg.data.augment, **cfg.data.augment_options) if train else None
    if aug is not None and aug == make_augment("none"):
        aug = None
    return make_loader(
        source, indices, channels=card.input_size[0], size=card.input_size[1], resize=card.resize, mean=card.mean,
        std=card.std, whiten=card.whiten, augment=aug, batch_size=cfg.train.batch_size, shuffle=train,
        seed=cfg.train.seed, workers=cfg.data.workers, distributed=bool(dist and dist.enabled),
        rank=dist.rank if dist else 0, world_size=dist.world_size if dist else 1,
        pin_memory=torch.cuda.is_available(), interpolation=card.interpolation,
    )


def _class_weight(cfg: Config, labels: np.ndarray, k: int) -> torch.Tensor | None:
    if cfg.train.class_weight is None:
        return None
    if cfg.train.class_weight != "balanced":
        raise CnnkitError(f"class_weight must be 'balanced' or empty, got {cfg.train.class_weight!r}")
    if cfg.task in ("multilabel", "regression"):
        raise CnnkitError(f"class_weight='balanced' weighs single-label classes; a {cfg.task} task has none "
                          "(use sample weights)")
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return torch.tensor(len(labels) / (k * np.maximum(counts, 1)), dtype=torch.float32)  # n / (K n_c)


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


def build_trainer(cfg: Config, card: ModelCard, train_labels: np.ndarray, steps: int, run_dir: Path,
                   model: torch.nn.Module | None = None) -> Trainer:
    """The Trainer of `cfg`, for a new model as `cfg` says, or for `model` (e.g. a pruned one) when given."""
    seed_everything(cfg.train.seed)
    _check_regularizers(cfg)
    if model is None:
        model = new_model(cfg, card)
        plan = transfer_plan(cfg, card, model)
        model = plan.model if plan else model
    else:
        plan = None
    if cfg.model.dropout is not None:  # training only: the card need not carry it
        set_dropout(model, cfg.model.dropout)
    t = cfg.train
    penalty = Penalty(t.l1, t.l2, layers=t.penalty_layers) if t.l1 or t.l2 else None
    task = card.make_task(model, t.loss, label_smoothing=t.label_smoothing, penalty=penalty,
                          mix=_mixer(t.mixup, t.cutmix, len(card.classes)),
                          attack=make_attack(t.adversarial, t.adv_eps, card, t.adv_steps),
                          class_weight=_class_weight(cfg, train_labels, len(card.classes)))
    optimizer = optimizers.get(t.optimizer, plan.param_groups if plan else model.parameters(), lr=t.lr,
                               weight_decay=t.weight_decay, **t.optimizer_options)
    per_epoch = t.schedule == "reduce_on_plateau"  # it needs the val loss, known once per epoch
    scheduler = schedules.get(t.schedule, optimizer, steps_per_epoch=steps, epochs=t.epochs,
                              interval="epoch" if per_epoch else "batch",
                              warmup=round(t.warmup_epochs * (1 if per_epoch else steps)), **t.schedule_options)
    callbacks = [EarlyStopping(t.monitor, t.patience, t.min_delta, restore_best=t.restore_best)] if t.patience else []
    callbacks += [OverfittingAlarm(cfg.diagnose.alarm_patience, cfg.diagnose.alarm_stop),  # before the checkpoint
                  ModelCheckpoint(run_dir / "checkpoints", monitor=task.monitor),
                  CSVLogger(run_dir / "history.csv"), ProgressBar()] + (plan.callbacks if plan else [])
    if t.log:
        from cnnkit.engine.loggers import make_loggers

        callbacks += make_loggers(t.log, run_dir, {"model": cfg.model.name, "data": cfg.data.source})
    return Trainer(task, optimizer, epochs=t.epochs, scheduler=scheduler, callbacks=callbacks, device=t.device,
                   amp=t.amp, grad_clip=t.grad_clip, seed=t.seed)


def transfer_plan(cfg: Config, card: ModelCard, model: torch.nn.Module):
    """The transfer strategy's plan for a new `model` (cnnkit.engine.transfer), or None without a strategy.
    A linear-probe run trained again (e.g. by `cnnkit diagnose --data-curve`) trains its last layer: head-only."""
    from cnnkit.engine.transfer import apply_strategy

    t = cfg.train
    if t.strategy is None:
        return None
    strategy = "head-only" if t.strategy == "linear-probe" else t.strategy
    plan = apply_strategy(model, get_spec(cfg.model.name), strategy, k=t.keep_stages, lr=t.lr,
                          unfreeze_every=t.unfreeze_every, input_size=tuple(card.input_size))
    log.info("%s: %d trainable parameters, %d frozen tensors", strategy, plan.trainable, len(plan.frozen))
    return plan


def new_model(cfg: Config, card: ModelCard) -> torch.nn.Module:
    """The network `cfg` asks for, sized by the card (outputs, input channels), with its weights and BN mode."""
    return create_model(cfg.model.name, num_classes=card.outputs, in_channels=card.input_size[0],
                         weights=cfg.model.weights, batch_norm_mode=cfg.model.batch_norm, **cfg.model.options)


def auto_strategy(cfg: Config, source, split: dict, card: ModelCard, subset: int = 300) -> dict:
    """"auto": the strategy of the size × similarity quadrant (cnnkit.engine.transfer.choose_strategy), similarity from
    a quick cross-validated linear probe on at most `subset` training images; logs the reasoning."""
    from cnnkit.engine.transfer import choose_strategy, extract_features, stages

    if card.problem not in ("binary", "multiclass"):
        raise CnnkitError(f"--strategy auto estimates similarity with a classifier; a {card.problem} task needs "
                          "a named strategy (fine-tune, feature-extractor, ...)")
    seed_everything(cfg.train.seed)
    model, spec = new_model(cfg, card), get_spec(cfg.model.name)
    picked = np.random.default_rng(cfg.train.seed).permutation(split["train"])[:subset]
    x, y = extract_features(model, spec, run_loader(source, np.sort(picked), card, cfg, train=False))
    choice, reasoning = choose_strategy(x, y, len(split["train"]), len(stages(model, spec)))
    log.info("%s", reasoning)
    return choice


def wants_probe_head(cfg: Config, card: ModelCard) -> bool:
    """--head-init: "probe", or "auto" on a fine-tune of pretrained weights (named or a file) on classes."""
    h = cfg.train.head_init
    pretrained = cfg.model.weights is not None or lookup_pretrained(cfg.model.name) is not None
    return h == "probe" or (h == "auto" and cfg.train.strategy == "fine-tune" and pretrained
                            and card.problem in ("binary", "multiclass"))


def probe_head(cfg: Config, source, split: dict, card: ModelCard, model: torch.nn.Module) -> None:
    """--head-init probe (LP-FT, Kumar et al. 2022): the new head starts as a linear probe fitted on the
    network's features of the training split (eval mode, no augmentation), so training does not begin by
    pushing the gradients of a random head through the pretrained features."""
    from cnnkit.engine.transfer import extract_features, fit_linear_probe

    if card.problem not in ("binary", "multiclass"):
        raise CnnkitError(f"--head-init probe fits a classifier; a {card.problem} task needs --head-init random")
    spec = get_spec(cfg.model.name)
    was_training = model.training
    x, y = extract_features(model, spec, run_loader(source, split["train"], card, cfg, train=False))
    probe = fit_linear_probe(model, spec, x, y, card.outputs, cfg.train.probe)
    model.train(was_training)
    log.info("head-init probe: the head starts from a %s probe, train accuracy %.4f", cfg.train.probe,
             probe.score(x, y))

