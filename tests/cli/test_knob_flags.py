"""The optimisation knobs' flags (issue 19: --schedule-interval, --schedule-option, --optimizer-option, --momentum,
--nesterov, --weight-decay, --label-smoothing, --grad-clip, --warmup-epochs, --whiten, --normalize, --class-weight,
--accumulate, --init, --insert-dropout): each one reaches the optimiser, the loss, the schedule, the data or the
model that a run trains. `built` goes the run's own way (flags → train_overrides → load_config → recipe → the
runner's start, model, loader, build and make_trainer) without fitting, so each check is quick; a few real runs
check config.yaml, history.csv and the saved model."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from cnnkit.cli.app import main
from cnnkit.cli.parser import build_parser
from cnnkit.cli.verbs import train_overrides
from cnnkit.config import load_config
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.models.tweaks import PlacedDropout
from cnnkit.recipes import recipe_for
from cnnkit.recipes.runner import make_trainer, start

DATA = "synthetic-shapes:n=60,size=32"


def config(*flags: str):
    return load_config(None, train_overrides(build_parser().parse_args(["train", "--data", DATA, *flags])))


def built(tmp_path: Path, *flags: str) -> tuple[Trainer, object]:
    """(the Trainer a run with these flags would fit, its context), as runner.train and runner.fit build them."""
    cfg = config("--epochs", "2", "--batch-size", "16", "--out", str(tmp_path / "run"), *flags)
    recipe = recipe_for(cfg.task)
    cfg.validate(supported=recipe.supported, reasons=recipe.unsupported_reason)
    recipe.check(cfg)
    ctx = start(recipe, cfg)
    model = recipe.model(cfg, ctx.card, fresh=True)
    loader = recipe.loader(cfg, ctx.source, ctx.split["train"], ctx.card, train=True)
    return make_trainer(cfg, recipe.build(ctx, model), len(loader), ctx.run_dir), ctx


def test_momentum_nesterov_weight_decay_and_optimizer_options_reach_the_optimiser(tmp_path: Path) -> None:
    trainer, _ = built(tmp_path, "--optimizer", "sgd", "--lr", "0.05", "--momentum", "0.9", "--nesterov",
                       "--weight-decay", "5e-4", "--optimizer-option", "dampening=0.0",
                       "--optimizer-option", "maximize=false")
    (group,) = trainer.optimizer.param_groups
    assert isinstance(trainer.optimizer, torch.optim.SGD)
    assert (group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]) == (0.05, 0.9, True, 5e-4)
    assert group["maximize"] is False
    trainer, _ = built(tmp_path, "--optimizer-option", "betas=(0.8, 0.99)", "--optimizer-option", "eps=1e-6")
    assert tuple(trainer.optimizer.param_groups[0]["betas"]) == (0.8, 0.99)  # a tuple with a comma: one option
    assert trainer.optimizer.param_groups[0]["eps"] == 1e-6


def test_an_option_the_optimiser_lacks_is_one_line_naming_its_options(capsys) -> None:
    assert main(["-q", "train", "--data", DATA, "--epochs", "1", "--momentum", "0.9"]) == 2  # adam: no momentum
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "optimizer 'adam' has no option 'momentum'" in err and "betas" in err


def test_label_smoothing_and_class_weight_balanced_reach_the_loss(tmp_path: Path) -> None:
    trainer, ctx = built(tmp_path, "--label-smoothing", "0.1", "--class-weight", "balanced")
    labels = ctx.source.labels[ctx.split["train"]]
    counts = torch.bincount(torch.as_tensor(labels), minlength=len(ctx.card.classes)).double()
    assert trainer.task.loss.label_smoothing == 0.1
    expected = len(labels) / (len(counts) * counts)
    assert torch.allclose(trainer.task.loss.class_weight.double(), expected)


@pytest.mark.parametrize("suffix", [".csv", ".json"])
def test_class_weight_file_reaches_the_loss(tmp_path: Path, suffix: str) -> None:
    from cnnkit.data.builtin import open_source

    classes = list(open_source(DATA).classes)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".csv":
        path.write_text(f"class,weight\n{classes[0]},3.0\n{classes[-1]},0.5\n")
    else:
        path.write_text(json.dumps({classes[0]: 3.0, classes[-1]: 0.5}))
    trainer, _ = built(tmp_path, "--class-weight", str(path))
    expected = [3.0] + [1.0] * (len(classes) - 2) + [0.5]  # a class left out weighs 1
    assert trainer.task.loss.class_weight.tolist() == expected


@pytest.mark.parametrize("content,message", [
    ("circle,abc\n", "must be a number"),
    ("circel,2\n", "unknown class 'circel'"),
    ("a,b,c\n", "class,weight"),
])
def test_a_bad_class_weight_file_is_one_line(tmp_path: Path, capsys, content: str, message: str) -> None:
    path = tmp_path / "w.csv"
    path.write_text(content)
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", DATA, "--epochs", "1", "--class-weight", str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert main(["-q", "train", "--data", DATA, "--epochs", "1", "--class-weight", "balancd"]) == 2
    assert "neither 'balanced' nor a file" in capsys.readouterr().err


def test_grad_clip_accumulate_and_warmup_reach_the_trainer_and_schedule(tmp_path: Path) -> None:
    trainer, _ = built(tmp_path, "--grad-clip", "1.5", "--accumulate", "2", "--warmup-epochs", "1",
                       "--schedule", "step_decay", "--lr", "0.01")
    assert (trainer.grad_clip, trainer.accumulate) == (1.5, 2)
    assert trainer.scheduler.interval == "epoch"
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(0.001)  # the warm-up starts at lr0 · 0.1
    trainer, ctx = built(tmp_path, "--warmup-epochs", "1.5", "--accumulate", "2", "--lr", "0.01")  # cosine: batches
    batches = -(-len(ctx.split["train"]) // 16)
    steps = -(-batches // 2)  # optimiser steps per epoch: the unit of a per-batch schedule
    assert trainer.scheduler.interval == "batch"
    ramp = trainer.scheduler.scheduler._schedulers[0]  # SequentialLR: the warm-up's LinearLR first
    assert ramp.total_iters == round(1.5 * steps)


def test_schedule_interval_and_schedule_options_reach_the_schedule(tmp_path: Path) -> None:
    trainer, _ = built(tmp_path, "--schedule", "step_decay", "--schedule-option", "step_size=3",
                       "--schedule-option", "gamma=0.5")
    assert trainer.scheduler.interval == "epoch"
    assert (trainer.scheduler.scheduler.step_size, trainer.scheduler.scheduler.gamma) == (3, 0.5)
    trainer, _ = built(tmp_path, "--schedule", "step_decay", "--schedule-interval", "batch",
                       "--schedule-option", "step_size=3")
    assert trainer.scheduler.interval == "batch"
    trainer, _ = built(tmp_path, "--schedule", "cosine", "--schedule-interval", "epoch")
    assert trainer.scheduler.interval == "epoch" and trainer.scheduler.scheduler.T_max == 2


def test_whiten_and_mean_only_normalisation_reach_the_card(tmp_path: Path) -> None:
    _, ctx = built(tmp_path, "--whiten")
    assert ctx.card.whiten
    _, ctx = built(tmp_path, "--normalize", "whiten")
    assert ctx.card.whiten
    trainer, ctx = built(tmp_path, "--normalize", "mean")
    assert not ctx.card.whiten and ctx.card.std == [1.0] * ctx.card.input_size[0]
    assert config("--normalize", "mean").data.normalize == "mean"
    with pytest.raises(CnnkitError, match="contradict"):
        config("--whiten", "--normalize", "mean")


def test_init_reaches_the_fresh_models_conv_and_linear_layers(tmp_path: Path) -> None:
    trainer, _ = built(tmp_path, "--init", "normal:std=0.01,bias=0.1")
    layers = [m for m in trainer.model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    weights = torch.cat([m.weight.flatten() for m in layers])
    assert weights.std().item() == pytest.approx(0.01, rel=0.1) and abs(weights.mean().item()) < 2e-3
    assert all(torch.all(m.bias == 0.1) for m in layers)


@pytest.mark.parametrize("flags,message", [
    (["--init", "gaussian"], "unknown --init scheme 'gaussian'"),
    (["--init", "normal:sd=0.1"], "no option 'sd'"),
    (["--init", "he", "--model", "efficientnet_lite0.imagenet"], "drop --init or the weights"),
    (["--insert-dropout", "nothing.here=0.1"], "no module matches 'nothing.here'"),
    (["--insert-dropout", "c1=1.5"], "dropout rate"),
])
def test_bad_init_or_insert_dropout_is_one_line_and_leaves_no_run(tmp_path: Path, capsys, flags, message) -> None:
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", DATA, "--epochs", "1", "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_insert_dropout_reaches_the_model(tmp_path: Path) -> None:
    trainer, ctx = built(tmp_path, "--insert-dropout", "c*=0.2", "--insert-dropout", "f6=0.4")
    placed = {n: m.p for n, m in trainer.model.named_modules() if isinstance(m, PlacedDropout)}
    assert placed == {"c1.placed_dropout": 0.2, "c3.placed_dropout": 0.2, "c5.placed_dropout": 0.2,
                      "f6.placed_dropout": 0.4}
    assert ctx.card.options["insert_dropout"] == {"c*": 0.2, "f6": 0.4}


def test_every_flag_lands_in_config_yaml_of_a_real_run(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", DATA, "--epochs", "2", "--batch-size", "16", "--optimizer", "sgd",
                 "--momentum", "0.9", "--nesterov", "--weight-decay", "1e-4", "--label-smoothing", "0.05",
                 "--grad-clip", "2", "--warmup-epochs", "1", "--normalize", "mean", "--class-weight", "balanced",
                 "--accumulate", "2", "--init", "he:bias=0.01", "--insert-dropout", "c3=0.1", "--schedule",
                 "step_decay", "--schedule-interval", "epoch", "--schedule-option", "step_size=1",
                 "--out", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    t, m, d = saved["train"], saved["model"], saved["data"]
    assert t["optimizer_options"] == {"momentum": 0.9, "nesterov": True}
    assert (t["weight_decay"], t["label_smoothing"], t["grad_clip"], t["warmup_epochs"]) == (1e-4, 0.05, 2, 1)
    assert (t["class_weight"], t["accumulate"], t["schedule_interval"]) == ("balanced", 2, "epoch")
    assert t["schedule_options"] == {"step_size": 1}
    assert (m["init"], m["insert_dropout"], d["normalize"]) == ("he:bias=0.01", {"c3": 0.1}, "mean")
    lrs = [float(r["lr"]) for r in csv.DictReader((out / "history.csv").open())]
    assert lrs == pytest.approx([0.001, 0.01])  # one epoch of warm-up from 0.1·lr0 (sgd's lr0 = 0.01), then lr0


@pytest.mark.slow
def test_step_decay_halves_the_lr_every_3_epochs_in_history_csv(tmp_path: Path) -> None:
    """The issue's acceptance command, on the embedded digits."""
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", "digits", "--model", "lenet5", "--epochs", "7", "--schedule", "step_decay",
                 "--schedule-option", "step_size=3", "--schedule-option", "gamma=0.5", "--out", str(out)]) == 0
    lrs = [float(r["lr"]) for r in csv.DictReader((out / "history.csv").open())]
    lr0 = lrs[0]
    assert lrs == pytest.approx([lr0, lr0, lr0, lr0 / 2, lr0 / 2, lr0 / 2, lr0 / 4])


def test_step_decay_counts_epochs_in_history_csv(tmp_path: Path) -> None:
    """The same on a small set: the lr column halves every 2 epochs, whatever the number of batches."""
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", DATA, "--epochs", "5", "--batch-size", "8", "--schedule", "step_decay",
                 "--schedule-option", "step_size=2", "--schedule-option", "gamma=0.5", "--lr", "0.01",
                 "--out", str(out)]) == 0
    lrs = [float(r["lr"]) for r in csv.DictReader((out / "history.csv").open())]
    assert lrs == pytest.approx([0.01, 0.01, 0.005, 0.005, 0.0025])


def test_inserted_dropout_survives_saving_and_reloading_and_never_drops_in_eval(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["-q", "train", "--data", DATA, "--epochs", "1", "--insert-dropout", "c3=0.5",
                 "--insert-dropout", "f6=0.5", "--out", str(out)]) == 0
    from cnnkit.runs.folder import load_model

    model, card = load_model(out)
    assert card.options["insert_dropout"] == {"c3": 0.5, "f6": 0.5}
    assert isinstance(model.c3.placed_dropout, PlacedDropout) and model.f6.placed_dropout.p == 0.5
    x = torch.randn(4, *card.input_size)
    model.eval()
    assert torch.equal(model(x), model(x))  # evaluation never drops
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(x), model(x))
