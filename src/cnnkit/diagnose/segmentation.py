"""A segmentation run on its val split, for report.html: the pixel confusion matrix, IoU per class, and the
images it segments worst, each shown as the image, its labels and the prediction blended in the classes' colours.

    a = segmentation_analysis("runs/peanut", "runs/peanut/plots")
    a["scores"]["miou"], a["paths"]["confusion"], a["worst"]    # [{"index", "path", "miou"}, ...] worst first
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchvision.utils import save_image

from cnnkit.data.segmentation.draw import overlay, palette_of
from cnnkit.data.segmentation.loader import loader_of
from cnnkit.data.segmentation.source import source_of
from cnnkit.diagnose.classification import plot_confusion
from cnnkit.metrics.segmentation import ConfusionMatrix
from cnnkit.runs.folder import open_split


@torch.inference_mode()
def segmentation_analysis(run: str | Path, out_dir: str | Path, split: str = "val", n: int = 6) -> dict:
    """Scores of the split (one confusion matrix over its pixels), the confusion plots and the `n` images of
    lowest mean IoU, as PNGs in `out_dir`."""
    model, card, cfg, source, indices = open_split(run, split, source_of)
    k, ignore = len(card.classes), card.ignore_index
    confusion, per_image = ConfusionMatrix(k, ignore), []
    for batch in loader_of(cfg, source, indices, card, train=False):  # in the order of `indices`
        predicted = model(batch.images).argmax(1)  # (N, H, W)
        confusion.update(predicted, batch.targets)
        for p, t in zip(predicted, batch.targets):
            one = ConfusionMatrix(k, ignore)
            one.update(p[None], t[None])
            per_image.append(one.scores()["miou"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"confusion": plot_confusion(confusion.matrix, card.classes, out / f"pixel_confusion_{split}.png"),
             "confusion_normalized": plot_confusion(confusion.matrix, card.classes,
                                                    out / f"pixel_confusion_{split}_normalized.png", normalized=True)}
    scores = np.array([np.nan if v is None else v for v in per_image])
    order = np.argsort(np.where(np.isnan(scores), np.inf, scores), kind="stable")[:n]  # worst first
    worst = [{"index": int(indices[i]), "path": str(source.path(int(indices[i])) or f"item {indices[i]}"),
              "miou": None if np.isnan(scores[i]) else float(scores[i])} for i in order]
    paths["worst"] = _plot_worst(model, card, cfg, source, [w["index"] for w in worst], out / f"worst_{split}.png")
    return {"split": split, "count": int(len(indices)), "scores": confusion.scores(), "paths": paths,
            "worst": worst}


def _plot_worst(model, card, cfg, source, items: list[int], path: Path) -> Path:
    """One row per item: the image as the network saw it, its labels blended in, the prediction blended in."""
    palette = palette_of(card)
    pictures = []
    for i in items:
        batch = next(iter(loader_of(cfg, source, np.array([i]), card, train=False)))
        predicted = model(batch.images).argmax(1)[0]  # (h, w)
        image = (batch.images[0] * torch.tensor(card.std).view(3, 1, 1) + torch.tensor(card.mean).view(3, 1, 1))
        image = image.mul(255).round().clamp(0, 255).to(torch.uint8)  # (3, h, w), the normalisation undone
        pictures += [image, overlay(image, batch.targets[0], palette), overlay(image, predicted, palette)]
    save_image(torch.stack(pictures).float() / 255.0, path, nrow=3, padding=2)
    return path
