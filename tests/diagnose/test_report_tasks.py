"""The task-specific report sections: a segmentation run's IoU table and worst images (the analysis's own numbers),
the training images beside their label overlays, and the detection tables (AP per class, the error breakdown)."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.config import load_config, save_config
from cnnkit.data.segmentation.draw import palette_of
from cnnkit.data.segmentation.source import open_segmentation_source
from cnnkit.data.split import write_split
from cnnkit.diagnose.report_page import RunInfo
from cnnkit.diagnose.report_tasks import ERROR_KINDS, _ap, _detection_tables, label_overlays, segmentation_section
from cnnkit.diagnose.segmentation import segmentation_analysis
from cnnkit.recipes import recipe_for
from cnnkit.runs.folder import save_model

PLANTS = "synthetic-plants:size=48,count=16,seed=3"


@pytest.fixture(scope="module")
def seg(tmp_path_factory) -> RunInfo:
    """A segmentation run folder as training leaves it, with the tiny U-Net's random weights, as a RunInfo."""
    import json

    import yaml

    folder = tmp_path_factory.mktemp("seg") / "run"
    cfg = load_config(overrides={"task": "segment", "out": str(folder),
                                 "data": {"source": PLANTS, "image_size": 48, "val": 0.25, "test": 0.25},
                                 "model": {"name": "unet", "options": {"base": 8, "depth": 2}},
                                 "train": {"batch_size": 4, "device": "cpu"}})
    recipe = recipe_for("segment")
    source = recipe.open_source(cfg)
    split, record = recipe.new_split(cfg, source)
    card = recipe.card(cfg, source, split)
    torch.manual_seed(0)
    model = recipe.model(cfg, card, fresh=True)
    with torch.no_grad():
        model.classifier.bias.zero_()  # the classes predicted vary from pixel to pixel
    (folder / "plots").mkdir(parents=True)
    save_model(folder / "model.pt", model, card)
    save_config(cfg, folder / "config.yaml")
    write_split(folder / "split.json", record)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    return RunInfo(folder, config, json.loads((folder / "split.json").read_text()), card, folder / "plots")


def _row(html: str, name: str) -> list[str]:
    match = re.search(rf"<tr><th[^>]*>{re.escape(name)}</th>(.*?)</tr>", html)
    assert match, name
    return re.findall(r"<td[^>]*>(.*?)</td>", match.group(1))


def test_segmentation_section_shows_the_analysis_numbers(seg: RunInfo, tmp_path: Path) -> None:
    html = segmentation_section(seg)
    s = segmentation_analysis(seg.path, tmp_path)["scores"]
    assert f"mIoU {s['miou']:.4f}, pixel accuracy {s['pixel_accuracy']:.4f}" in html
    for i, name in enumerate(seg.card.classes):
        expected = [s["per_class_iou"][i], s["per_class_dice"][i], s["per_class_accuracy"][i]]
        assert _row(html, name) == ["—" if v is None else f"{v:.4g}" for v in expected], name
    assert html.count("data:image/png;base64,") == 2  # the normalised confusion matrix and the worst images
    assert (seg.plots / "worst_val.png").is_file()


def test_label_overlays_pair_each_training_image_with_its_mask_blended(seg: RunInfo) -> None:
    path = label_overlays(seg, 48, n=3)
    assert path == seg.plots / "train_labels.png"
    source = open_segmentation_source(PLANTS)
    with Image.open(path) as im:
        grid = np.asarray(im.convert("RGB"))
    assert grid.shape == (2 * 50 + 2, 4 * 50 + 2, 3)  # 6 pictures of 48×48, 4 a row, 2 px padding
    palette = palette_of(seg.card).astype(np.float64)
    for k, i in enumerate(seg.record["splits"]["train"][:3]):
        image, mask = source.read(int(i))  # (3, 48, 48) uint8, (48, 48)
        image, mask = image.permute(1, 2, 0).numpy().astype(np.float64), mask.numpy()
        blended = np.where((mask < len(palette))[..., None], 0.5 * image + 0.5 * palette[np.minimum(mask, 3)], image)
        for j, expected in ((2 * k, image), (2 * k + 1, np.round(blended))):  # the image, then its overlay
            top, left = 2 + (j // 4) * 50, 2 + (j % 4) * 50
            assert np.abs(grid[top:top + 48, left:left + 48] - expected).max() <= 1, (k, j)


def test_ap_shows_cocos_undefined_as_a_dash() -> None:
    assert _ap(-1.0) is None and _ap(None) is None
    assert _ap(0.0) == 0.0 and _ap(0.625) == 0.625


def test_detection_tables_per_class_ap_and_the_errors_in_order() -> None:
    analysis = {"problem": "detect",
                "per_class": {"cat": {"ap": 0.5, "ap50": 0.8, "ap75": -1.0}, "<dog>": {"ap": -1, "ap50": -1,
                                                                                      "ap75": -1}},
                "errors": {"detections": 10, "ground_truths": 8, "missed": 2, "true_positive": 5, "background": 3}}
    per_class, errors = _detection_tables(analysis)
    assert _row(per_class, "cat") == ["0.5", "0.8", "—"] and _row(per_class, "&lt;dog&gt;") == ["—"] * 3
    assert "mask AP" not in per_class
    assert _row(errors, "detections") == ["of score ≥ 0.5", "10"] and _row(errors, "true boxes")[1] == "8"
    body = errors[errors.index("<tbody>"):]
    shown = re.findall(r"<tr><th[^>]*>([^<]*)</th>", body)[2:]  # after detections and true boxes
    assert shown == ["true positive", "background", "missed"]  # ERROR_KINDS' order, only those counted
    assert _row(errors, "missed") == [ERROR_KINDS["missed"], "2"]


def test_instance_tables_add_the_mask_columns() -> None:
    analysis = {"problem": "instance", "errors": {},
                "per_class": {"person": {"ap": 0.4, "ap50": 0.7, "ap75": 0.3, "mask_ap": 0.35, "mask_ap50": 0.65,
                                         "mask_ap75": -1}}}
    per_class, _ = _detection_tables(analysis)
    assert "<th class=\"num\">mask AP50</th>" in per_class
    assert _row(per_class, "person") == ["0.4", "0.7", "0.3", "0.35", "0.65", "—"]
