"""cnnkit.data.detection.source: any format opened by its path, the synthetic detection set, the round trip
through every writer, `convert` / `check_annotations`, and `cnnkit convert`."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.conftest import assert_one_line_error, run_cli

from cnnkit.data.detection.source import (
    DetectionSource,
    boxes_within,
    check_annotations,
    convert,
    open_detection_source,
    read_detection,
    write_coco,
    write_voc,
    write_yolo,
)
from cnnkit.errors import CnnkitError

SYNTHETIC = "synthetic-shapes:n=12,size=64,count=4,seed=1"


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


def test_synthetic_masks_fill_their_boxes():
    source = open_detection_source("synthetic-shapes:n=4,size=48,count=3,noise=0,seed=2")
    assert source.has_masks
    image, target = source.read(0, masks=True)
    masks = target["masks"]
    assert masks.shape == (len(target["boxes"]), 48, 48) and masks.dtype == torch.uint8
    for mask, (x1, y1, x2, y2) in zip(masks, target["boxes"].int().tolist()):
        ys, xs = torch.nonzero(mask, as_tuple=True)  # each mask spans exactly its box
        assert (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) == (x1, y1, x2, y2)


def test_synthetic_set_is_seeded_and_checks_its_options():
    a, b = open_detection_source(SYNTHETIC), open_detection_source(SYNTHETIC)
    assert boxes_within(a, b) == 0 and np.array_equal(a.images[3], b.images[3])
    with pytest.raises(CnnkitError, match="unknown synthetic-shapes option 'objects'"):
        open_detection_source("synthetic-shapes:objects=3")


# ---------------------------------------------------------------- opening by path

def test_read_detection_recognises_each_layout(tmp_path, coco_file, good_boxes):
    source = open_detection_source(coco_file(tmp_path / "c", good_boxes))
    write_voc(source, tmp_path / "voc")
    write_yolo(source, tmp_path / "yolo")
    write_coco(source, tmp_path / "coco_folder")  # a folder holding annotations.json + images/
    for layout in ("voc", "yolo", "coco_folder"):
        back = read_detection(tmp_path / layout)
        assert back.classes == ["cat", "dog"] and boxes_within(source, back) < 1e-4, layout


def test_unknown_source_and_wrong_files(tmp_path):
    with pytest.raises(CnnkitError, match="detection data not found: 'nowhere/x'"):
        read_detection("nowhere/x")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CnnkitError, match="not a detection data set"):
        read_detection(tmp_path / "empty")
    (tmp_path / "boxes.csv").write_text("x,y\n")
    with pytest.raises(CnnkitError, match="must be COCO JSON"):
        read_detection(tmp_path / "boxes.csv")


def test_boxes_within_is_the_largest_corner_difference():
    a = open_detection_source(SYNTHETIC)
    b = open_detection_source(SYNTHETIC)
    b.items[2].boxes = b.items[2].boxes + np.array([0.0, 0.0, 2.5, 0.0])  # one corner of one box moved
    assert boxes_within(a, b) == pytest.approx(2.5)
    b.items[3].labels = (b.items[3].labels + 1) % 3
    assert boxes_within(a, b) == float("inf")  # labels disagree
    assert boxes_within(a, DetectionSource("x", a.classes, a.items[:5])) == float("inf")  # counts disagree


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


def test_convert_and_check_annotations(tmp_path, coco_file, good_boxes):
    path = coco_file(tmp_path / "c", good_boxes + [(1, "cat", [2, 3, 10, 8])])  # one duplicate box
    out = convert(path, "yolo", tmp_path / "y")
    assert out == tmp_path / "y" and (out / "labels" / "img1.txt").read_text().count("\n") == 1  # dropped
    report = check_annotations(path)
    assert report.counts["duplicate"] == 1 and report.images == 2 and report.boxes == 3
    with pytest.raises(CnnkitError, match="unknown annotation format 'yml'.*did you mean 'yolo'"):
        convert(path, "yml", tmp_path / "z")


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


def test_cli_convert_errors(capsys, tmp_path, caplog, coco_file):
    path = coco_file(tmp_path, [(1, "cat", [1, 1, 5, 5]), (2, 7, [2, 2, 6, 6])])
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
