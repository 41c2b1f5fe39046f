"""The verbs shared by the CLI and Python users: train, evaluate, test, predict, embed, demo_config,
augment_preview, models_table, inspect_model, inspect_kernels, inspect_feature_maps, transfer_compare, lr_find,
prune, report, diagnose. How a run is assembled (card, loaders, model, Trainer) lives in cnnkit.recipes.classification."""
from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

from cnnkit.config import Config, config_from_dict, load_config, save_config  # noqa: F401 (load_config is API)
from cnnkit.data.builtin import open_source
from cnnkit.data.images import is_image_file
from cnnkit.data.split import indices_from_record, make_split, split_record, write_split
from cnnkit.data.transforms import make_augment
from cnnkit.engine.callbacks import ModelCheckpoint, OverfittingAlarm, write_history
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.distributed import barrier, broadcast_object, init_distributed
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.tasks.adversarial import robust_accuracy
from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.recipes.classification import (auto_strategy, build_trainer, card_for, make_attack, new_model,  # noqa: F401
                             probe_head, problem_source, run_loader, wants_probe_head)  # make_attack: API
from cnnkit.models.prune import SCOPES, make_permanent, prune_model, sparsity
from cnnkit.models.pretrained import pretrained_model
from cnnkit.models.registry import get_spec
from cnnkit.runs.folder import ModelCard, image_batches, load_model, open_run, new_run_dir, record_test_use, run_file, save_model
from cnnkit.metrics.core import task_metrics
from cnnkit.diagnose.verdict import Verdict, make_verdict, run_verdict, write_diagnosis

log = logging.getLogger("cnnkit")


@dataclass
class TrainResult:
    run_dir: Path
    history: list[dict]
    val: dict  # metrics of the saved model on the val split
    interrupted: bool = False
    verdict: Verdict | None = None  # bias/variance of the saved model (None without a val split or when interrupted)
    trainable: int | None = None  # parameters with requires_grad at the end of training (linear-probe: its layer's)


def train(cfg: Config | None = None, *, resume: str | Path | None = None, **train_overrides) -> TrainResult:
    """Train a classifier as `cfg` says; or, with `resume=RUN`, continue RUN from checkpoints/last.pt.

    The test split is written to split.json and never read here.
    """
    if resume is not None:
        run_dir = Path(resume)
        cfg = config_from_dict(yaml.safe_load(run_file(run_dir, "config.yaml").read_text()))
        state = load_checkpoint(run_file(run_dir, "checkpoints/last.pt"))
        record = json.loads(run_file(run_dir, "split.json").read_text())
    else:
        cfg, state, record = cfg or Config(), None, None
    cfg.train = replace(cfg.train, **train_overrides)
    cfg.validate()
    if cfg.task in ("detect", "instance"):  # instance: Mask R-CNN through the detection runs
        from cnnkit.recipes.detection import train_detector

        return train_detector(cfg, Path(resume) if resume is not None else None, state)
    if cfg.task == "segment":
        from cnnkit.recipes.segmentation import train_segmenter

        return train_segmenter(cfg, Path(resume) if resume is not None else None, state)
    info = init_distributed()
    cfg.task, source = problem_source(cfg.task, open_source(cfg.data.source, cfg.data.max_bad_fraction))
    if record is None:
        split = make_split(source, cfg.data.val, cfg.data.test, cfg.train.seed)  # seeded: equal on every rank
        run_dir = broadcast_object(Path(cfg.out) if cfg.out else new_run_dir(f"{cfg.model.name}-{source.name}"), info)
        card = card_for(cfg, source, split, cfg.train.seed)
        record = split_record(source, split, cfg.train.seed, {"val": cfg.data.val, "test": cfg.data.test})
    else:
        split = {name: indices_from_record(source, record, name) for name in ("train", "val")}
        card = ModelCard(**state["meta"]["card"])
    return _fit(cfg, source, split, card, run_dir, state, record)


def _fit(cfg: Config, source, split: dict, card: ModelCard, run_dir: Path, state: dict | None,
         record: dict) -> TrainResult:
    if cfg.train.strategy == "auto":
        cfg.train = replace(cfg.train, **auto_strategy(cfg, source, split, card))  # the config records the choice
    if cfg.train.strategy == "partial":  # the saved model is the truncated one: predict rebuilds it from the card
        card = replace(card, transfer={"strategy": "partial", "keep_stages": cfg.train.keep_stages})
    if cfg.train.strategy == "linear-probe":
        return _fit_probe(cfg, source, split, card, run_dir, record)
    # under torchrun each rank reads its own shard of the training split
    train_loader = run_loader(source, split["train"], card, cfg, train=True, dist=init_distributed())
    trainer = build_trainer(cfg, card, source.labels[split["train"]], len(train_loader), run_dir)
    if trainer.dist.is_main:  # only now: a bad model option has failed before the run folder exists
        run_dir.mkdir(parents=True, exist_ok=True)
        write_split(run_dir / "split.json", record)
        save_config(cfg, run_dir / "config.yaml")
    val_loader = run_loader(source, split["val"], card, cfg, train=False) if len(split["val"]) else None
    trainer.meta = {"card": asdict(card)}
    if state is None and wants_probe_head(cfg, card):
        probe_head(cfg, source, split, card, trainer.model)
    if state is not None:
        trainer.load_state_dict(state)
        log.info("resuming %s after epoch %d of %d", run_dir, trainer.epoch, trainer.epochs)
    trainer.fit(train_loader, val_loader)
    barrier(trainer.dist)  # rank 0 has written best.pt
    best = run_dir / "checkpoints" / "best.pt"
    if best.is_file() and not trainer.interrupted:  # model selection on val, never on test
        trainer.model.load_state_dict(load_checkpoint(best)["model"])
    val = split_metrics(trainer, card, val_loader) if val_loader is not None and not trainer.interrupted else {}
    verdict = _train_verdict(cfg, source, split, card, trainer, val) if val else None
    if trainer.dist.is_main:
        save_model(run_dir / "model.pt", trainer.model, card)
        write_history(run_dir / "history.csv", trainer.history)
        alarm = next((c.as_dict() for c in trainer.callbacks if isinstance(c, OverfittingAlarm)), None)
        write_diagnosis(run_dir, alarm=alarm, verdict=verdict.as_dict() if verdict else None)
        if trainer.history:
            from cnnkit.diagnose.curves import plot_learning_curves  # matplotlib only once there is a plot

            plot_learning_curves(trainer.history, run_dir / "plots" / "learning_curves.png")
        if trainer.history and not trainer.interrupted:
            write_report_quietly(run_dir)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)  # after any unfreezing
    return TrainResult(run_dir, trainer.history, val, trainer.interrupted, verdict, trainable)


def _fit_probe(cfg: Config, source, split: dict, card: ModelCard, run_dir: Path, record: dict) -> TrainResult:
    """linear-probe: pooled features once (eval mode, no augmentation), cached in RUN/features.npz; a
    scikit-learn probe fitted on them and written into the model's last linear layer; an ordinary run folder."""
    from cnnkit.engine.transfer import _last_linears, extract_features, fit_linear_probe

    if card.problem not in ("binary", "multiclass"):
        raise CnnkitError(f"--strategy linear-probe fits a classifier; a {card.problem} task needs another strategy")
    seed_everything(cfg.train.seed)
    model, spec = new_model(cfg, card), get_spec(cfg.model.name)
    x, y = extract_features(model, spec, run_loader(source, split["train"], card, cfg, train=False))
    val_loader = run_loader(source, split["val"], card, cfg, train=False) if len(split["val"]) else None
    vx, vy = extract_features(model, spec, val_loader) if val_loader is not None else (x[:0], y[:0])
    run_dir.mkdir(parents=True, exist_ok=True)
    write_split(run_dir / "split.json", record)
    save_config(cfg, run_dir / "config.yaml")
    np.savez_compressed(run_dir / "features.npz", train_x=x, train_y=y, val_x=vx, val_y=vy)
    probe = fit_linear_probe(model, spec, x, y, card.outputs, cfg.train.probe)
    if len(vy):
        log.info("linear-probe (%s): val accuracy %.4f (scikit-learn)", cfg.train.probe, probe.score(vx, vy))
    trainer = Trainer(card.make_task(model, cfg.train.loss), None, epochs=1, device="cpu")
    val = split_metrics(trainer, card, val_loader) if val_loader is not None else {}
    save_model(run_dir / "model.pt", model, card)
    layer = model.get_submodule(_last_linears(model, spec)[0])
    return TrainResult(run_dir, [], val, trainable=sum(p.numel() for p in layer.parameters()))


def write_report_quietly(run_dir: Path) -> None:
    """RUN/report.html at the end of training; a failure to build it warns and keeps the run."""
    try:
        log.info("report: %s", report(run_dir))
    except Exception as err:  # noqa: BLE001 (the run is saved; `cnnkit report RUN` can retry)
        warnings.warn(f"report.html not written ({type(err).__name__}: {err}); retry with `cnnkit report "
                      f"{run_dir}`", stacklevel=2)


def _train_verdict(cfg: Config, source, split: dict, card: ModelCard, trainer: Trainer,
                   val: dict) -> Verdict | None:
    """The bias/variance verdict of the selected model: its training split measured again in eval mode,
    without augmentation or dropout (not the epoch's running average), against `val`."""
    train = split_metrics(trainer, card, run_loader(source, split["train"], card, cfg, train=False))
    try:
        return make_verdict(card.problem, train, val, cfg, trainer.history, val_count=len(split["val"]))
    except CnnkitError as err:  # e.g. no positive label in the val split: no mAP; the model is still saved
        warnings.warn(f"no verdict: {err}", stacklevel=2)
        return None


def _split_metrics(run: str | Path, split: str, batch_size: int = 256, attack: str | None = None,
                   eps: float = 0.1) -> dict:
    run = Path(run)
    model, card, cfg, record = open_run(run)
    cfg = config_from_dict(cfg)
    if split not in record["splits"]:
        raise CnnkitError(f"unknown split {split!r}; choose train, val or test")
    _, source = problem_source(card.problem, open_source(cfg.data.source, cfg.data.max_bad_fraction))
    indices = indices_from_record(source, record, split)
    if len(indices) == 0:
        raise CnnkitError(f"the {split} split of {run} is empty")
    cfg.train.batch_size = batch_size
    loader = run_loader(source, indices, card, cfg, train=False)
    with warnings.catch_warnings():  # a mismatched loss was reported when the run trained
        warnings.simplefilter("ignore", UserWarning)
        task = card.make_task(model, cfg.train.loss)
    trainer = Trainer(task, None, epochs=1, device=cfg.train.device)
    metrics = split_metrics(trainer, card, loader)
    if attack is not None:  # accuracy on adversarial versions of the split's images
        metrics["robust_accuracy"] = robust_accuracy(trainer.model, loader, make_attack(attack, eps, card))
        metrics.update(attack=attack, eps=eps)
    return {"split": split, "count": int(len(indices)), **metrics}


def split_metrics(trainer: Trainer, card: ModelCard, loader) -> dict:
    """The loss and per-batch means (`trainer.evaluate`), then the whole-split metrics of the problem type:
    accuracy, top-5, F1 (macro, micro) for classes; mAP and per-label F1 for labels; MAE, RMSE, R² for values."""
    metrics = trainer.evaluate(loader)
    outputs, targets = trainer.predict(loader, targets=True)
    if card.problem == "binary":
        outputs = outputs[:, 1]  # P(class 1)
    return {**metrics, **task_metrics(card.problem, outputs, targets, card.classes)}


def evaluate(run: str | Path, split: str = "val", attack: str | None = None, eps: float = 0.1,
             target_error: float | None = None, verdict: bool = True, boundary_f1: bool = False) -> dict:
    """The loss and the metrics of RUN's problem type on its train or val split (see `split_metrics`); with
    `attack` ('fgsm' or 'pgd'), also the accuracy on adversarial images within `eps` (pixel units).
    With `verdict`, also "verdict": the bias/variance verdict (train against val, whichever split is asked;
    see cnnkit.diagnose.verdict), bias measured above `target_error` when given. The test split has its own verb.
    A segmentation run gives mIoU, per-class IoU, pixel accuracy, ... (cnnkit.recipes.segmentation.split_scores),
    with `boundary_f1` also the boundary F1 score."""
    if split == "test":
        raise CnnkitError("the test split is locked: use `cnnkit test RUN` (it records each use)")
    if _task_of(run) in ("detect", "instance"):
        from cnnkit.recipes.detection import evaluate_detector

        return evaluate_detector(run, split)
    if _task_of(run) == "segment":
        from cnnkit.recipes.segmentation import evaluate_segmenter

        if attack is not None:
            raise CnnkitError("--attack measures a classifier's robust accuracy; drop it for a segmentation run")
        measure = partial(evaluate_segmenter, run)
        metrics = measure(split, boundary=boundary_f1)
    else:
        measure = partial(_split_metrics, run)
        metrics = measure(split, attack=attack, eps=eps)
    if verdict:
        other = "train" if split == "val" else "val"
        try:
            pair = {split: metrics, other: measure(other)}
        except CnnkitError as err:  # e.g. a run trained without a val split
            warnings.warn(f"no verdict: {err}", stacklevel=2)
            return metrics
        metrics["verdict"] = run_verdict(run, target_error, train_metrics=pair["train"],
                                         val_metrics=pair["val"]).as_dict()
    return metrics


def _task_of(run: str | Path) -> str:
    """The task a run folder was trained for, from its config.yaml."""
    cfg = yaml.safe_load(run_file(run, "config.yaml").read_text()) or {}
    return cfg.get("task", "auto")


def test(run: str | Path) -> dict:
    """Evaluate the locked test split once development is over; every use is recorded in test_log.jsonl."""
    if _task_of(run) in ("detect", "instance"):
        from cnnkit.recipes.detection import evaluate_detector

        metrics = evaluate_detector(run, "test")
    elif _task_of(run) == "segment":
        from cnnkit.recipes.segmentation import evaluate_segmenter

        metrics = evaluate_segmenter(run, "test")
    else:
        metrics = _split_metrics(run, "test")
    uses = record_test_use(Path(run), metrics)
    if uses:
        warnings.warn(
            f"the test set of {run} has been used {uses} time(s) before; a decision taken on it is no longer "
            "an unbiased estimate (never use the test set before all development is over)", stacklevel=2)
    return {**metrics, "previous_uses": uses}


def _expand_inputs(inputs: list[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q))
            if not found:
                raise CnnkitError(f"no image files in folder {p}")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise CnnkitError(f"image not found: {p}")
    return paths


def _prediction(card: ModelCard, path: Path, output: torch.Tensor, k: int, threshold: float) -> dict:
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


@torch.inference_mode()
def predict(run: str | Path, inputs: list[str | Path], top_k: int = 5, batch_size: int = 64,
            threshold: float = 0.5, score_threshold: float | None = None, nms_iou: float | None = None,
            out: str | Path | None = None) -> list[dict]:
    """Each image's prediction (see `_prediction`: top-k classes, labels above `threshold`, or values); needs
    only RUN/model.pt. Unreadable images are skipped with a warning; images are decoded one batch at a time,
    so a large folder fits in memory. RUN may also name pretrained weights, e.g. efficientnet_lite0.imagenet:
    their own classes (ImageNet's) and preprocessing, no run folder needed.
    A detector's run gives COCO-style results instead, one dict per box (cnnkit.recipes.detection.predict_detector):
    `score_threshold` and `nms_iou` change its post-processing, and `out` gets the images with boxes drawn."""
    model, card = load_model(run) if Path(run).exists() else pretrained_model(str(run))
    if card.problem in ("detect", "instance"):
        from cnnkit.recipes.detection import predict_detector

        return predict_detector(model, card, _expand_inputs(inputs), score_thresh=score_threshold,
                                nms_thresh=nms_iou, out=out)
    if card.problem == "segment":
        from cnnkit.recipes.segmentation import predict_segmenter

        return predict_segmenter(model, card, _expand_inputs(inputs), out=out)
    with warnings.catch_warnings():  # a mismatched loss was reported when the run trained
        warnings.simplefilter("ignore", UserWarning)
        task = card.make_task(model)
    k = max(1, min(top_k, len(card.classes)))
    results, skipped = [], []
    for batch_paths, images in image_batches(_expand_inputs(inputs), card, batch_size, skipped):
        outputs = task.predict_step(images)  # (n, K) probabilities, or (n, D) values
        results += [_prediction(card, p, out, k, threshold) for p, out in zip(batch_paths, outputs)]
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:5])}", stacklevel=2)
    if not results:
        raise CnnkitError("no readable images to predict")
    return results


def embed(run: str | Path, inputs: list[str | Path], out: str | Path, batch_size: int = 64,
          layer: str | None = None) -> Path:
    """Write each image's feature vector to `out` (.npy + .paths.txt, .npz or .parquet) and return its path:
    the input of the last linear layer, or module `layer`'s pooled output (see cnnkit.export.embed). RUN is a run
    folder or pretrained weights such as efficientnet_lite0.imagenet, as for `predict`."""
    from cnnkit.export import embed as embedding

    embedding.check_format(out)
    paths = _expand_inputs(inputs)
    model, card = load_model(run) if Path(run).exists() else pretrained_model(str(run))
    if card.problem in ("detect", "instance", "segment"):
        raise CnnkitError(f"embed takes a classifier's run or weights; {run} is a {card.problem} run (embed its "
                          "backbone's weights, e.g. efficientnet_lite0.imagenet, instead)")
    return embedding.embed(model, card, paths, out, batch_size=batch_size, layer=layer)


def demo_config(out: str | None = None) -> Config:
    """LeNet-5 on scikit-learn's digits (upsampled to 32×32), with a little rotation and shift."""
    return load_config(overrides={
        "data": {"source": "digits", "augment": "none", "augment_options": {"rotation": 10.0, "translate": 0.1}},
        "model": {"name": "lenet5"},
        "train": {"epochs": 30, "batch_size": 32, "optimizer": "adam", "lr": 2e-3, "schedule": "cosine"},
        "out": out,
    })


def augment_preview(source: str, out: str | Path, preset: str = "standard", n: int = 16, size: int | None = None,
                    seed: int = 0, task: str = "classify", **options) -> Path:
    """A grid PNG: each row one training image, then augmented copies of it; with task "segment", each picture
    beside its mask (cnnkit.recipes.segmentation.augment_preview)."""
    if task == "segment":
        from cnnkit.recipes.segmentation import augment_preview as segmentation_preview

        return segmentation_preview(source, out, preset, n=n, size=size or 128, seed=seed)
    from cnnkit.data.transforms import FitSize, augment_ops
    from torchvision.utils import save_image

    src = open_source(source)
    aug = make_augment(preset, **options)
    size = size or 96
    channels = 3 if src.arrays is None or src.arrays.shape[1] == 3 else 1
    ops = augment_ops(aug, size, channels)
    from torchvision.transforms import v2

    pipeline = v2.Compose(ops) if ops else v2.Identity()
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    rows = []
    for j in rng.choice(len(src), size=min(n, len(src)), replace=False):
        base = FitSize(size)(src.load(int(j), channels))
        rows += [base] + [pipeline(base) for _ in range(7)]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_image(torch.stack(rows).float() / 255.0, out, nrow=8, padding=2)
    return out


def models_table(task: str | None = None, bench: bool = False, budget_s: float = 90.0,
                 threads: int | None = None) -> list[dict]:
    """The zoo as rows {"name", "task", "paper", "input_size", "num_classes", "params", "depth", "size_mb",
    "gflops"}; `bench` adds "latency_ms_b1" and "latency_ms_b32" (CPU ms per image) within `budget_s`."""
    from cnnkit.diagnose.zoo import models_table as table

    return table(task=task, bench=bench, budget_s=budget_s, threads=threads)


def inspect_model(target, input_size=None, **options) -> dict:
    """Per-layer shapes, parameters, FLOPs and receptive fields of a model name, run folder or module;
    see cnnkit.diagnose.inspect.inspect_model for the keys."""
    from cnnkit.diagnose.inspect import inspect_model as anatomy

    return anatomy(target, input_size, **options)


def inspect_kernels(target: str | Path, out: str | Path | None = None) -> Path:
    """The first conv layer's kernels of a run (or a model name: random weights) as a PNG grid."""
    from cnnkit.diagnose.pictures import save_kernels

    return save_kernels(target, out)


def inspect_feature_maps(target: str | Path, image: str | Path, layer: str, out: str | Path | None = None) -> Path:
    """The feature maps of module `layer` for one image, preprocessed as the run's model card says, as a PNG."""
    from cnnkit.diagnose.pictures import save_feature_maps

    return save_feature_maps(target, image, layer, out)


def transfer_compare(cfg: Config, strategies: list[str] | str | None = None, out: str | Path | None = None):
    """Train `cfg` once per transfer strategy (default: cnnkit.experiments.compare.DEFAULT_STRATEGIES, with the "scratch"
    baseline) on the same split and budget, into OUT/<strategy>; returns a cnnkit.experiments.compare.CompareResult whose
    rows hold val accuracy, training time and trainable parameters, also written to OUT/compare.{json,csv,png}."""
    from cnnkit.experiments.compare import compare_strategies

    return compare_strategies(cfg, strategies, out)


def lr_find(cfg: Config, steps: int = 100, out: str | Path | None = None, **options):
    """The learning-rate range test on the training split of `cfg` (Smith 2017); see cnnkit.engine.lr_find.
    Returns an LRFindResult (lrs, smoothed losses, suggestion); writes the plot to `out` when given."""
    from cnnkit.engine.lr_find import lr_find_for_config

    return lr_find_for_config(cfg, steps=steps, out=out, **options)


def _check_sparsities(sparsities: list[float]) -> list[float]:
    amounts = list(dict.fromkeys(float(s) for s in sparsities))  # in order, each once
    if not amounts:
        raise CnnkitError("give at least one sparsity, e.g. --sparsity 0.5,0.8,0.9")
    for s in amounts:
        if not 0.0 <= s < 1.0:
            raise CnnkitError(f"sparsity must be in [0, 1) (the fraction of weights set to zero), got {s:g}")
    return amounts


def _finetune(model: torch.nn.Module, cfg: Config, card: ModelCard, source, split: dict, epochs: int,
              folder: Path) -> float | None:
    """Train the pruned `model` for `epochs` epochs as RUN's config says (the masks keep the zeros), logging to
    folder/history.csv; the last epoch's weights are kept (no selection on val). Returns the val accuracy before."""
    cfg = replace(cfg, train=replace(cfg.train, epochs=epochs, patience=None))
    train_loader = run_loader(source, split["train"], card, cfg, train=True)
    val_loader = run_loader(source, split["val"], card, cfg, train=False)
    trainer = build_trainer(cfg, card, source.labels[split["train"]], len(train_loader), folder, model=model)
    trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, ModelCheckpoint)]
    before = trainer.evaluate(val_loader).get("accuracy")
    trainer.fit(train_loader, val_loader)
    if trainer.interrupted:
        raise KeyboardInterrupt
    return before


def prune(run: str | Path, sparsities: list[float], scope: str = "global", finetune_epochs: int = 0,
          out: str | Path | None = None) -> list[dict]:
    """Magnitude pruning of RUN's model (L1, unstructured, the Conv/Linear weights; see cnnkit.models.prune): for each
    sparsity, RUN's model is pruned (`scope` "global" ranks all weights together, "layer" prunes each layer by
    the same fraction), fine-tuned `finetune_epochs` epochs on RUN's train split with RUN's config (pruned
    weights stay zero), saved as the run folder OUT/s<percent> (OUT defaults to RUN/pruned; `evaluate` and
    `predict` read it) and evaluated on the val split, never on test. Rows {"sparsity_target", "sparsity"
    (measured), "val_accuracy", "val_loss", "val_accuracy_before_ft", "run"}, also written to OUT/prune.json."""
    amounts = _check_sparsities(sparsities)
    if scope not in SCOPES:
        raise CnnkitError(f"unknown pruning scope {scope!r}{did_you_mean(scope, SCOPES)}")
    if finetune_epochs < 0:
        raise CnnkitError(f"--finetune-epochs must be 0 or more, got {finetune_epochs}")
    run = Path(run)
    base = evaluate(run, "val", verdict=False)  # a missing run, a non-classifier or an empty val split fails here
    if "accuracy" not in base:
        raise CnnkitError(f"prune reports val accuracy, which the {load_model(run)[1].task} run {run} has not")
    cfg = config_from_dict(yaml.safe_load(run_file(run, "config.yaml").read_text()))
    record = json.loads(run_file(run, "split.json").read_text())
    source = open_source(cfg.data.source, cfg.data.max_bad_fraction)
    split = {name: indices_from_record(source, record, name) for name in ("train", "val")}
    out = Path(out) if out else run / "pruned"
    rows = []
    for amount in amounts:
        model, card = load_model(run)  # a fresh copy of RUN's model for each sparsity
        folder = out / f"s{amount * 100:g}"
        folder.mkdir(parents=True, exist_ok=True)
        prune_model(model, amount, scope=scope)
        before = _finetune(model, cfg, card, source, split, finetune_epochs, folder) if finetune_epochs else None
        make_permanent(model)  # plain `weight` keys: load_model reads it like any run's model
        save_model(folder / "model.pt", model, card)
        write_split(folder / "split.json", record)
        save_config(replace(cfg, out=str(folder)), folder / "config.yaml")
        val = evaluate(folder, "val", verdict=False)
        rows.append({"sparsity_target": amount, "sparsity": sparsity(model)[0], "val_accuracy": val["accuracy"],
                     "val_loss": val["loss"], "val_accuracy_before_ft": val["accuracy"] if before is None else before,
                     "run": str(folder)})
    report = {"run": str(run), "scope": scope, "finetune_epochs": finetune_epochs,
              "unpruned": {"val_accuracy": base["accuracy"], "val_loss": base["loss"]}, "rows": rows}
    (out / "prune.json").write_text(json.dumps(report, indent=2) + "\n")
    return rows


def convert(src: str | Path, to: str, out: str | Path, images: str | Path | None = None,
            policy: dict | str | None = None) -> Path:
    """Detection annotations SRC (COCO .json, VOC / YOLO / Penn-Fudan folder, synthetic-shapes) → format `to`
    (coco | voc | yolo) at OUT, images included, after the checks of cnnkit.data.detection.annotations.validate
    (`policy`: 'outside=drop,...'). Returns the written .json file (COCO) or folder."""
    from cnnkit.data.detection.source import convert as convert_annotations

    return convert_annotations(src, to, out, images=images, policy=policy)


def check_annotations(src: str | Path, images: str | Path | None = None, policy: dict | str | None = None):
    """Read and check detection annotations SRC, writing nothing; returns the ValidationReport."""
    from cnnkit.data.detection.source import check_annotations as check

    return check(src, images=images, policy=policy)


def report(run: str | Path) -> Path:
    """Write RUN/report.html, one self-contained page (every picture inlined, no network), and return its
    path; see cnnkit.diagnose.report."""
    from cnnkit.diagnose.report import write_report

    return write_report(run)


def diagnose(run: str | Path, data_curve: list[float] | None = None, landscape: bool = False,
             gradcam: bool = False, epochs: int | None = None, budget_s: float = 60.0) -> dict:
    """Diagnostic plots of RUN, all under RUN/plots: always the learning curves (redrawn from history.csv, the
    learning rate on a second axis); with `data_curve` (percentages), the learning curve by data size (see
    cnnkit.experiments.datacurve; `epochs` per subset, default RUN's); with `landscape`, Li et al.'s loss landscape
    within `budget_s` seconds (cnnkit.diagnose.landscape); with `gradcam`, Grad-CAM heat maps. Returns
    {"run", "plots": {name: path}, "best_epoch", "data_curve": {"rows", "reading"}, "landscape": {...}}."""
    from cnnkit.diagnose.curves import best_epoch, plot_learning_curves, read_history
    from cnnkit.experiments.datacurve import check_percents

    percents = check_percents(data_curve) if data_curve is not None else None
    if epochs is not None and percents is None:
        raise CnnkitError("--epochs sets the training of each --data-curve subset; give --data-curve too")
    if not budget_s > 0:
        raise CnnkitError(f"the time budget must be positive seconds, got {budget_s:g}")
    run = Path(run)
    run_file(run, "model.pt")  # a missing run fails here, before any work
    result: dict = {"run": str(run), "plots": {}}
    if (run / "history.csv").is_file() and (history := read_history(run / "history.csv")):
        result["plots"]["learning_curves"] = str(plot_learning_curves(history, run / "plots" / "learning_curves.png"))
        result["best_epoch"] = best_epoch(history)
    if percents is not None:
        from cnnkit.experiments.datacurve import data_curve as measure_data_curve, read_data_curve

        rows = measure_data_curve(run, percents, epochs=epochs)
        result["data_curve"] = {"rows": rows, "reading": read_data_curve(rows)}
        result["plots"]["data_curve"] = str(run / "plots" / "data_curve.png")
    if landscape:
        from cnnkit.diagnose.landscape import loss_landscape

        result["landscape"] = loss_landscape(run, budget_s=budget_s)
        result["plots"].update(result["landscape"]["plots"])
    if gradcam:
        try:
            from cnnkit.diagnose.gradcam import plot_gradcam
        except ImportError:
            raise CnnkitError("Grad-CAM is not available in this cnnkit (cnnkit.diagnose.gradcam is missing)") from None
        result["plots"]["gradcam"] = str(plot_gradcam(run, run / "plots" / "gradcam.png"))
    return result
