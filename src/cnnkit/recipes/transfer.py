"""Transfer learning in a classification run: the strategy's plan for a new model, the "auto" strategy's choice
from a quick linear probe, the head started as a linear probe (--head-init probe: LP-FT) and the linear-probe run
fitted in closed form with scikit-learn (--strategy linear-probe). The maths lives in cnnkit.engine.transfer."""
from __future__ import annotations

import logging
import warnings
from dataclasses import replace

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.data.loader import run_loader
from cnnkit.engine.distributed import init_distributed
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import get_spec
from cnnkit.models.pretrained import lookup as lookup_pretrained
from cnnkit.recipes.base import Context, TrainResult
from cnnkit.recipes.classifier import new_model, split_metrics
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import save_model

log = logging.getLogger("cnnkit")


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


def auto_strategy(cfg: Config, source, split: dict, card: ModelCard, subset: int = 300) -> dict:
    """"auto": the strategy of the size × similarity quadrant (cnnkit.engine.transfer.choose_strategy), similarity from
    a quick cross-validated linear probe on at most `subset` training images; logs the reasoning."""
    from cnnkit.engine.transfer import choose_strategy, extract_features
    from cnnkit.models.stages import stages

    if card.problem not in ("binary", "multiclass"):
        raise CnnkitError(f"--strategy auto estimates similarity with a classifier; a {card.problem} task needs "
                          "a named strategy (fine-tune, feature-extractor, ...)")
    seed_everything(cfg.train.seed)
    with warnings.catch_warnings():  # a throw-away model for the probe: the run's own model warns once
        warnings.filterwarnings("ignore", message="head .* has another shape")
        model = new_model(cfg, card)
    spec = get_spec(cfg.model.name)
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


def fit_probe(ctx: Context) -> TrainResult:
    """linear-probe: pooled features once (eval mode, no augmentation), cached in RUN/features.npz; a
    scikit-learn probe fitted on them and written into the model's last linear layer; an ordinary run folder."""
    from cnnkit.engine.transfer import extract_features, fit_linear_probe
    from cnnkit.models.stages import last_linears
    from cnnkit.recipes.runner import write_start

    cfg, card, source, split = ctx.cfg, ctx.card, ctx.source, ctx.split
    if card.problem not in ("binary", "multiclass"):
        raise CnnkitError(f"--strategy linear-probe fits a classifier; a {card.problem} task needs another strategy")
    seed_everything(cfg.train.seed)
    model, spec = new_model(cfg, card), get_spec(cfg.model.name)
    x, y = extract_features(model, spec, run_loader(source, split["train"], card, cfg, train=False))
    val_loader = run_loader(source, split["val"], card, cfg, train=False) if len(split["val"]) else None
    vx, vy = extract_features(model, spec, val_loader) if val_loader is not None else (x[:0], y[:0])
    main = init_distributed().is_main  # under torchrun every rank fits the same probe; rank 0 writes
    if main:
        write_start(ctx)
        np.savez_compressed(ctx.run_dir / "features.npz", train_x=x, train_y=y, val_x=vx, val_y=vy)
    probe = fit_linear_probe(model, spec, x, y, card.outputs, cfg.train.probe)
    if len(vy):
        log.info("linear-probe (%s): val accuracy %.4f (scikit-learn)", cfg.train.probe, probe.score(vx, vy))
    trainer = Trainer(card.make_task(model, cfg.train.loss), None, epochs=1, device="cpu")
    val = split_metrics(trainer, card, val_loader) if val_loader is not None else {}
    if main:
        save_model(ctx.run_dir / "model.pt", model, card, cfg.train.save_format)
    layer = model.get_submodule(last_linears(model, spec)[0])
    return TrainResult(ctx.run_dir, [], val, trainable=sum(p.numel() for p in layer.parameters()))


def settle_strategy(ctx: Context) -> Context:
    """"auto" resolved into a named strategy (the config records the choice); "partial" recorded in the card,
    since the saved model is the truncated one and predict rebuilds it from the card."""
    cfg, card = ctx.cfg, ctx.card
    if cfg.train.strategy == "auto" and ctx.state is None:
        cfg.train = replace(cfg.train, **auto_strategy(cfg, ctx.source, ctx.split, card))
    if cfg.train.strategy == "partial":
        ctx.card = replace(card, transfer={"strategy": "partial", "keep_stages": cfg.train.keep_stages})
    return ctx
