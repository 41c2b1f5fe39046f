"""YOLO txt (cnnkit.data.detection.annotations.yolo): normalised `class cx cy w h` lines ↔ pixel boxes, class
names from data.yaml or classes.txt, and the one-line errors of bad label lines."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.detection.annotations.coco import read_coco
from cnnkit.data.detection.annotations.yolo import read_yolo, write_yolo
from cnnkit.data.detection.source import open_detection_source
from cnnkit.errors import CnnkitError


def test_hand_written_labels_become_pixel_boxes(tmp_path):
    (tmp_path / "images" / "sub").mkdir(parents=True)
    (tmp_path / "labels" / "sub").mkdir(parents=True)
    Image.fromarray(np.zeros((50, 200, 3), dtype=np.uint8)).save(tmp_path / "images" / "sub" / "a.png")
    Image.fromarray(np.zeros((10, 10, 3), dtype=np.uint8)).save(tmp_path / "images" / "b.png")  # no label file
    (tmp_path / "labels" / "sub" / "a.txt").write_text("1 0.5 0.5 0.25 0.4\n\n0 0.1 0.2 0.2 0.4\n")
    (tmp_path / "data.yaml").write_text("names: {0: weed, 1: crop}\n")
    source = read_yolo(tmp_path)
    assert source.classes == ["weed", "crop"]
    b, a = source.items  # sorted paths: images/b.png before images/sub/a.png
    assert len(b.boxes) == 0
    # cx 100, cy 25, w 50, h 20 → (75, 15, 125, 35); cx 20, cy 10, w 40, h 20 → (0, 0, 40, 20)
    np.testing.assert_allclose(a.boxes, [[75, 15, 125, 35], [0, 0, 40, 20]])
    assert a.labels.tolist() == [1, 0]


def test_written_lines_are_normalised_centres_and_sizes(tmp_path, coco_file, good_boxes):
    source = read_coco(coco_file(tmp_path / "c", good_boxes))
    folder = write_yolo(source, tmp_path / "yolo")
    line = (folder / "labels" / "img1.txt").read_text().split()  # [2, 3, 10, 8] in a 40×30 image
    assert line == ["0", f"{7 / 40:.6f}", f"{7 / 30:.6f}", f"{10 / 40:.6f}", f"{8 / 30:.6f}"]
    back = read_yolo(folder)
    assert back.classes == ["cat", "dog"]
    for x, y in zip(source.items, back.items):
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-4)  # 6 decimals of a 40 px side


@pytest.mark.parametrize("line, message", [
    ("0 0.5 0.5 0.2", r"labels/img1.txt:2: 4 fields; a YOLO box line is 'class cx cy w h' \(5 fields\)"),
    ("0 0.5 1.5 0.2 0.2", r"labels/img1.txt:2: values \['0.5', '1.5', '0.2', '0.2'\] outside \[0, 1\]"),
    ("cat 0.5 0.5 0.2 0.2", r"labels/img1.txt:2: 'cat 0.5 0.5 0.2 0.2' is not 'class cx cy w h'"),
])
def test_yolo_bad_lines(tmp_path, coco_file, good_boxes, line, message):
    folder = write_yolo(read_coco(coco_file(tmp_path / "c", good_boxes)), tmp_path / "yolo")
    labels = folder / "labels" / "img1.txt"
    labels.write_text(labels.read_text() + line + "\n")
    with pytest.raises(CnnkitError, match=message) as err:
        read_yolo(folder)
    assert "\n" not in str(err.value)


def test_yolo_needs_class_names(tmp_path, coco_file, good_boxes):
    folder = write_yolo(read_coco(coco_file(tmp_path / "c", good_boxes)), tmp_path / "yolo")
    (folder / "data.yaml").unlink()
    assert read_yolo(folder).classes == ["cat", "dog"]  # classes.txt is enough
    (folder / "classes.txt").unlink()
    with pytest.raises(CnnkitError, match="no data.yaml or classes.txt"):
        read_yolo(folder)
    (folder / "data.yaml").write_text("nc: 2\n")
    with pytest.raises(CnnkitError, match="missing 'names'"):
        read_yolo(folder)


def test_unknown_yolo_class_index(tmp_path, coco_file, good_boxes):
    folder = write_yolo(read_coco(coco_file(tmp_path / "c", good_boxes)), tmp_path / "yolo")
    (folder / "labels" / "img1.txt").write_text("5 0.5 0.5 0.2 0.2\n")
    assert read_yolo(folder).items[0].unknown == {0: "5"}
    with pytest.raises(CnnkitError, match=r"img1.png class '5' box \[16, 12, 24, 18\]"):
        open_detection_source(folder)  # unknown classes are fatal by default
