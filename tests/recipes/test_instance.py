"""`--task instance` (Mask R-CNN): instance masks from every source that has them, masks that move with the
augmentations, mask AP equal to pycocotools' COCOeval(iouType="segm"), the CLI end to end, the one-line errors."""
from __future__ import annotations

import contextlib
import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.ops import masks_to_boxes

from cnnkit.cli.app import main
from cnnkit.data.detection.loader import DetectionAugment, DetectionDataset, make_detection_loader
from cnnkit.data.detection.source import open_detection_source, write_coco
from cnnkit.errors import CnnkitError
from cnnkit.metrics.detection import STAT_NAMES, detection_map, evaluate_instances, to_coco
from cnnkit.metrics.mask_rle import encode_masks

torch.set_num_threads(2)
DATA = "synthetic-shapes:count=2,n=16,size=64"
SMALL = ["--model-option", "out_channels=32", "--model-option", "representation_size=64",
         "--model-option", "mask_channels=16", "--model-option", "mask_layers=2"]
NO_MASKS = "has no instance masks; use COCO segmentation (polygons or RLE), Penn-Fudan"
TRAIN = ["-q", "train", "--task", "instance", "--data", DATA, "--model", "mask_rcnn", "--image-size", "64",
         "--batch-size", "4", *SMALL]


def _boxes_of(masks: torch.Tensor) -> torch.Tensor:
    """The boxes of (K, H, W) masks in cnnkit's convention (x2, y2 exclusive)."""
    return masks_to_boxes(masks.bool()) + torch.tensor([0.0, 0.0, 1.0, 1.0])


# ---------------------------------------------------------------- sources and the loader

def test_synthetic_shapes_have_exact_masks():
    source = open_detection_source(DATA)
    assert source.has_masks
    for i in range(4):
        image, target = source.read(i, masks=True)
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (len(target["boxes"]), 64, 64)
        assert torch.equal(_boxes_of(masks), target["boxes"])
        assert int(masks.sum(0).max()) == 1  # the shapes do not overlap


@pytest.mark.parametrize("augment", [DetectionAugment(hflip=1.0), DetectionAugment(hflip=0.5, iou_crop=True,
                                                                                   zoom_out=1.0)])
def test_masks_move_with_their_boxes(augment):
    source = open_detection_source(DATA)
    torch.manual_seed(0)
    size = 64 if augment.hflip == 1.0 else 48  # at 64 px no resize: a flip must give the flipped mask exactly
    plain = DetectionDataset(source, range(8), size, None, masks=True)
    moved = DetectionDataset(source, range(8), size, augment, masks=True)
    for i in range(8):
        _, target = moved[i]
        masks, boxes = target["masks"], target["boxes"]
        assert masks.dtype == torch.uint8 and len(masks) == len(boxes) == len(target["labels"])
        seen = masks.flatten(1).bool().any(1)
        assert (_boxes_of(masks[seen]) - boxes[seen]).abs().max() <= 1.5 if seen.any() else True
        if augment.hflip == 1.0:  # a sure flip: the flipped mask of the unaugmented item
            assert torch.equal(masks, plain[i][1]["masks"].flip(-1))


def test_the_loader_batches_masks_and_needs_a_source_with_masks(tmp_path: Path):
    source = open_detection_source(DATA)
    batch = next(iter(make_detection_loader(source, range(8), size=64, batch_size=4, train=True, augment="strong",
                                            masks=True)))
    assert all(t["masks"].shape[1:] == (64, 64) and len(t["masks"]) == len(t["boxes"]) for t in batch.targets)
    plain = next(iter(make_detection_loader(source, range(4), size=64, batch_size=4, train=False)))
    assert all("masks" not in t for t in plain.targets)  # detection runs stay as they were
    boxes_only = open_detection_source(write_coco(source, tmp_path / "coco"))
    assert not boxes_only.has_masks
    with pytest.raises(CnnkitError, match=re.escape(NO_MASKS)) as info:
        make_detection_loader(boxes_only, range(4), size=64, batch_size=4, train=False, masks=True)
    assert "\n" not in str(info.value)


def test_coco_polygons_and_rle_become_masks(tmp_path: Path):
    from pycocotools import mask as mask_utils

    Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    square = np.zeros((40, 60), dtype=np.uint8)
    square[5:15, 30:50] = 1
    rle = mask_utils.encode(np.asfortranarray(square))
    rle["counts"] = rle["counts"].decode("ascii")
    data = {"images": [{"id": 7, "file_name": "a.png", "width": 60, "height": 40}],
            "categories": [{"id": 1, "name": "thing"}],
            "annotations": [
                {"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 20, 10, 10], "iscrowd": 0,
                 "segmentation": [[2, 20, 12, 20, 12, 30, 2, 30]]},  # a 10 × 10 polygon
                {"id": 2, "image_id": 7, "category_id": 1, "bbox": [30, 5, 20, 10], "iscrowd": 0,
                 "segmentation": rle}]}
    (tmp_path / "gt.json").write_text(json.dumps(data))
    source = open_detection_source(tmp_path / "gt.json")
    assert source.has_masks
    _, target = source.read(0, masks=True)
    masks = target["masks"]
    assert masks.shape == (2, 40, 60)
    assert torch.equal(masks[1], torch.from_numpy(square))
    assert abs(int(masks[0].sum()) - 100) <= 21 and (_boxes_of(masks) - target["boxes"]).abs().max() <= 1


def test_pennfudan_masks_follow_the_objects(data_root: Path):
    root = data_root / "pennfudan"
    if not (root / "PedMasks").is_dir():
        pytest.skip(f"Penn-Fudan not found at {root}")
    source = open_detection_source(root)
    assert source.has_masks
    for i in (0, 3, 50):
        image, target = source.read(i, masks=True)
        masks = target["masks"]
        assert masks.shape == (len(target["boxes"]), *image.shape[-2:]) and masks.dtype == torch.uint8
        assert (_boxes_of(masks) - target["boxes"]).abs().max() <= 3  # the text's boxes ≈ the masks' extents
    batch = next(iter(make_detection_loader(source, range(2), size=96, batch_size=2, train=False, masks=True)))
    assert batch.targets[0]["masks"].shape[1:] == (96, 96)


# ---------------------------------------------------------------- mask AP against pycocotools

def coco_eval_segm(ground_truth: dict, results: list[dict]) -> np.ndarray:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def text(seg):  # JSON-style RLE (str counts), as pycocotools reads from files
        return {**seg, "counts": seg["counts"].decode("ascii")} if isinstance(seg, dict) and isinstance(
            seg.get("counts"), bytes) else seg

    gt = copy.deepcopy(ground_truth)
    for a in gt["annotations"]:
        a["segmentation"] = text(a["segmentation"])
    res = [{**r, "segmentation": text(r["segmentation"])} for r in results]
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = gt
        coco.createIndex()
        e = COCOeval(coco, coco.loadRes(copy.deepcopy(res)), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return e.stats


def jittered_case(seed: int = 0, size: int = 48) -> tuple[list[dict], list[dict]]:
    """Five images (one without objects), 2 classes, masks of rectangles with notches; predictions: the true
    masks shifted by a few pixels (as probabilities), false positives, random scores."""
    rng = np.random.default_rng(seed)
    targets, predictions = [], []
    for i in range(5):
        k = 0 if i == 2 else int(rng.integers(1, 4))
        masks, boxes = np.zeros((k, size, size), np.uint8), []
        for j in range(k):
            x, y = rng.integers(0, size - 20, 2)
            w, h = rng.integers(6, 20, 2)
            masks[j, y:y + h, x:x + w] = 1
            masks[j, y:y + h // 3, x:x + w // 3] = 0
            boxes.append([x, y, x + w, y + h])
        labels = rng.integers(0, 2, k)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor(labels), "masks": torch.from_numpy(masks)})
        d = k + int(rng.integers(0, 3))
        probs, pboxes, plabels = np.zeros((d, 1, size, size), np.float32), [], []
        for j in range(d):
            if j < k:
                shift = tuple(int(v) for v in rng.integers(-3, 4, 2))
                probs[j, 0] = np.roll(masks[j], shift, axis=(0, 1)) * rng.uniform(0.55, 1.0)
                pboxes.append(boxes[j])
                plabels.append(labels[j] if rng.random() < 0.85 else 1 - labels[j])
            else:
                x, y = rng.integers(0, size - 8, 2)
                probs[j, 0, y:y + 8, x:x + 8] = 0.9
                pboxes.append([x, y, x + 8, y + 8])
                plabels.append(int(rng.integers(0, 2)))
        predictions.append({"boxes": torch.tensor(pboxes, dtype=torch.float32).reshape(-1, 4),
                            "labels": torch.tensor(plabels, dtype=torch.long), "masks": torch.from_numpy(probs),
                            "scores": torch.tensor(rng.uniform(0.05, 1.0, d), dtype=torch.float32)})
    return targets, predictions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mask_ap_equals_pycocotools_segm(seed):
    targets, predictions = jittered_case(seed)
    ours = evaluate_instances(targets, predictions, ["a", "b"])
    ground_truth, results = to_coco(targets, predictions, ["a", "b"])
    reference = coco_eval_segm(ground_truth, results)
    np.testing.assert_allclose([ours[f"mask_{k}"] for k in STAT_NAMES], reference, atol=1e-9, rtol=0)
    assert 0 < ours["mask_map50"] <= 1 and ours["mask_map50"] != ours["map50"]
    # the same from precomputed RLEs ("rles"), as the validation loop keeps them
    encoded = [{**{k: v for k, v in d.items() if k != "masks"}, "rles": encode_masks(d["masks"])}
               for d in targets + predictions]
    again = evaluate_instances(encoded[:5], encoded[5:], ["a", "b"])
    assert again["mask_map"] == ours["mask_map"] and again["map"] == ours["map"]


def test_mask_ap_with_polygons_crowds_and_json_rle_equals_pycocotools():
    targets, predictions = jittered_case(3)
    ground_truth, results = to_coco(targets, predictions, ["a", "b"])
    for img in ground_truth["images"]:
        img.update(height=48, width=48)
    ground_truth["annotations"][0]["iscrowd"] = 1  # a crowd region: never used up, IoU over the detection
    ground_truth["annotations"].append({"id": 999, "image_id": 1, "category_id": 1, "bbox": [30, 30, 10, 10],
                                        "area": 100.0, "iscrowd": 0,
                                        "segmentation": [[30, 30, 40, 30, 40, 40, 30, 40]]})
    for r in results:
        r["segmentation"] = {**r["segmentation"], "counts": r["segmentation"]["counts"].decode("ascii")}
    ours = detection_map(ground_truth, results, iou_type="segm")
    np.testing.assert_allclose([ours[k] for k in STAT_NAMES], coco_eval_segm(ground_truth, results), atol=1e-9,
                               rtol=0)


# ---------------------------------------------------------------- the CLI end to end

@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("instance") / "run"
    assert main(TRAIN + ["--epochs", "1", "--out", str(out)]) == 0
    return out


def test_train_evaluate_and_test_report_mask_ap(run: Path, capsys):
    header = (run / "history.csv").read_text().splitlines()[0]
    assert "train_loss_mask" in header and "val_mask_map50" in header
    assert json.loads((run / "split.json").read_text())["task"] == "instance"
    capsys.readouterr()
    assert main(["evaluate", str(run), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert {"map", "map50", "mask_map", "mask_map50", "mask_map75", "errors"} <= set(metrics)
    assert all(0 <= metrics[k] <= 1 for k in ("map", "map50", "mask_map", "mask_map50", "mask_map75"))
    assert main(["test", str(run), "--json"]) == 0
    assert "mask_map50" in json.loads(capsys.readouterr().out)


def test_predict_writes_rle_rows_and_the_instances_image(run: Path, tmp_path: Path, capsys):
    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 96, 3), dtype=np.uint8)).save(image)
    capsys.readouterr()
    assert main(["predict", str(run), str(image), "--json", "--score-threshold", "0.0", "--out",
                 str(tmp_path / "drawn")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows and {"path", "label", "category_id", "bbox", "score", "segmentation"} <= set(rows[0])
    from pycocotools import mask as mask_utils

    for r in rows[:5]:
        assert r["segmentation"]["size"] == [48, 96] and isinstance(r["segmentation"]["counts"], str)
        assert mask_utils.decode(r["segmentation"]).shape == (48, 96)
    assert Image.open(tmp_path / "drawn" / "wide_instances.png").size == (96, 48)


@pytest.mark.parametrize("extra, message", [
    (["--task", "instance", "--model", "faster_rcnn"], "--task instance needs an instance-segmentation model"),
    (["--task", "detect", "--model", "mask_rcnn"], "train it with --task instance"),
])
def test_a_model_of_the_other_task_fails_in_one_line(tmp_path: Path, capsys, extra, message):
    args = ["-q", "train", "--data", DATA, "--image-size", "64", "--epochs", "1", "--out", str(tmp_path / "bad"),
            *extra]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_data_without_masks_fails_in_one_line(tmp_path: Path, capsys):
    coco = write_coco(open_detection_source(DATA), tmp_path / "coco")  # boxes only
    args = ["-q", "train", "--task", "instance", "--data", str(coco), "--model", "mask_rcnn", "--epochs", "1",
            "--out", str(tmp_path / "bad")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert NO_MASKS in err and len(err.splitlines()) == 1
