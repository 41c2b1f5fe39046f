"""A detection (or instance segmentation) run on its val split, for report.html: COCO metrics, the
precision/recall curves, the error breakdown, AP per class, and a grid of val images with the predicted boxes
(red) over the true ones (green).

    a = detection_analysis("runs/boxes", "runs/boxes/plots")
    a["metrics"]["map"], a["per_class"], a["errors"], a["paths"]["pr_curves"], a["paths"]["detections"]

The pieces (`open_detection_run`, `detections`, `score_detections`, `draw_boxes`) are small enough for a recipe
to reuse; nothing here imports a recipe or the api.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.runs.card import ModelCard
from cnnkit.runs.folder import open_split

TRUE_COLOUR, PREDICTED_COLOUR = "lime", "red"
SHOWN_SCORE = 0.3  # detections drawn from this score on (at most SHOWN_MAX per image, best first)
SHOWN_MAX = 20
DRAWN_SIZE = 256  # smaller pictures are enlarged (nearest, an integer factor) so the labels stay readable
MASK_COLOURS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def open_source(cfg: Config):
    """The run's DetectionSource, as its config names it (with its masks checked for an instance run)."""
    from cnnkit.data.detection.source import open_detection_source

    source = open_detection_source(cfg.data.source, images=cfg.data.images)
    if cfg.task == "instance":
        source.require_masks()
    return source


def loader_for(cfg: Config, card: ModelCard, source, indices, batch_size: int | None = None):
    """Val-style batches of `indices`: letterboxed to the card's size, no augmentation, in order."""
    from cnnkit.data.detection.loader import make_detection_loader

    return make_detection_loader(source, indices, size=card.input_size[1], batch_size=batch_size or
                                 cfg.train.batch_size, train=False, seed=cfg.train.seed,
                                 masks=card.problem == "instance")


def _plain(d: dict) -> dict:
    return {k: d[k].detach().cpu() for k in ("boxes", "scores", "labels") if k in d}


@torch.inference_mode()
def detections(model: torch.nn.Module, loader, problem: str = "detect", keep: int = 0
               ) -> tuple[list[dict], list[dict], list[tuple]]:
    """(targets, predictions, kept) per image of `loader`, in network pixels, on the CPU. For "instance" the
    targets and predictions carry their masks as COCO RLEs ("rles"). `kept` holds the first `keep` images as
    (uint8 image (3, S, S), target, raw prediction) for drawing."""
    from cnnkit.tasks.detection import with_rles

    model.eval()
    targets, predictions, kept = [], [], []
    for batch in loader:
        found = model(batch.images)  # eval mode: one dict per image
        for image, target, prediction in zip(batch.images, batch.targets, found):
            if len(kept) < keep:
                kept.append((image.mul(255).round().clamp(0, 255).to(torch.uint8), target, prediction))
            if problem == "instance":
                targets.append({k: v for k, v in with_rles(target).items() if k in ("boxes", "labels", "rles")})
                predictions.append(with_rles(prediction))
            else:
                targets.append({"boxes": target["boxes"], "labels": target["labels"]})
                predictions.append(_plain(prediction))
    return targets, predictions, kept


def score_detections(targets: list[dict], predictions: list[dict], classes: list[str], problem: str = "detect"
                     ) -> tuple[dict, dict]:
    """(COCO result, error breakdown) of per-image targets and predictions: evaluate_detections (or, for
    "instance", evaluate_instances: box and mask_ metrics) and error_breakdown on the boxes."""
    from cnnkit.metrics.detection import evaluate_detections, evaluate_instances, to_coco
    from cnnkit.metrics.detection_errors import error_breakdown

    if problem == "instance":
        result = evaluate_instances(targets, predictions, classes)
        targets = [{k: v for k, v in t.items() if k != "rles"} for t in targets]
        predictions = [{k: v for k, v in p.items() if k != "rles"} for p in predictions]
    else:
        result = evaluate_detections(targets, predictions, classes)
    return result, error_breakdown(*to_coco(targets, predictions, classes))


def _shown(prediction: dict) -> torch.Tensor:
    """Indices of the detections drawn: score ≥ SHOWN_SCORE, best first, at most SHOWN_MAX."""
    scores = prediction["scores"].detach().cpu()
    order = torch.argsort(scores, descending=True)
    return order[scores[order] >= SHOWN_SCORE][:SHOWN_MAX]


def draw_boxes(image: torch.Tensor, target: dict | None, prediction: dict | None, classes: list[str]
               ) -> torch.Tensor:
    """uint8 (3, H, W): the true boxes in green, then the predicted ones in red with class and score (and, for
    an instance prediction, its masks blended in)."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    k = max(1, DRAWN_SIZE // max(image.shape[-2:]))
    drawn = image.repeat_interleave(k, -2).repeat_interleave(k, -1)
    if prediction is not None and "masks" in prediction:
        keep = _shown(prediction)
        masks = prediction["masks"].detach().cpu()[keep][:, 0] > 0.5  # (D, H, W)
        masks = masks.repeat_interleave(k, -2).repeat_interleave(k, -1)
        if len(masks):
            colours = [MASK_COLOURS[i % len(MASK_COLOURS)] for i in range(len(masks))]
            drawn = draw_segmentation_masks(drawn, masks, alpha=0.4, colors=colours)
    if target is not None and len(target["boxes"]):
        drawn = draw_bounding_boxes(drawn, target["boxes"].float() * k, colors=TRUE_COLOUR, width=2)
    if prediction is not None:
        keep = _shown(prediction)
        if len(keep):
            labels = [f"{_name(classes, int(c))} {float(s):.2f}"
                      for c, s in zip(prediction["labels"][keep], prediction["scores"][keep])]
            drawn = draw_bounding_boxes(drawn, prediction["boxes"].detach().cpu()[keep].float() * k, labels=labels,
                                        colors=PREDICTED_COLOUR, width=2)
    return drawn


def _name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


def save_grid(pictures: list[torch.Tensor], path: Path, per_row: int = 4) -> Path:
    """uint8 (3, h, w) pictures of any sizes as one PNG grid."""
    from torchvision.utils import save_image

    height, width = max(p.shape[-2] for p in pictures), max(p.shape[-1] for p in pictures)
    padded = torch.zeros(len(pictures), 3, height, width, dtype=torch.uint8)
    for k, p in enumerate(pictures):
        padded[k, :, :p.shape[-2], :p.shape[-1]] = p
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(padded.float() / 255.0, path, nrow=per_row, padding=2)
    return path


def _error_rows(errors: dict) -> dict:
    return {k: v for k, v in errors.items() if not isinstance(v, dict)}


def detection_analysis(run: str | Path, out_dir: str | Path, split: str = "val", n: int = 8) -> dict:
    """COCO metrics of RUN's model on `split`, the precision/recall curves and the first `n` images with their
    boxes drawn (PNGs in `out_dir`), AP per class and the error breakdown (totals and per class)."""
    from cnnkit.metrics.detection import plot_pr_curves

    model, card, cfg, source, indices = open_split(run, split, open_source)
    targets, predictions, kept = detections(model, loader_for(cfg, card, source, indices), card.problem, keep=n)
    result, errors = score_detections(targets, predictions, card.classes, card.problem)
    out = Path(out_dir)
    paths = {"pr_curves": plot_pr_curves(result, out / f"pr_curves_{split}.png")}
    if card.problem == "instance":
        paths["mask_pr_curves"] = plot_pr_curves(
            {"pr_curves": result["mask_pr_curves"], "per_class": result["mask_per_class"],
             "map50": result["mask_map50"]}, out / f"mask_pr_curves_{split}.png")
    paths["detections"] = save_grid([draw_boxes(image, target, prediction, card.classes)
                                     for image, target, prediction in kept], out / f"detections_{split}.png")
    per_class = {name: {**ap, **({f"mask_{k}": v for k, v in result["mask_per_class"][name].items()}
                                 if card.problem == "instance" else {})}
                 for name, ap in result["per_class"].items()}
    metrics = {k: v for k, v in result.items() if not isinstance(v, dict)}
    return {"split": split, "count": int(len(indices)), "problem": card.problem, "metrics": metrics,
            "per_class": per_class, "errors": _error_rows(errors), "errors_per_class": errors.get("per_class", {}),
            "paths": paths}


def ground_truth_grid(cfg: Config, card: ModelCard, indices, path: Path, n: int = 8) -> Path:
    """The first `n` of `indices` as the detector sees them (letterboxed, no augmentation), their true boxes
    drawn in green with the class names: what the data section of a detection run shows."""
    from torchvision.utils import draw_bounding_boxes

    source = open_source(cfg)
    batch = next(iter(loader_for(cfg, card, source, np.asarray(indices)[:n], batch_size=n)))
    pictures = []
    for image, target in zip(batch.images, batch.targets):
        image = image.mul(255).round().clamp(0, 255).to(torch.uint8)
        k = max(1, DRAWN_SIZE // max(image.shape[-2:]))
        image = image.repeat_interleave(k, -2).repeat_interleave(k, -1)
        labels = [_name(card.classes, int(c)) for c in target["labels"]]
        pictures.append(draw_bounding_boxes(image, target["boxes"].float() * k, labels=labels, colors=TRUE_COLOUR,
                                            width=2) if len(labels) else image)
    return save_grid(pictures, path)
