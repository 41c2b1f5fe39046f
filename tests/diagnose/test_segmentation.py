"""A segmentation run's val split for the report: one pixel confusion matrix over the split (its scores by hand
from the model's own predictions), the images of lowest mean IoU first, and the pictures written."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.config import load_config, save_config
from cnnkit.data.segmentation.loader import loader_of
from cnnkit.data.split import write_split
from cnnkit.diagnose.segmentation import segmentation_analysis
from cnnkit.recipes import recipe_for
from cnnkit.runs.folder import open_split, save_model

PLANTS = "synthetic-plants:size=48,count=16,seed=3"


def segmentation_run(folder: Path) -> Path:
    """A run folder as `cnnkit train --task segment` leaves it (model.pt, config.yaml, split.json), with the
    tiny U-Net's random starting weights: nothing to train to measure it."""
    cfg = load_config(overrides={"task": "segment", "out": str(folder),
                                 "data": {"source": PLANTS, "image_size": 48, "val": 0.25, "test": 0.25},
                                 "model": {"name": "unet", "options": {"base": 8, "depth": 2}},
                                 "train": {"batch_size": 4, "device": "cpu", "seed": 1}})
    recipe = recipe_for("segment")
    source = recipe.open_source(cfg)
    split, record = recipe.new_split(cfg, source)
    card = recipe.card(cfg, source, split)
    torch.manual_seed(0)
    model = recipe.model(cfg, card, fresh=True)
    with torch.no_grad():  # no head bias: the classes predicted vary from pixel to pixel
        model.classifier.bias.zero_()
    folder.mkdir(parents=True)
    save_model(folder / "model.pt", model, card)
    save_config(cfg, folder / "config.yaml")
    write_split(folder / "split.json", record)
    return folder


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return segmentation_run(tmp_path_factory.mktemp("seg") / "run")


def _iou(confusion: np.ndarray) -> list[float | None]:
    tp = np.diag(confusion)
    union = confusion.sum(0) + confusion.sum(1) - tp
    return [float(t / u) if u > 0 else None for t, u in zip(tp, union)]


def _mean(values: list[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


@pytest.fixture(scope="module")
def by_hand(run: Path) -> tuple[np.ndarray, list, np.ndarray]:
    """(the val split's confusion matrix, each val image's mIoU, the val indices), from the model's arg-max."""
    model, card, cfg, source, indices = open_split(run, "val", lambda cfg: recipe_for("segment").open_source(cfg))
    k = len(card.classes)
    total, per_image = np.zeros((k, k), dtype=np.int64), []
    with torch.inference_mode():
        for batch in loader_of(cfg, source, indices, card, train=False):
            predicted = model(batch.images).argmax(1)
            for p, t in zip(predicted.numpy(), batch.targets.numpy()):
                keep = t != card.ignore_index
                one = np.bincount(t[keep] * k + p[keep], minlength=k * k).reshape(k, k)  # rows true, columns predicted
                total += one
                per_image.append(_mean(_iou(one)))
    return total, per_image, indices


def test_scores_are_those_of_one_confusion_matrix_over_the_split(run: Path, by_hand, tmp_path: Path) -> None:
    confusion, _, indices = by_hand
    a = segmentation_analysis(run, tmp_path, split="val")
    assert a["split"] == "val" and a["count"] == len(indices) == 4
    s = a["scores"]
    assert s["pixel_accuracy"] == pytest.approx(np.trace(confusion) / confusion.sum())
    iou = _iou(confusion)
    assert len(s["per_class_iou"]) == len(iou) == 4
    for got, expected in zip(s["per_class_iou"], iou):  # None: the class is neither true nor predicted
        assert got is None if expected is None else got == pytest.approx(expected)
    assert s["miou"] == pytest.approx(_mean(iou))


def test_the_worst_images_come_first_and_are_drawn(run: Path, by_hand, tmp_path: Path) -> None:
    _, per_image, indices = by_hand
    a = segmentation_analysis(run, tmp_path, split="val", n=3)
    scores = np.array([np.inf if v is None else v for v in per_image])
    order = np.argsort(scores, kind="stable")[:3]
    assert [w["index"] for w in a["worst"]] == [int(indices[i]) for i in order]
    for w, i in zip(a["worst"], order):
        assert w["miou"] is None if per_image[i] is None else w["miou"] == pytest.approx(per_image[i])
    assert a["paths"]["confusion"] == tmp_path / "pixel_confusion_val.png"
    assert a["paths"]["confusion_normalized"] == tmp_path / "pixel_confusion_val_normalized.png"
    with Image.open(a["paths"]["worst"]) as im:  # one row per image: the image, its labels, the prediction
        assert im.size == (3 * (48 + 2) + 2, 3 * (48 + 2) + 2)
    for key in ("confusion", "confusion_normalized"):
        assert a["paths"][key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_analysis_agrees_with_evaluate(run: Path, tmp_path: Path) -> None:
    from cnnkit import api

    metrics = api.evaluate(run, split="val", verdict=False)
    scores = segmentation_analysis(run, tmp_path)["scores"]
    assert scores["miou"] == pytest.approx(metrics["miou"])
    assert scores["pixel_accuracy"] == pytest.approx(metrics["pixel_accuracy"])

