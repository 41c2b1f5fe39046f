"""`--task detect` end to end through the CLI: train, evaluate (COCO keys), predict (COCO results, drawn
images), resume, and the one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.cli.app import main
from cnnkit.data.detection.source import open_detection_source
from cnnkit.metrics.detection import evaluate_detections
from cnnkit.runs.folder import load_model

DATA = "synthetic-shapes:count=2,n=40,size=64"
TRAIN = ["-q", "train", "--task", "detect", "--data", DATA, "--model", "yolo", "--image-size", "64",
         "--batch-size", "8", "--model-option", "grid=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("detect") / "run"
    assert main(TRAIN + ["--epochs", "2", "--out", str(out)]) == 0
    return out


def test_train_writes_a_run_whose_evaluation_is_cocos(run: Path, capsys) -> None:
    history = (run / "history.csv").read_text().splitlines()
    assert len(history) == 3 and "val_map50" in history[0] and "train_loss_noobj" in history[0]
    split = json.loads((run / "split.json").read_text())["splits"]
    assert set(split) == {"train", "val", "test"} and not set(split["val"]) & set(split["test"])
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"map", "map50", "map75", "per_class", "errors"} <= set(metrics) and metrics["count"] == len(split["val"])
    assert Image.open(run / "plots" / "pr_curves_val.png").size[0] > 0
    # the same numbers from the saved model's detections on the val images, computed here
    model, card = load_model(run)
    assert card.task == "detect" and card.options["image_size"] == 64
    source = open_detection_source(DATA)
    from cnnkit.data.detection.loader import make_detection_loader

    loader = make_detection_loader(source, split["val"], size=64, batch_size=8, train=False)
    model.eval()
    targets, predictions = [], []
    with torch.no_grad():
        for batch in loader:
            predictions += model(batch.images)
            targets += batch.targets
    expected = evaluate_detections(targets, predictions, card.classes)
    assert metrics["map50"] == pytest.approx(expected["map50"]) and metrics["map"] == pytest.approx(expected["map"])


def test_predict_prints_coco_results_in_image_pixels_and_draws(run: Path, tmp_path: Path, capsys) -> None:
    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--json", "--score-threshold", "0.0", "--nms-iou", "0.3",
                 "--out", str(tmp_path / "drawn")]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results and {"path", "label", "category_id", "bbox", "score"} <= set(results[0])
    for r in results:
        x, y, w, h = r["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 96 + 1e-3 and y + h <= 48 + 1e-3 and w >= 0 and h >= 0
    drawn = Image.open(tmp_path / "drawn" / "wide_boxes.png")
    assert drawn.size == (96, 48)
    assert main(["predict", str(run), str(image), "--json", "--score-threshold", "1.5"]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err


def test_a_killed_detection_run_resumes(run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    assert main(["-q", "train", "--resume", str(copy), "--epochs", "3"]) == 0
    assert len((copy / "history.csv").read_text().splitlines()) == 4  # header + 3 epochs


@pytest.mark.parametrize("extra,message", [
    (["--model", "lenet5"], "needs a detector"),
    (["--loss", "focal"], "its own losses"),
    (["--mixup", "0.2"], "--mixup is not supported for --task detect"),
    (["--model", "yolo", "--model-option", "head=v2"], "did you mean"),
])
def test_bad_detection_runs_fail_in_one_line(tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    assert main(TRAIN + ["--epochs", "1", "--out", str(tmp_path / "bad")] + extra) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


TINY_REGION = {"fast_rcnn": ["proposals=100", "representation_size=64"],
               "spp_net": ["proposals=100", "representation_size=64"],
               "rcnn": ["proposals=100", "crop=64", "context=4"]}


@pytest.mark.parametrize("name", [pytest.param("fast_rcnn"), pytest.param("spp_net", marks=pytest.mark.slow),
                                  pytest.param("rcnn", marks=pytest.mark.slow)])
def test_the_rcnn_line_trains_evaluates_and_predicts_through_the_usual_verbs(name: str, tmp_path: Path, capsys,
                                                                              monkeypatch) -> None:
    """No special verb: `train --task detect --model NAME`, `evaluate --json` with COCO's keys, `predict`."""
    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / name
    options = [arg for option in TINY_REGION[name] for arg in ("--model-option", option)]
    assert main(["-q", "train", "--task", "detect", "--data", "synthetic-shapes:count=2,n=24,size=64", "--model", name,
                 "--image-size", "64", "--batch-size", "8", "--epochs", "1", *options, "--out", str(out)]) == 0
    assert list((tmp_path / "cache" / "regions" / "proposals").rglob("*.pt"))  # proposals cached on disk
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"map", "map50", "map75", "per_class"} <= set(metrics) and 0 <= metrics["map50"] <= 1
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(out), str(image), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    classes = load_model(out)[1].classes
    assert rows and all(row["path"] == str(image) and row["label"] in classes for row in rows)


def test_predict_draws_an_rcnn_line_models_first_proposals_in_grey_under_its_boxes(tmp_path: Path, capsys,
                                                                                    monkeypatch) -> None:
    from torchvision.utils import draw_bounding_boxes

    from cnnkit.data.detection.loader import FitDetection, fit_geometry, to_image_coordinates
    from cnnkit.data.images import read_image
    from cnnkit.recipes.detection import PROPOSAL_GREY

    monkeypatch.setenv("CNNKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "fast_rcnn"
    options = [arg for option in TINY_REGION["fast_rcnn"] for arg in ("--model-option", option)]
    assert main(["-q", "train", "--task", "detect", "--data", "synthetic-shapes:count=2,n=24,size=64", "--model",
                 "fast_rcnn", "--image-size", "64", "--batch-size", "8", "--epochs", "1", *options,
                 "--out", str(out)]) == 0
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)).save(image)

    def drawn(folder: str, *extra: str) -> np.ndarray:
        assert main(["predict", str(out), str(image), "--out", str(tmp_path / folder), *extra]) == 0
        return np.asarray(Image.open(tmp_path / folder / "photo_boxes.png").convert("RGB"))

    # no detections (score > 1): the image alone, then with the first 20 proposals mapped to its pixels
    plain, shown = drawn("plain", "--score-threshold", "1.0"), drawn("shown", "--score-threshold", "1.0",
                                                                       "--proposals", "20")
    pixels = read_image(image)  # uint8 (3, 48, 96)
    np.testing.assert_array_equal(plain, pixels.permute(1, 2, 0).numpy())
    model, _ = load_model(out)
    first = model.propose(FitDetection(64)(pixels).float().div(255)[None])[0][:20]
    _, scale, pad = fit_geometry(48, 96, 64, "letterbox")
    boxes = to_image_coordinates(first, torch.tensor(scale), torch.tensor(pad), 48, 96)
    boxes = boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])]
    expected = draw_bounding_boxes(pixels, boxes, colors=PROPOSAL_GREY, width=1).permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(shown, expected)
    grey = np.all(shown == PROPOSAL_GREY, axis=-1)
    assert grey.sum() > 50 and np.array_equal(np.any(shown != plain, axis=-1), grey)
    capsys.readouterr()  # nothing to draw on without --out: refused in one line
    assert main(["predict", str(out), str(image), "--proposals", "20"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --proposals draws on the images that --out DIR gets; add --out DIR"
    # with detections: the proposals' grey appears, under the boxes (every red pixel of theirs stays red)
    with_boxes, under = drawn("boxes"), drawn("under", "--proposals", "20")
    red = np.all(with_boxes == (255, 0, 0), axis=-1)
    assert red.any() and np.all(under[red] == (255, 0, 0))
    assert np.all(under == PROPOSAL_GREY, axis=-1).sum() > np.all(with_boxes == PROPOSAL_GREY, axis=-1).sum()


def test_proposals_are_refused_in_one_line_where_there_are_none_to_draw(run: Path, tmp_path: Path, capsys,
                                                                        tiny_folder: Path) -> None:
    from cnnkit import api
    from cnnkit.errors import CnnkitError

    image = tmp_path / "photo.png"
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(image)
    classifier = tmp_path / "classifier"
    assert main(["-q", "train", "--data", str(tiny_folder), "--model", "lenet5", "--epochs", "1",
                 "--out", str(classifier)]) == 0
    capsys.readouterr()
    for target, kind in [(run, "a yolo run (--task detect)"), (classifier, "a lenet5 run (--task binary)")]:
        assert main(["predict", str(target), str(image), "--proposals", "5", "--out", str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
        assert "region proposals of rcnn, spp_net, fast_rcnn runs" in err and f"{kind} has none" in err
    with pytest.raises(CnnkitError, match="region proposals of rcnn, spp_net, fast_rcnn"):
        api.predict(run, [image], out=tmp_path / "d", proposals=5)
    assert not (tmp_path / "d").exists()


def test_augmenting_a_frozen_region_model_warns_that_its_cache_will_not_serve(tmp_path: Path) -> None:
    from cnnkit.config import load_config
    from cnnkit.recipes import recipe_for

    recipe = recipe_for("detect")
    with pytest.warns(UserWarning, match="--augment none keeps its epochs fast"):
        recipe.check(load_config(overrides={"task": "detect", "model": {"name": "spp_net"},
                                            "data": {"augment": "light"}}))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        recipe.check(load_config(overrides={"task": "detect", "model": {"name": "fast_rcnn"},
                                            "data": {"augment": "light"}}))  # it trains its backbone: no cache
