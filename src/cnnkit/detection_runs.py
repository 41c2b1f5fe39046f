"""`--task detect`: train, evaluate and predict with a detector, in the same run folder as every other task.

    cnnkit train --task detect --data synthetic-shapes:objects=3 --model yolo --out runs/boxes
    cnnkit evaluate runs/boxes --json        # map, map50, map75, per_class, errors
    cnnkit predict runs/boxes photo.jpg --json --out drawn/   # COCO results; images with the boxes drawn

The data is a cnnkit.data.detection.DetectionSource (COCO, VOC, YOLO, Penn-Fudan or built-in); the split is
by image, seeded, recorded in split.json (the test share locked, as for classification). The model card says
`task: detect` and how images were fitted (letterbox to input_size); the detectors normalise inside.
"""
from __future__ import annotations

import inspect
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from cnnkit import optimizers, schedules
from cnnkit.config import Config, config_from_dict, save_config
from cnnkit.data.split import write_split
from cnnkit.data.detection_loader import FitDetection, fit_geometry, make_detection_loader, to_image_coordinates
from cnnkit.engine.callbacks import CSVLogger, EarlyStopping, ModelCheckpoint, ProgressBar, write_history
from cnnkit.engine.checkpoint import load_checkpoint
from cnnkit.engine.trainer import Trainer, seed_everything
from cnnkit.errors import CnnkitError
from cnnkit.registry import create_model, get_spec
from cnnkit.runs import ModelCard, new_run_dir, open_run, run_file, save_model
from cnnkit.tasks.detection import DetectionTask

log = logging.getLogger("cnnkit")
POSTPROCESS = ("score_thresh", "nms_thresh")


class _SplitView:
    """What make_split reads of a source: its length, labels to stratify on (none here), given splits."""

    def __init__(self, n: int):
        self.labels, self.presplit = np.zeros(n, dtype=np.int64), {}

    def __len__(self) -> int:
        return len(self.labels)


def _open(cfg: Config):
    from cnnkit.data.detection import open_detection_source

    return open_detection_source(cfg.data.source, images=cfg.data.images)


def _split(cfg: Config, source) -> dict[str, np.ndarray]:
    from cnnkit.data.split import make_split

    return make_split(_SplitView(len(source)), cfg.data.val, cfg.data.test, cfg.train.seed)


def _record(source, split: dict, cfg: Config) -> dict:
    return {"task": "detect", "seed": cfg.train.seed, "fractions": {"val": cfg.data.val, "test": cfg.data.test},
            "count": len(source), "splits": {k: [int(i) for i in v] for k, v in split.items()}}


def _card(cfg: Config, source) -> ModelCard:
    spec = get_spec(cfg.model.name)
    if spec.task != "detect":
        raise CnnkitError(f"{cfg.model.name} is a {spec.task} model; --task detect needs a detector "
                          "(see `cnnkit models --task detect`)")
    size = cfg.data.image_size or spec.input_size[1]
    card = ModelCard(cfg.model.name, "detect", list(source.classes), [3, size, size], [0.0] * 3, [1.0] * 3,
                     resize="letterbox", options=dict(cfg.model.options))
    card.options = _sized_options(card)  # so predict rebuilds the detector as it trained
    return card


def _sized_options(card: ModelCard) -> dict:
    """The card's model options, and the input size for the detectors' own resizing (min_size/max_size of the
    R-CNN line and SSD, image_size of YOLO) unless given: the loader already letterboxed to that size."""
    options = dict(card.options or {})
    accepted = inspect.signature(get_spec(card.architecture).fn).parameters
    size = card.input_size[1]
    for key in ("min_size", "max_size", "image_size"):
        if key in accepted:
            options.setdefault(key, size)
    return options


def _model(card: ModelCard, cfg: Config | None = None) -> torch.nn.Module:
    options = dict(card.options or {})
    if cfg is not None and cfg.model.weights:
        return create_model(card.architecture, num_classes=len(card.classes), weights=cfg.model.weights, **options)
    return create_model(card.architecture, num_classes=len(card.classes), **options)


def _loaders(cfg: Config, source, split: dict, card: ModelCard):
    size = card.input_size[1]
    common = {"size": size, "batch_size": cfg.train.batch_size, "workers": cfg.data.workers, "seed": cfg.train.seed}
    train = make_detection_loader(source, split["train"], train=True, augment=cfg.data.augment, **common)
    val = make_detection_loader(source, split["val"], train=False, **common) if len(split["val"]) else None
    return train, val


def _trainer(cfg: Config, card: ModelCard, model: torch.nn.Module, steps: int, run_dir: Path) -> Trainer:
    seed_everything(cfg.train.seed)
    t = cfg.train
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = optimizers.get(t.optimizer, params, lr=t.lr, weight_decay=t.weight_decay, **t.optimizer_options)
    scheduler = schedules.get(t.schedule, optimizer, steps_per_epoch=steps, epochs=t.epochs, interval="batch",
                              warmup=round(t.warmup_epochs * steps), **t.schedule_options)
    monitor = "val_map" if t.monitor == "val_loss" else t.monitor  # detectors have no val loss in eval mode
    callbacks = [EarlyStopping(monitor, t.patience, t.min_delta, restore_best=t.restore_best)] if t.patience else []
    callbacks += [ModelCheckpoint(run_dir / "checkpoints", monitor="val_map"), CSVLogger(run_dir / "history.csv"),
                  ProgressBar()]
    task = DetectionTask(model, t.loss, classes=card.classes, label_smoothing=t.label_smoothing, mixup=t.mixup,
                         cutmix=t.cutmix, adversarial=t.adversarial, l1=t.l1, l2=t.l2)
    return Trainer(task, optimizer, epochs=t.epochs, scheduler=scheduler, callbacks=callbacks, device=t.device,
                   amp=t.amp, grad_clip=t.grad_clip, seed=t.seed)


def train_detector(cfg: Config, run_dir: Path | None = None, state: dict | None = None):
    """Train a detector as `cfg` says (cfg.task == "detect"); with `state`, resume RUN from its last.pt."""
    from cnnkit.api import TrainResult

    source = _open(cfg)
    if state is None:
        split = _split(cfg, source)
        card = _card(cfg, source)
        run_dir = Path(cfg.out) if cfg.out else new_run_dir(f"{cfg.model.name}-{source.name}")
    else:
        record = json.loads(run_file(run_dir, "split.json").read_text())
        split = {k: np.asarray(v, dtype=np.int64) for k, v in record["splits"].items()}
        card = ModelCard(**state["meta"]["card"])
    seed_everything(cfg.train.seed)
    model = _model(card, cfg if state is None else None)
    train_loader, val_loader = _loaders(cfg, source, split, card)
    trainer = _trainer(cfg, card, model, len(train_loader), run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if state is None:
        write_split(run_dir / "split.json", _record(source, split, cfg))
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
    val = {}
    if val_loader is not None and not trainer.interrupted:
        val = _metrics(trainer.model, card, val_loader, cfg.train.device)
    if trainer.history:
        from cnnkit.diagnose.curves import plot_learning_curves

        plot_learning_curves(trainer.history, run_dir / "plots" / "learning_curves.png")
    return TrainResult(run_dir, trainer.history, val, trainer.interrupted)


@torch.inference_mode()
def _detections(model: torch.nn.Module, loader, device: str = "auto") -> tuple[list[dict], list[dict]]:
    """(targets, predictions) per image of `loader`, in network pixels, on the CPU."""
    trainer = Trainer(DetectionTask(model), None, epochs=1, device=device)
    trainer.model.eval()
    targets, predictions = [], []
    for batch in loader:
        predictions += trainer.task.predict_step(batch.images.to(trainer.device))
        targets += [{"boxes": t["boxes"], "labels": t["labels"]} for t in batch.targets]
    return targets, predictions


def _metrics(model: torch.nn.Module, card: ModelCard, loader, device: str = "auto", plot: Path | None = None) -> dict:
    """COCO metrics and the error breakdown's totals; with `plot`, the precision/recall curves there (PNG)."""
    from cnnkit.detection_metrics import error_breakdown, evaluate_detections, plot_pr_curves, to_coco

    targets, predictions = _detections(model, loader, device)
    result = evaluate_detections(targets, predictions, card.classes)
    if plot is not None:
        plot_pr_curves(result, plot)
    shown = {k: v for k, v in result.items() if k != "pr_curves"}
    errors = error_breakdown(*to_coco(targets, predictions, card.classes))
    shown["errors"] = {k: v for k, v in errors.items() if not isinstance(v, dict)}  # the totals
    return shown


def evaluate_detector(run: str | Path, split: str = "val") -> dict:
    """COCO metrics of RUN's detector on its train or val split (the test split through `cnnkit test`)."""
    run = Path(run)
    model, card, cfg, record = open_run(run)
    cfg = config_from_dict(cfg)
    if split not in record["splits"]:
        raise CnnkitError(f"unknown split {split!r}; choose train, val or test")
    indices = np.asarray(record["splits"][split], dtype=np.int64)
    if len(indices) == 0:
        raise CnnkitError(f"the {split} split of {run} is empty")
    source = _open(cfg)
    if len(source) != record["count"]:
        raise CnnkitError(f"{cfg.data.source} holds {len(source)} images, but {run} was split on {record['count']}; "
                          "the data changed since training")
    loader = make_detection_loader(source, indices, size=card.input_size[1], batch_size=cfg.train.batch_size,
                                   train=False, seed=cfg.train.seed)
    plot = run / "plots" / f"pr_curves_{split}.png"
    plot.parent.mkdir(parents=True, exist_ok=True)
    return {"split": split, "count": int(len(indices)), **_metrics(model, card, loader, cfg.train.device, plot)}


def set_postprocess(model: torch.nn.Module, score_thresh: float | None, nms_thresh: float | None) -> None:
    options = {k: v for k, v in zip(POSTPROCESS, (score_thresh, nms_thresh)) if v is not None}
    for name, value in options.items():
        if not 0 <= value <= 1:
            raise CnnkitError(f"the {name.replace('_', ' ')}old must be in [0, 1], got {value}")
    if options:
        model.set_postprocess(**options)


@torch.inference_mode()
def predict_detector(model: torch.nn.Module, card: ModelCard, paths: list[Path], *, score_thresh: float | None = None,
                     nms_thresh: float | None = None, out: str | Path | None = None) -> list[dict]:
    """COCO-style results, one dict per detection: path, label, category_id (1-based, as COCO), bbox [x, y, w, h]
    in the image's pixels, score. With `out`, each image is saved there with its boxes drawn (NAME_boxes.png)."""
    from cnnkit.data.images import BadImage, read_image

    set_postprocess(model, score_thresh, nms_thresh)
    model.eval()
    size, fit = card.input_size[1], FitDetection(card.input_size[1], "letterbox")
    results, skipped = [], []
    for path in paths:
        try:
            image = read_image(path, 3)  # uint8 (3, H, W)
        except BadImage as err:
            skipped.append(f"{path} ({err})")
            continue
        h, w = image.shape[-2:]
        x = fit(image).float().div(255).unsqueeze(0)  # (1, 3, S, S)
        (_, _), scale, pad = fit_geometry(h, w, size, "letterbox")
        found = model(x)[0]
        boxes = to_image_coordinates(found["boxes"].float(), torch.tensor(scale), torch.tensor(pad), h, w)
        rows = [{"path": str(path), "label": card.classes[int(c)], "category_id": int(c) + 1,
                 "bbox": [round(float(b[0]), 2), round(float(b[1]), 2), round(float(b[2] - b[0]), 2),
                          round(float(b[3] - b[1]), 2)], "score": round(float(s), 5)}
                for b, s, c in zip(boxes, found["scores"], found["labels"])]
        results += rows
        if out is not None:
            _draw(image, boxes, rows, Path(out) / f"{Path(path).stem}_boxes.png")
    if skipped:
        import warnings

        warnings.warn(f"skipped {len(skipped)} unreadable image(s): {'; '.join(skipped[:5])}", stacklevel=2)
    if len(skipped) == len(paths):
        raise CnnkitError("no readable images to predict")
    return results


def _draw(image: torch.Tensor, boxes: torch.Tensor, rows: list[dict], path: Path) -> None:
    from torchvision.io import write_png
    from torchvision.utils import draw_bounding_boxes

    path.parent.mkdir(parents=True, exist_ok=True)
    labels = [f"{r['label']} {r['score']:.2f}" for r in rows]
    drawn = draw_bounding_boxes(image, boxes, labels=labels, colors="red", width=2) if rows else image
    tmp = path.with_name(f".{path.name}.tmp")
    write_png(drawn, str(tmp))
    tmp.replace(path)
