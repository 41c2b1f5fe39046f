"""The mask audit on hand-made masks (agreement, ranking, the most frequent disagreement), classes absent from a
split, and audit_segmentation end to end on a tiny synthetic-plants set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.audit.masks import absent_classes, audit_segmentation, mask_disagreement
from cnnkit.errors import CnnkitError

CLASSES = ["soil", "grass", "weed"]


def _scene() -> torch.Tensor:
    """(8, 8): soil, a 4 × 4 grass square at the top left, a 2 × 4 weed strip at the bottom right."""
    mask = torch.zeros(8, 8, dtype=torch.int64)
    mask[:4, :4] = 1
    mask[6:, 4:] = 2
    return mask


def test_a_perfect_prediction_agrees_fully() -> None:
    rows = mask_disagreement([_scene()], [_scene()], CLASSES)
    assert len(rows) == 1
    row = rows[0]
    assert row["agreement"] == 1.0 and row["pixel_agreement"] == 1.0 and row["score"] == 0.0
    assert row["label"] is None and row["suggested"] is None and row["pixels"] == 0
    assert row["class_iou"] == {"soil": 1.0, "grass": 1.0, "weed": 1.0}


def test_agreement_is_the_images_miou_by_hand() -> None:
    given = _scene()
    given[6:, 4:] = 1  # the weed strip labelled grass
    rows = mask_disagreement([given], [_scene()], CLASSES)
    row = rows[0]
    # soil: 48/48 = 1; grass: 16 / (16 + 8) = 2/3; weed: 0 / 8 = 0 → mIoU 5/9
    assert row["class_iou"] == pytest.approx({"soil": 1.0, "grass": 2 / 3, "weed": 0.0}, abs=1e-4)
    assert row["agreement"] == pytest.approx(5 / 9, abs=1e-5) and row["score"] == pytest.approx(4 / 9, abs=1e-5)
    assert row["pixel_agreement"] == pytest.approx(56 / 64)
    assert (row["label"], row["suggested"], row["pixels"]) == ("grass", "weed", 8)


def test_images_rank_by_lowest_agreement_and_ignored_pixels_do_not_count() -> None:
    good, slightly, badly = _scene(), _scene(), _scene()
    slightly[0, 0] = 0
    badly[:4, :4] = 0  # the grass square missing from the labels
    ignored = torch.full((8, 8), 255)
    ignored[0, 0] = 1
    rows = mask_disagreement([good, badly, slightly, ignored], [_scene()] * 3 + [torch.ones(8, 8, dtype=torch.int64)],
                             CLASSES)
    assert [r["image"] for r in rows] == [1, 2, 0, 3]
    assert rows[-1]["agreement"] == 1.0  # the one labelled pixel agrees
    assert rows[0]["label"] == "soil" and rows[0]["suggested"] == "grass" and rows[0]["pixels"] == 16
    all_ignored = torch.full((8, 8), 255)
    assert mask_disagreement([all_ignored], [_scene()], CLASSES) == []  # nothing labelled: no row


def test_shapes_must_agree() -> None:
    with pytest.raises(CnnkitError, match="at the same resolution"):
        mask_disagreement([_scene()], [torch.zeros(4, 4, dtype=torch.int64)], CLASSES)
    with pytest.raises(CnnkitError, match="1 given masks but 2"):
        mask_disagreement([_scene()], [_scene(), _scene()], CLASSES)


class _Masks:
    """A segmentation source of given masks (read: (image, mask))."""

    def __init__(self, masks: list[torch.Tensor]):
        self.masks = masks

    def read(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(3, 8, 8, dtype=torch.uint8), self.masks[i]


def test_absent_classes_per_split() -> None:
    no_weed = _scene()
    no_weed[6:, 4:] = 0
    source = _Masks([_scene(), no_weed, torch.zeros(8, 8, dtype=torch.int64)])
    absent = absent_classes(source, {"train": [0, 1], "val": [1], "test": np.array([2])}, CLASSES)
    assert absent == {"train": [], "val": ["weed"], "test": ["grass", "weed"]}


def test_absent_classes_of_a_detection_source() -> None:
    from cnnkit.data.detection.source import open_detection_source

    source = open_detection_source("synthetic-shapes:count=1,n=6,size=32")
    shown = {int(item.labels[0]) for item in source.items[:1]}
    absent = absent_classes(source, {"one": [0]}, source.classes)
    assert absent["one"] == [c for n, c in enumerate(source.classes) if n not in shown]


def test_audit_segmentation_cross_fits_every_image(tmp_path: Path) -> None:
    from cnnkit.config import load_config
    from cnnkit.recipes import recipe_for

    cfg = load_config(overrides={
        "task": "segment", "data": {"source": "synthetic-plants:size=32,count=10,seed=3", "image_size": 32,
                                    "workers": 0},
        "model": {"name": "unet", "options": {"base": 4, "depth": 2}},
        "train": {"epochs": 1, "batch_size": 4, "lr": 3e-3, "device": "cpu"}})
    recipe = recipe_for("segment")
    source = recipe.open_source(cfg)
    pool = np.arange(1, 10)
    out = audit_segmentation(recipe, cfg, source, pool, folds=2, work=tmp_path, split={"all": np.arange(10)})
    assert out["folds"] == 2 and out["items"] == 9 and out["absent"] == {"all": []}
    assert sorted(r["index"] for r in out["issues"]) == list(pool)
    scores = [r["score"] for r in out["issues"]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert all(r["score"] == pytest.approx(1 - r["agreement"]) for r in out["issues"])
    assert (tmp_path / "fold2" / "model.pt").is_file()
    default = audit_segmentation(recipe, cfg, source, np.arange(4), folds=2, work=tmp_path / "again")
    assert set(default["absent"]) == {"train", "val", "test"}
