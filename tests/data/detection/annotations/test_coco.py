"""COCO JSON (cnnkit.data.detection.annotations.coco): a hand-written file read box by box, written back and
opened by pycocotools, and each malformed file a one-line error."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.detection.annotations.coco import read_coco, to_coco_dict, write_coco
from cnnkit.errors import CnnkitError


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


def test_hand_written_file_gives_xyxy_boxes_and_classes_in_id_order(tmp_path):
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    data = {"images": [{"id": 10, "file_name": "a.png"}],  # no width/height: read from the file's header
            "categories": [{"id": 9, "name": "zebra"}, {"id": 3, "name": "ant"}],
            "annotations": [{"image_id": 10, "category_id": 9, "bbox": [1.5, 2, 10, 4], "iscrowd": 1},
                            {"image_id": 10, "category_id": 3, "bbox": [0, 0, 40, 30],
                             "segmentation": [[0, 0, 40, 0, 40, 30]]}]}
    (tmp_path / "ann.json").write_text(json.dumps(data))
    source = read_coco(tmp_path / "ann.json")
    assert source.classes == ["ant", "zebra"]  # sorted by category id: 3 → class 0, 9 → class 1
    item = source.items[0]
    assert (item.image_id, item.width, item.height) == (10, 40, 30)
    assert item.boxes.tolist() == [[1.5, 2, 11.5, 6], [0, 0, 40, 30]] and item.labels.tolist() == [1, 0]
    assert item.iscrowd.tolist() == [1, 0]
    assert item.segments is None  # one annotation has no segmentation: no masks for the image


def test_written_file_reopens_and_opens_in_pycocotools(tmp_path, coco_file, good_boxes):
    from pycocotools.coco import COCO

    source = read_coco(coco_file(tmp_path / "src", good_boxes))
    path = write_coco(source, tmp_path / "out")
    assert path == tmp_path / "out" / "annotations.json" and (tmp_path / "out" / "images" / "img2.png").is_file()
    back = read_coco(path)
    assert [i.boxes.tolist() for i in back.items] == [[[2, 3, 12, 11]], [[5, 5, 25, 25]]]
    coco = COCO(str(path))
    assert coco.loadAnns(coco.getAnnIds(imgIds=[2]))[0]["bbox"] == [5, 5, 20, 20]


def test_to_coco_dict_opens_in_pycocotools(coco_file, good_boxes, tmp_path):
    from pycocotools.coco import COCO

    data = to_coco_dict(read_coco(coco_file(tmp_path, good_boxes)))
    assert [c["id"] for c in data["categories"]] == [1, 2]
    assert data["annotations"][1]["bbox"] == [5, 5, 20, 20] and data["annotations"][1]["area"] == 400
    coco = COCO()
    coco.dataset = data
    coco.createIndex()
    assert len(coco.getAnnIds(catIds=[2])) == 1


def test_bad_json(tmp_path):
    path = tmp_path / "ann.json"
    path.write_text('{"images": [,]}')
    with pytest.raises(CnnkitError) as err:
        read_coco(path)
    assert str(path) in one_line(err) and "not valid JSON" in str(err.value) and "line 1" in str(err.value)
    path.write_text("[]")
    with pytest.raises(CnnkitError, match="a COCO file is a JSON object"):
        read_coco(path)


def test_coco_missing_key_and_bad_bbox(tmp_path, coco_file, good_boxes):
    path = coco_file(tmp_path, good_boxes)
    data = json.loads(path.read_text())
    del data["annotations"][1]["category_id"]
    path.write_text(json.dumps(data))
    with pytest.raises(CnnkitError, match=r"annotations\[1\] lacks 'category_id'"):
        read_coco(path)
    path = coco_file(tmp_path, [(1, "cat", [1, 2, 3])])
    with pytest.raises(CnnkitError, match=r"bbox \[1, 2, 3\]; expected \[x, y, width, height\]"):
        read_coco(path)
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(CnnkitError, match="missing key 'annotations'"):
        read_coco(path)


def test_coco_image_missing_on_disk(tmp_path, coco_file, good_boxes):
    path = coco_file(tmp_path, good_boxes)
    (tmp_path / "img2.png").unlink()
    with pytest.raises(CnnkitError) as err:
        read_coco(path)
    assert "img2.png is listed but missing on disk" in one_line(err) and "--images" in str(err.value)
    # the same file read with its images elsewhere
    (tmp_path / "pics").mkdir()
    (tmp_path / "img1.png").rename(tmp_path / "pics" / "img1.png")
    Image.fromarray(np.zeros((30, 40, 3), dtype=np.uint8)).save(tmp_path / "pics" / "img2.png")
    assert len(read_coco(path, images=tmp_path / "pics")) == 2


def test_coco_duplicate_image_id_and_orphan_annotation(tmp_path, coco_file, good_boxes):
    path = coco_file(tmp_path, good_boxes)
    data = json.loads(path.read_text())
    data["annotations"][0]["image_id"] = 99
    path.write_text(json.dumps(data))
    with pytest.raises(CnnkitError, match="image_id 99, which is not in 'images'"):
        read_coco(path)
    data["annotations"][0]["image_id"] = 1
    data["images"][1]["id"] = 1
    path.write_text(json.dumps(data))
    with pytest.raises(CnnkitError, match="image id 1 is listed twice"):
        read_coco(path)
