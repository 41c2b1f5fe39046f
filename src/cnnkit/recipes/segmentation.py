"""`--task segment`: train, evaluate and predict with a semantic segmentation model, in the same run folder as
every other task.

    cnnkit train --task segment --data synthetic-plants --model unet --out runs/plants
    cnnkit evaluate runs/plants --json        # miou, pixel_accuracy, per_class_iou, fw_iou, dice, ...
    cnnkit predict runs/plants photo.jpg --out masks/    # masks/photo_mask.png, masks/photo_overlay.png

The data is a cnnkit.data.segmentation.source.SegmentationSource (a folder of images/ + masks/, COCO, Penn-Fudan or
built-in); the split is by image, seeded, recorded in split.json (given train/val/test folders are kept). Images
are resized so their longer side is the card's input size; metrics are computed at that resolution, on every
pixel of the split (one confusion matrix), ignore_index pixels left out. Predictions go back to each image's
own size (bilinear logits, then arg-max).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.data.segmentation.draw import write_prediction
from cnnkit.data.segmentation.loader import loader_of
from cnnkit.data.segmentation.source import source_of
from cnnkit.engine.inference import fold_batch_norm, for_inference
from cnnkit.engine.trainer import Trainer
from cnnkit.errors import CnnkitError
from cnnkit.models.factory import create_model, get_spec
from cnnkit.recipes.base import Build, Context, Recipe
from cnnkit.recipes.by_image import index_record, index_split, read_index_split
from cnnkit.runs.card import ModelCard
from cnnkit.runs.inputs import readable_batches
from cnnkit.tasks.segmentation import SegmentationTask

CLASS_WEIGHT_SAMPLE = 64  # training masks counted for class_weight=balanced


def _split(cfg: Config, source) -> dict[str, np.ndarray]:
    """Given train/val/test folders kept (a missing val or test carved from train), else a seeded split."""
    split = index_split(cfg, source, source.presplit)
    if len(split["train"]) == 0:
        raise CnnkitError(f"{cfg.data.source} gives no training images")
    return split


def _encoder_weights(cfg: Config) -> str | None:
    """Named pretrained weights of the encoder (`--model-option backbone=efficientnet_lite0.imagenet`)."""
    from cnnkit.models.pretrained import lookup

    value = cfg.model.options.get("backbone")
    return value if isinstance(value, str) and lookup(value) is not None else None


def _card(cfg: Config, source, split: dict) -> ModelCard:
    from cnnkit.data.segmentation.loader import source_mean_std
    from cnnkit.models.pretrained import lookup

    spec = get_spec(cfg.model.name)
    if spec.task != "segment":
        raise CnnkitError(f"{cfg.model.name} is a {spec.task} model; --task segment needs a segmentation model "
                          "(see `cnnkit models --task segment`)")
    size = cfg.data.image_size or spec.input_size[1]
    encoder = _encoder_weights(cfg)
    if encoder is not None:  # a pretrained encoder keeps the normalisation it learnt with
        fields = lookup(encoder).card_fields()
        mean, std = list(fields["mean"]), list(fields["std"])
    else:
        mean, std = source_mean_std(source, split["train"])
    return ModelCard(cfg.model.name, "segment", list(source.classes), [3, size, size], list(mean), list(std),
                     resize="long_side", options=dict(cfg.model.options),
                     palette=[list(c) for c in source.palette], ignore_index=int(source.ignore_index))


def _model(card: ModelCard, weights: str | None = None) -> torch.nn.Module:
    return create_model(card.architecture, num_classes=len(card.classes), weights=weights, **(card.options or {}))


def _class_weight(cfg: Config, source, indices: np.ndarray, card: ModelCard) -> torch.Tensor | None:
    """class_weight=balanced: n / (K · n_c) over the pixels of (up to 64 of) the training masks."""
    if cfg.train.class_weight is None:
        return None
    if cfg.train.class_weight != "balanced":
        raise CnnkitError(f"class_weight must be 'balanced' or empty, got {cfg.train.class_weight!r}")
    k = len(card.classes)
    counts = np.zeros(k, dtype=np.float64)
    for i in indices[:CLASS_WEIGHT_SAMPLE]:
        mask = source.read(int(i))[1].numpy().ravel()
        counts += np.bincount(mask[mask < k], minlength=k)[:k]
    return torch.tensor(counts.sum() / (k * np.maximum(counts, 1)), dtype=torch.float32)


class SegmentationRecipe(Recipe):
    """--task segment: a class per pixel; mIoU, pixel accuracy, Dice ...; the verdict on 1 − mIoU; predictions as
    index masks and overlays at each image's own size."""

    name = "semantic segmentation"
    tasks = ("segment",)
    options = frozenset({"train.class_weight", "diagnose.alarm_patience", "diagnose.alarm_stop",
                         "diagnose.alarm_on"})
    report_sections = ("summary", "verdict", "curves", "alarm", "segmentation", "data", "timing", "model", "config")
    curve_metric = "miou"

    def open_source(self, cfg: Config) -> Any:
        return source_of(cfg)

    def new_split(self, cfg: Config, source: Any) -> tuple[dict[str, np.ndarray], dict]:
        split = _split(cfg, source)
        return split, index_record(cfg, source, split)

    def split_record(self, cfg: Config, source: Any, split: dict[str, np.ndarray]) -> dict:
        return index_record(cfg, source, split)

    def read_split(self, source: Any, record: dict, name: str) -> np.ndarray:
        return read_index_split(source, record, name)

    def loader(self, cfg: Config, source: Any, indices: np.ndarray, card: ModelCard, *, train: bool,
               dist: Any = None) -> Any:
        return loader_of(cfg, source, indices, card, train, dist)

    def card(self, cfg: Config, source: Any, split: dict) -> ModelCard:
        return _card(cfg, source, split)

    def model(self, cfg: Config, card: ModelCard, *, fresh: bool) -> torch.nn.Module:
        return _model(card, cfg.model.weights if fresh else None)

    def build(self, ctx: Context, model: torch.nn.Module) -> Build:
        cfg, card = ctx.cfg, ctx.card
        weight = _class_weight(cfg, ctx.source, ctx.split["train"], card)
        task = SegmentationTask(model, cfg.train.loss, num_classes=len(card.classes), class_weight=weight,
                                ignore_index=card.ignore_index)
        return Build(task)

    def metrics(self, model: torch.nn.Module, card: ModelCard, cfg: Config, loader: Any, *,
                boundary_f1: bool = False, precision: str = "auto") -> dict:
        return split_scores(model, card, loader, cfg.train.device, boundary=boundary_f1, precision=precision)

    def predict(self, model: torch.nn.Module, card: ModelCard, paths: list[Path], *,
                out: str | Path | None = None, batch_size: int = 8, precision: str = "auto") -> list[dict]:
        return predict_segmenter(model, card, paths, out=out, batch_size=batch_size, precision=precision)

    def augment_preview(self, source: str, out: str | Path, *, preset: str = "standard", n: int = 8,
                        size: int | None = None, seed: int = 0) -> Path:
        from cnnkit.data.segmentation.preview import augment_preview

        return augment_preview(source, out, preset, n=n, size=size or 128, seed=seed)


@torch.inference_mode()
def split_scores(model: torch.nn.Module, card: ModelCard, loader, device: str = "auto",
                 boundary: bool = False, precision: str = "auto") -> dict:
    """Loss, pixel accuracy, mean accuracy, mIoU, per-class IoU and Dice ({class: value}, None for a class in
    neither the masks nor the predictions), frequency-weighted IoU; with `boundary`, the mean boundary F1. The
    model runs with its batch norms folded, in `precision`; the scores come from fp32 logits."""
    from cnnkit.metrics.segmentation import ConfusionMatrix, boundary_f1

    task = SegmentationTask(fold_batch_norm(model), num_classes=len(card.classes), ignore_index=card.ignore_index)
    trainer = Trainer(task, None, epochs=1, device=device, precision=precision)
    trainer.model.eval()
    confusion, losses, pixels, bf = ConfusionMatrix(len(card.classes), card.ignore_index), 0.0, 0, []
    for batch in loader:
        batch = batch.to(trainer.device)
        with trainer.precision.autocast():
            logits = trainer.model(trainer.precision.input(batch.images)).float()  # (N, C, H, W)
        losses += float(task.loss(logits, batch.targets).sum())
        pixels += len(batch)
        predicted = logits.argmax(1).cpu()  # (N, H, W)
        confusion.update(predicted, batch.targets.cpu())
        if boundary:
            bf += [boundary_f1(p, t, num_classes=len(card.classes)) for p, t in zip(predicted, batch.targets.cpu())]
    scores = confusion.scores()
    tables = ("per_class_iou", "per_class_dice", "per_class_accuracy")
    named = {k: dict(zip(card.classes, scores[k])) for k in tables}
    result = {"loss": losses / max(pixels, 1), **{k: v for k, v in scores.items() if k not in named}, **named}
    if boundary:
        finite = [v for v in bf if np.isfinite(v)]  # an image of ignored pixels only has no boundary score
        result["boundary_f1"] = float(np.mean(finite)) if finite else None
    return result


@torch.inference_mode()
def predict_segmenter(model: torch.nn.Module, card: ModelCard, paths: list[Path], *, out: str | Path | None = None,
                      batch_size: int = 8, precision: str = "auto") -> list[dict]:
    """One dict per image: path, size [H, W], the share of pixels of each class; with `out`, NAME_mask.png
    (class indices, palette PNG) and NAME_overlay.png (the image with the classes' colours blended) there.
    Images are decoded by worker processes `batch_size` at a time; those of one batch fitted to the same shape
    go through the model (batch norms folded, in `precision`) together; the masks come from fp32 logits."""
    from cnnkit.data.segmentation.loader import fit_image

    if batch_size < 1:
        raise CnnkitError(f"--batch-size must be at least 1, got {batch_size}")
    model, mode = for_inference(model, precision)
    mean = torch.tensor(card.mean).view(3, 1, 1)
    std = torch.tensor(card.std).view(3, 1, 1)
    results = []
    for kept, images in readable_batches(paths, batch_size):  # uint8 (3, H, W) each
        inputs = [(fit_image(image, card.input_size[1]).float().div(255) - mean) / std for image in images]
        by_shape: dict[tuple, list[int]] = {}
        for i, x in enumerate(inputs):
            by_shape.setdefault(tuple(x.shape), []).append(i)
        logits: list[torch.Tensor] = [torch.empty(0)] * len(inputs)
        for group in by_shape.values():
            with mode.autocast():
                found = model(mode.input(torch.stack([inputs[i] for i in group]).to(mode.device)))
            for i, y in zip(group, found.float().cpu()):
                logits[i] = y  # (C, h', w')
        results += [_segmented(path, image, y, card, out) for path, image, y in zip(kept, images, logits)]
    return results


def _segmented(path: Path, image: torch.Tensor, logits: torch.Tensor, card: ModelCard, out: str | Path | None
               ) -> dict:
    """One image's row (see predict_segmenter) from its fp32 logits (C, h', w') at the network's size."""
    h, w = image.shape[-2:]
    logits = torch.nn.functional.interpolate(logits[None], size=(h, w), mode="bilinear", align_corners=False)
    mask = logits[0].argmax(0).to(torch.uint8)  # (H, W)
    counts = torch.bincount(mask.flatten().long(), minlength=len(card.classes)).tolist()
    row = {"path": str(path), "size": [h, w],
           "fractions": {c: round(n / (h * w), 6) for c, n in zip(card.classes, counts)}}
    if out is not None:
        row.update(write_prediction(image, mask, card, Path(out), Path(path).stem))
    return row
