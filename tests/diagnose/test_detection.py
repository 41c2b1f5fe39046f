"""The detection section of report.html and cnnkit.diagnose.detection: COCO metrics of a trained detector on
its val split (the val_map its history recorded), AP per class, the error breakdown, and val images with the
true boxes in green and the predicted ones in red."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from cnnkit.diagnose.detection import DRAWN_SIZE, detection_analysis, draw_boxes, score_detections

DATA = "synthetic-shapes:count=2,n=24,size=64"  # as tests/test_detection_runs.py, fewer images


def train_detector(out: Path) -> Path:
    from cnnkit import api
    from cnnkit.config import load_config

    cfg = load_config(overrides={"task": "detect", "data": {"source": DATA, "image_size": 64},
                                 "model": {"name": "yolo", "options": {"grid": 4}},
                                 "train": {"epochs": 1, "batch_size": 8}, "out": str(out)})
    return api.train(cfg).run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    return train_detector(tmp_path_factory.mktemp("detection") / "boxes")


def section(text: str, key: str) -> str:
    return text.split(f'<section id="{key}">', 1)[1].split("</section>", 1)[0]


def table_rows(text: str, html_id: str) -> list[list[str]]:
    body = text.split(f'<table id="{html_id}">', 1)[1].split("</table>", 1)[0]
    return [[re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row)]
            for row in re.findall(r"<tr>(.*?)</tr>", body)]


def test_the_analysis_scores_the_val_split_as_training_did(run: Path, tmp_path: Path) -> None:
    a = detection_analysis(run, tmp_path)
    with (run / "history.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert a["metrics"]["map"] == pytest.approx(float(last["val_map"]), abs=1e-6)
    assert a["metrics"]["map50"] == pytest.approx(float(last["val_map50"]), abs=1e-6)
    assert set(a["per_class"]) == {"circle", "square", "triangle"}
    import json

    val = json.loads((run / "split.json").read_text())["splits"]["val"]
    assert a["count"] == len(val) and a["errors"]["ground_truths"] >= len(val)  # every image holds an object
    assert a["errors"]["not_found"] <= a["errors"]["ground_truths"]
    for path in a["paths"].values():
        assert Path(path).read_bytes().startswith(b"\x89PNG")


def test_a_detection_report(run: Path) -> None:
    from cnnkit.diagnose.report import write_report

    text = write_report(run).read_text()  # the fallback sections of a detect run
    shown = re.findall(r'<section id="([a-z]+)">', text)
    assert shown[0] == "summary" and "detection" in shown and "curves" in shown
    assert not {"classification", "gradcam", "segmentation", "alarm"} & set(shown)
    assert 'class="error"' not in text, re.findall(r'class="error">([^<]*)', text)
    line = re.findall(r'id="left-out">([^<]*)<', text)[0]
    assert "Grad-CAM" in line and "(they apply to classification)" in line and "per-class IoU" in line

    body = section(text, "detection")
    assert body.count("<img") == 2  # precision/recall curves, drawn val images
    header, *rows = table_rows(body, "per-class-ap")
    assert header == ["class", "AP", "AP50", "AP75"] and [r[0] for r in rows] == ["circle", "square", "triangle"]
    errors = {r[0]: r[-1] for r in table_rows(body, "detection-errors")[1:]}
    assert int(errors["true boxes"]) >= 1 and "missed" in errors and "background" in errors
    assert "(map: val)" in section(text, "curves")  # detection logs val_map only
    summary = section(text, "summary")
    assert 'id="summary-metrics"' in summary and ">map<" in summary
    assert re.findall(r'<img[^>]+src="([^"]{22})', text) == ["data:image/png;base64,"] * text.count("<img")


def test_the_recipe_sections_and_no_verdict(run: Path) -> None:
    from cnnkit.diagnose.report import write_report

    path = write_report(run, sections=("summary", "verdict", "curves", "detection", "classification"),
                        curve_metric="map")
    text = path.read_text()
    # a classification section cannot be built for a detector: it is dropped and named as left out
    assert re.findall(r'<section id="([a-z]+)">', text) == ["summary", "verdict", "curves", "detection"]
    if not (run / "diagnosis.json").is_file() or '"verdict": null' in (run / "diagnosis.json").read_text():
        assert section(text, "verdict").count("<p") == 1 and "no verdict was recorded" in section(text, "verdict")


def _pixel(image: torch.Tensor, x: int, y: int) -> tuple[int, ...]:
    return tuple(int(v) for v in image[:, y, x])


def test_true_boxes_green_predicted_boxes_red_low_scores_left_out() -> None:
    image = torch.zeros(3, 64, 64, dtype=torch.uint8)
    target = {"boxes": torch.tensor([[10.0, 10.0, 30.0, 30.0]]), "labels": torch.tensor([0])}
    prediction = {"boxes": torch.tensor([[40.0, 40.0, 60.0, 60.0], [5.0, 40.0, 20.0, 60.0]]),
                  "scores": torch.tensor([0.9, 0.05]), "labels": torch.tensor([1, 0])}
    drawn = draw_boxes(image, target, prediction, ["a", "b"])
    k = DRAWN_SIZE // 64
    assert drawn.shape == (3, 64 * k, 64 * k) and drawn.dtype == torch.uint8
    assert _pixel(drawn, 10 * k, 20 * k) == (0, 255, 0)  # the left edge of the true box
    assert _pixel(drawn, 40 * k, 55 * k) == (255, 0, 0)  # the left edge of the confident prediction
    assert _pixel(drawn, 5 * k, 55 * k) == (0, 0, 0)  # score 0.05: not drawn
    assert _pixel(drawn, 20 * k, 20 * k) == (0, 0, 0)  # inside the boxes nothing changes


def test_score_detections_boxes_and_masks() -> None:
    from cnnkit.tasks.detection import with_rles

    boxes = torch.tensor([[4.0, 4.0, 20.0, 20.0], [30.0, 30.0, 60.0, 50.0]])
    labels = torch.tensor([0, 1])
    targets = [{"boxes": boxes, "labels": labels}]
    perfect = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": labels}]
    result, errors = score_detections(targets, perfect, ["a", "b"])
    assert result["map"] == pytest.approx(1.0) and errors["true_positive"] == 2 and errors["missed"] == 0
    wrong = [{"boxes": boxes, "scores": torch.tensor([0.9, 0.8]), "labels": torch.tensor([1, 0])}]
    _, errors = score_detections(targets, wrong, ["a", "b"])
    assert errors["wrong_class"] == 2 and errors["not_found"] == 2

    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 4:20, 4:20] = 1
    masks[1, 30:50, 30:60] = 1
    mask_targets = [{k: v for k, v in with_rles({**targets[0], "masks": masks}).items()
                     if k in ("boxes", "labels", "rles")}]
    predicted = [with_rles({**perfect[0], "masks": masks[:, None].float()})]
    result, _ = score_detections(mask_targets, predicted, ["a", "b"], "instance")
    assert result["mask_map"] == pytest.approx(1.0) and result["map"] == pytest.approx(1.0)
