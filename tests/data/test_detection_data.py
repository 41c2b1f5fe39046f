"""Detection data: COCO / VOC / YOLO / Penn-Fudan readers and writers, their round trip, the checks of bad
annotations (each with its message), masks → boxes, the synthetic detection set and `cnnkit convert`."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.detection.source import (DetectionSource, boxes_within, masks_to_boxes, open_detection_source,
                                   parse_policy, read_detection, read_pennfudan, to_coco_dict, validate, write_coco,
                                   write_voc, write_yolo)
from cnnkit.errors import CnnkitError
from tests.test_cli_errors import assert_one_line_error, run_cli

SYNTHETIC = "synthetic-shapes:n=12,size=64,count=4,seed=1"


def write_coco_file(folder: Path, boxes: list[tuple[int, str | int, list[float]]], *, n_images: int = 2,
                    categories: tuple[str, ...] = ("cat", "dog")) -> Path:
    """A COCO file over `n_images` 40×30 PNGs, with annotations (image id, category id or name, [x, y, w, h])."""
    folder.mkdir(parents=True, exist_ok=True)
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(categories)]
    ids = {c["name"]: c["id"] for c in cats}
    images = []
    for i in range(1, n_images + 1):
        Image.fromarray(np.full((30, 40, 3), 40 * i, dtype=np.uint8)).save(folder / f"img{i}.png")
        images.append({"id": i, "file_name": f"img{i}.png", "width": 40, "height": 30})
    anns = [{"id": k + 1, "image_id": img, "category_id": ids.get(cat, cat), "bbox": bbox, "iscrowd": 0}
            for k, (img, cat, bbox) in enumerate(boxes)]
    path = folder / "ann.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


@pytest.fixture
def good_boxes() -> list:
    return [(1, "cat", [2, 3, 10, 8]), (2, "dog", [5, 5, 20, 20])]


# ---------------------------------------------------------------- the synthetic detection set

def test_synthetic_set_has_several_shapes_with_exact_boxes():
    source = open_detection_source("synthetic-shapes:n=30,size=64,count=4,noise=0,colour=white,background=dark")
    assert len(source) == 30 and source.classes == ["circle", "square", "triangle"]
    counts = [len(item.boxes) for item in source.items]
    assert max(counts) <= 4 and np.mean(counts) > 1.5 and max(counts) >= 3
    for i, item in enumerate(source.items):
        image, target = source.read(i)
        assert image.shape == (3, 64, 64) and image.dtype == torch.uint8
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        bright = image[0].numpy() > 128  # white shapes on a dark, noiseless background
        inside = np.zeros_like(bright)
        for x1, y1, x2, y2 in item.boxes.astype(int):
            ys, xs = np.nonzero(bright[y1:y2, x1:x2])  # the shape touches every edge of its box
            assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)
            inside[y1:y2, x1:x2] = True
        assert not (bright & ~inside).any()  # no shape without its box


def test_synthetic_set_is_seeded_and_checks_its_options():
    a, b = open_detection_source(SYNTHETIC), open_detection_source(SYNTHETIC)
    assert boxes_within(a, b) == 0 and np.array_equal(a.images[3], b.images[3])
    with pytest.raises(CnnkitError, match="unknown synthetic-shapes option 'objects'"):
        open_detection_source("synthetic-shapes:objects=3")


# ---------------------------------------------------------------- round trips

def round_trip(source: DetectionSource, tmp: Path) -> DetectionSource:
    """COCO → YOLO → VOC → COCO, each written to disk and opened again."""
    coco = write_coco(source, tmp / "coco" / "ann.json")
    yolo = write_yolo(open_detection_source(coco), tmp / "yolo")
    voc = write_voc(open_detection_source(yolo), tmp / "voc")
    return open_detection_source(write_coco(open_detection_source(voc), tmp / "coco2"))


def test_round_trip_keeps_boxes_and_labels(tmp_path):
    source = open_detection_source(SYNTHETIC)
    back = round_trip(source, tmp_path)
    assert back.classes == source.classes
    assert boxes_within(source, back) <= 1.0  # inf if a box or a label went missing
    assert np.array_equal(back.read(5)[0], source.read(5)[0])  # the pixels travelled with the annotations


def test_round_trip_pennfudan(tmp_path, data_root):
    if not (data_root / "pennfudan").is_dir():
        pytest.skip("Penn-Fudan not found in the data folder")
    source = open_detection_source(data_root / "pennfudan")
    back = round_trip(source, tmp_path)
    assert back.num_boxes == 423 and boxes_within(source, back) <= 1.0


def test_voc_corners_are_one_based_and_inclusive(tmp_path, good_boxes):
    source = open_detection_source(write_coco_file(tmp_path / "c", good_boxes))
    folder = write_voc(source, tmp_path / "voc")
    text = (folder / "Annotations" / "img1.xml").read_text()
    assert "<xmin>3</xmin>" in text and "<ymin>4</ymin>" in text and "<xmax>12</xmax>" in text  # [2, 3, 10, 8]
    yolo = (write_yolo(source, tmp_path / "yolo") / "labels" / "img1.txt").read_text().split()
    assert yolo == ["0", f"{7 / 40:.6f}", f"{7 / 30:.6f}", f"{10 / 40:.6f}", f"{8 / 30:.6f}"]


def test_to_coco_dict_opens_in_pycocotools(good_boxes, tmp_path):
    from pycocotools.coco import COCO

    data = to_coco_dict(open_detection_source(write_coco_file(tmp_path, good_boxes)))
    assert [c["id"] for c in data["categories"]] == [1, 2]
    assert data["annotations"][1]["bbox"] == [5, 5, 20, 20] and data["annotations"][1]["area"] == 400
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    assert len(coco.getAnnIds(catIds=[2])) == 1


# ---------------------------------------------------------------- Penn-Fudan and masks

def test_pennfudan_counts_and_boxes_against_masks(data_root):
    if not (data_root / "pennfudan").is_dir():
        pytest.skip("Penn-Fudan not found in the data folder")
    text = read_pennfudan(data_root / "pennfudan")
    masks = read_pennfudan(data_root / "pennfudan", boxes="masks")
    assert len(text) == 170 and text.num_boxes == 423 and text.classes == ["person"]
    assert all(item.mask_path is not None and item.mask_path.is_file() for item in text.items)
    assert text.items[0].boxes.tolist() == [[159, 181, 302, 431], [419, 170, 535, 486]]  # (160, 182) - (302, 431)
    diff = np.concatenate([np.abs(a.boxes - b.boxes).max(axis=1) for a, b in zip(text.items, masks.items)])
    assert len(diff) == 423
    assert np.mean(diff <= 1) > 0.98  # measured: 99 % within 1 px, the worst 6 px
    assert diff.max() <= 8


def test_masks_to_boxes_on_hand_made_masks():
    mask = np.zeros((10, 12), dtype=np.uint8)
    mask[2:5, 3:7] = 1  # rows 2..4, columns 3..6
    mask[8, 11] = 4  # one pixel in the corner; ids skip 2 and 3
    mask[0:10, 0] = 7
    boxes, ids = masks_to_boxes(mask)
    assert ids.tolist() == [1, 4, 7] and boxes.dtype == np.float64
    assert boxes.tolist() == [[3, 2, 7, 5], [11, 8, 12, 9], [0, 0, 1, 10]]
    rgb_boxes, _ = masks_to_boxes(np.stack([mask] * 3, axis=-1))
    assert np.array_equal(rgb_boxes, boxes)
    empty_boxes, empty_ids = masks_to_boxes(np.zeros((4, 4), dtype=np.uint8))
    assert empty_boxes.shape == (0, 4) and empty_ids.shape == (0,)


# ---------------------------------------------------------------- malformed annotation files: one-line errors

def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [,]}')
    with pytest.raises(CnnkitError) as err:
        read_detection(path)
    assert str(path) in one_line(err) and "not valid JSON" in str(err.value) and "line 1" in str(err.value)


def test_coco_missing_key_and_bad_bbox(tmp_path, good_boxes):
    path = write_coco_file(tmp_path, good_boxes)
    data = json.loads(path.read_text())
    del data["annotations"][1]["category_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(CnnkitError, match=r"annotations\[1\] lacks 'category_id'"):
        read_detection(path)
    path = write_coco_file(tmp_path, [(1, "cat", [1, 2, 3])])
    with pytest.raises(CnnkitError, match=r"bbox \[1, 2, 3\]; expected \[x, y, width, height\]"):
        read_detection(path)
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(CnnkitError, match="missing key 'annotations'"):
        read_detection(path)


def test_coco_image_missing_on_disk(tmp_path, good_boxes):
    path = write_coco_file(tmp_path, good_boxes)
    (tmp_path / "img2.png").unlink()
    with pytest.raises(CnnkitError) as err:
        read_detection(path)
    assert "img2.png is listed but missing on disk" in one_line(err) and "--images" in str(err.value)
    # the same file read with its images elsewhere
    (tmp_path / "pics").mkdir()
    for name in ("img1.png",):
        (tmp_path / name).rename(tmp_path / "pics" / name)
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "pics" / "img2.png")
    assert len(read_detection(path, images=tmp_path / "pics")) == 2


def test_coco_duplicate_image_id_and_orphan_annotation(tmp_path, good_boxes):
    path = write_coco_file(tmp_path, good_boxes)
    data = json.loads(path.read_text())
    data["annotations"][0]["image_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(CnnkitError, match="image_id 99, which is not in 'images'"):
        read_detection(path)
    data["annotations"][0]["image_id"] = 1
    data["images"][1]["id"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(CnnkitError, match="image id 1 is listed twice"):
        read_detection(path)


def test_voc_parse_error_and_missing_box(tmp_path, good_boxes):
    folder = write_voc(open_detection_source(write_coco_file(tmp_path / "c", good_boxes)), tmp_path / "voc")
    xml = folder / "Annotations" / "img1.xml"
    good = xml.read_text()
    xml.write_text(good.replace("</annotation>", ""))
    with pytest.raises(CnnkitError) as err:
        read_detection(folder)
    assert one_line(err).startswith(f"{xml}: XML parse error")
    xml.write_text(good.replace("<xmax>12</xmax>", ""))
    with pytest.raises(CnnkitError, match=r"img1.xml: <bndbox> lacks <xmax>"):
        read_detection(folder)


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", r"labels/img1.txt:2: 4 fields; a YOLO box line is 'class cx cy w h' \(5 fields\)"),
    ("0 0.5 1.5 0.2 0.2", r"labels/img1.txt:2: values \['0.5', '1.5', '0.2', '0.2'\] outside \[0, 1\]"),
    ("cat 0.5 0.5 0.2 0.2", r"labels/img1.txt:2: 'cat 0.5 0.5 0.2 0.2' is not 'class cx cy w h'"),
])
def test_yolo_bad_lines(tmp_path, good_boxes, line, message):
    folder = write_yolo(open_detection_source(write_coco_file(tmp_path / "c", good_boxes)), tmp_path / "yolo")
    labels = folder / "labels" / "img1.txt"
    labels.write_text(labels.read_text() + line + "\n")
    with pytest.raises(CnnkitError, match=message) as err:
        read_detection(folder)
    one_line(err)


def test_yolo_needs_class_names(tmp_path, good_boxes):
    folder = write_yolo(open_detection_source(write_coco_file(tmp_path / "c", good_boxes)), tmp_path / "yolo")
    (folder / "data.yaml").unlink()
    assert read_detection(folder).classes == ["cat", "dog"]  # classes.txt is enough
    (folder / "classes.txt").unlink()
    with pytest.raises(CnnkitError, match="no data.yaml or classes.txt"):
        read_detection(folder)


def test_unknown_source():
    with pytest.raises(CnnkitError, match="detection data not found: 'nowhere/x'"):
        read_detection("nowhere/x")


# ---------------------------------------------------------------- bad annotations: fixed, dropped or fatal

def check(tmp_path, boxes, policy=None, **kw):
    return validate(read_detection(write_coco_file(tmp_path, boxes, **kw)), policy)


def test_clean_data_reports_no_problems(tmp_path, good_boxes, caplog):
    with caplog.at_level(logging.INFO, logger="cnnkit"):
        source, report = check(tmp_path, good_boxes)
    assert report.problems == 0 and source.num_boxes == 2
    assert "checked 2 images, 2 boxes: no problems" in caplog.text


def test_box_outside_the_image(tmp_path, caplog):
    boxes = [(1, "cat", [30, 20, 20, 20]), (2, "dog", [1, 1, 5, 5])]  # x2 = 50 > 40, y2 = 40 > 30
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(tmp_path, boxes)  # default: fix = clip
    assert source.items[0].boxes.tolist() == [[30, 20, 40, 30]]
    assert report.counts["outside"] == 1
    assert "1 box(es) outside the image: clipped to the image; e.g. " in caplog.text
    assert "img1.png box [30, 20, 50, 40] in a 40×30 image" in caplog.text
    source, _ = check(tmp_path, boxes, "outside=drop")
    assert len(source.items[0].boxes) == 0
    with pytest.raises(CnnkitError) as err:
        check(tmp_path, boxes, {"outside": "fatal"})
    assert one_line(err).startswith("1 box(es) outside the image, first: ")
    assert "img1.png box [30, 20, 50, 40]" in str(err.value) and "--policy outside=fix (or drop)" in str(err.value)


def test_box_with_zero_or_negative_area(tmp_path, caplog):
    boxes = [(1, "cat", [5, 5, 0, 4]), (1, "cat", [20, 10, -5, 5]), (2, "dog", [1, 1, 5, 5])]
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(tmp_path, boxes)  # default: drop
    assert report.counts["zero_area"] == 2 and len(source.items[0].boxes) == 0
    assert "2 box(es) with zero or negative area: dropped; e.g. " in caplog.text and "box [5, 5, 5, 9]" in caplog.text
    source, _ = check(tmp_path, boxes, "zero_area=fix")  # reversed corners swapped, the empty box dropped
    assert source.items[0].boxes.tolist() == [[15, 10, 20, 15]]
    with pytest.raises(CnnkitError) as err:
        check(tmp_path, boxes, "zero_area=fatal")
    assert one_line(err).startswith("2 box(es) with zero or negative area, first: ")
    assert "correct the box's corners, or set --policy zero_area=fix (or drop)" in str(err.value)


def test_unknown_class(tmp_path, caplog):
    boxes = [(1, "cat", [1, 1, 5, 5]), (2, 7, [2, 2, 6, 6])]  # category id 7 is not in the categories
    with pytest.raises(CnnkitError) as err:
        check(tmp_path, boxes)  # default: fatal
    message = one_line(err)
    assert message.startswith("1 box(es) of a class not in the class list, first: ")
    assert "img2.png class '7' box [2, 2, 8, 8]" in message and "--policy unknown_class=fix (or drop)" in message
    source, _ = check(tmp_path, boxes, "unknown_class=fix")
    assert source.classes == ["cat", "dog", "7"] and source.items[1].labels.tolist() == [2]
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(tmp_path, boxes, "unknown_class=drop")
    assert source.classes == ["cat", "dog"] and len(source.items[1].boxes) == 0 and report.counts["empty_image"] == 1
    assert "of a class not in the class list: dropped" in caplog.text


def test_unknown_yolo_class_index(tmp_path, good_boxes):
    folder = write_yolo(open_detection_source(write_coco_file(tmp_path / "c", good_boxes)), tmp_path / "yolo")
    (folder / "labels" / "img1.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    with pytest.raises(CnnkitError, match=r"img1.png class '5' box \[16, 12, 24, 18\]"):
        open_detection_source(folder)


def test_image_without_annotations(tmp_path, caplog):
    boxes = [(1, "cat", [1, 1, 5, 5])]  # image 2 has none
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(tmp_path, boxes)  # default: keep as a negative image, reported
    assert len(source) == 2 and report.counts["empty_image"] == 1
    assert "1 image(s) without annotations: kept as negative images; e.g. " in caplog.text and "img2.png" in caplog.text
    source, _ = check(tmp_path, boxes, "empty_image=drop")
    assert len(source) == 1 and source.items[0].image_id == 1
    with pytest.raises(CnnkitError) as err:
        check(tmp_path, boxes, "empty_image=fatal")
    assert one_line(err).startswith("1 image(s) without annotations, first: ")
    assert "--policy empty_image=keep (or drop)" in str(err.value)


def test_duplicate_boxes(tmp_path, caplog):
    boxes = [(1, "cat", [2, 2, 20, 20]), (1, "cat", [2, 2, 20, 20]), (1, "cat", [2, 2, 20, 20.2]),
             (1, "dog", [2, 2, 20, 20]), (2, "dog", [1, 1, 5, 5])]  # the dog box has another class: kept
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        source, report = check(tmp_path, boxes)  # default: drop the later copies
    assert report.counts["duplicate"] == 2 and source.items[0].labels.tolist() == [0, 1]
    assert "2 duplicate box(es) (same class, IoU > 0.95): dropped" in caplog.text
    with pytest.raises(CnnkitError) as err:
        check(tmp_path, boxes, "duplicate=fatal")
    assert one_line(err).startswith("2 duplicate box(es) (same class, IoU > 0.95), first: ")
    assert "remove the repeated box, or set --policy duplicate=fix (or drop)" in str(err.value)


def test_report_examples_are_capped(tmp_path):
    boxes = [(1, "cat", [1, 1, 0, 0])] * 10 + [(2, "dog", [1, 1, 5, 5])]
    _, report = check(tmp_path, boxes)
    assert report.counts["zero_area"] == 10 and len(report.examples["zero_area"]) == 3
    assert report.summary()[0] == "checked 2 images, 11 boxes: 11 problem(s)"  # 10 zero-area + 1 empty image


def test_bad_policy():
    with pytest.raises(CnnkitError, match="unknown annotation check 'outsde'; did you mean 'outside'"):
        parse_policy("outsde=drop")
    with pytest.raises(CnnkitError, match="--policy outside=keep: choose one of fix, drop, fatal"):
        parse_policy({"outside": "keep"})


# ---------------------------------------------------------------- cnnkit convert

def test_cli_convert(capsys, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="cnnkit"):
        code, out, err = run_cli(capsys, "convert", SYNTHETIC, "--to", "voc", "--out", str(tmp_path / "voc"))
    assert code == 0 and out.strip().splitlines()[-1] == str(tmp_path / "voc")
    assert "checked 12 images" in caplog.text  # the report goes to the log (stderr), the path to stdout
    code, out, _ = run_cli(capsys, "convert", str(tmp_path / "voc"), "--to", "coco", "--out", str(tmp_path / "c.json"))
    assert code == 0 and out.strip().splitlines()[-1] == str(tmp_path / "c.json")
    assert boxes_within(open_detection_source(SYNTHETIC), open_detection_source(tmp_path / "c.json")) <= 1
    code, out, _ = run_cli(capsys, "convert", str(tmp_path / "c.json"), "--check-only")
    assert code == 0 and out.startswith("checked 12 images")


def test_cli_convert_errors(capsys, tmp_path, caplog):
    path = write_coco_file(tmp_path, [(1, "cat", [1, 1, 5, 5]), (2, 7, [2, 2, 6, 6])])
    code, out, err = run_cli(capsys, "convert", str(path), "--to", "yolo", "--out", str(tmp_path / "y"))
    assert_one_line_error(code, err, "class not in the class list", "img2.png", "--policy unknown_class=fix")
    assert code == 2 and not (tmp_path / "y").exists()
    with caplog.at_level(logging.WARNING, logger="cnnkit"):
        code, _, err = run_cli(capsys, "convert", str(path), "--to", "yolo", "--out", str(tmp_path / "y"),
                               "--policy", "unknown_class=drop")
    assert code == 0 and "of a class not in the class list: dropped" in caplog.text
    path.write_text("{")
    code, _, err = run_cli(capsys, "convert", str(path), "--to", "yolo", "--out", str(tmp_path / "y2"))
    assert_one_line_error(code, err, str(path), "not valid JSON")
    code, _, err = run_cli(capsys, "convert", SYNTHETIC, "--out", str(tmp_path / "z"))
    assert_one_line_error(code, err, "convert needs --to coco|voc|yolo")
    code, _, err = run_cli(capsys, "convert", SYNTHETIC, "--to", "pascal", "--out", str(tmp_path / "z"))
    assert code == 2 and "invalid choice: 'pascal'" in err
