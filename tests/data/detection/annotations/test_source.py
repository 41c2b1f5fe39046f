"""The shared detection data model (cnnkit.data.detection.annotations.source): items in their documented dtypes,
instance masks → boxes (against hand-made masks), COCO segmentations decoded as pycocotools does, and images
exported under unique names."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data.detection.annotations.source import (
    DetectionSource,
    decode_segment,
    export_images,
    make_item,
    masks_to_boxes,
)
from cnnkit.errors import CnnkitError


def test_make_item_gives_the_documented_dtypes_and_shapes():
    item = make_item(3, None, 40.0, 30, [], [], iscrowd=[])
    assert item.boxes.shape == (0, 4) and item.boxes.dtype == np.float64
    assert item.labels.shape == (0,) and item.labels.dtype == np.int64 and item.iscrowd.dtype == np.int64
    item = make_item(3, None, 40, 30, [1, 2, 3, 4], [1])
    assert item.boxes.tolist() == [[1, 2, 3, 4]] and item.where() == "image 3"


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


def test_decode_segment_agrees_with_pycocotools():
    from pycocotools import mask as mask_utils

    polygon = [[2, 2, 12, 2, 12, 9, 2, 9]]
    expected = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygon, 10, 15)))
    np.testing.assert_array_equal(decode_segment(polygon, 10, 15), expected)
    blob = np.zeros((10, 15), dtype=np.uint8)
    blob[3:7, 4:11] = 1
    rle = mask_utils.encode(np.asfortranarray(blob))
    np.testing.assert_array_equal(decode_segment({**rle, "counts": rle["counts"].decode()}, 10, 15), blob)
    # uncompressed RLE: column-major run lengths, starting with background
    runs = {"size": [2, 3], "counts": [1, 2, 3]}  # column-major pixels 0 | 1 1 | 0 0 0
    np.testing.assert_array_equal(decode_segment(runs, 2, 3), [[0, 1, 0], [1, 0, 0]])
    assert decode_segment([[1, 1, 2, 2]], 4, 4).sum() == 0  # fewer than three points: no area
    with pytest.raises(CnnkitError, match="is 15×10 but the image is 16×10"):
        decode_segment({**rle, "counts": rle["counts"].decode()}, 10, 16)


def test_masks_of_an_item_by_instance_id(tmp_path):
    ids = np.zeros((6, 8), dtype=np.uint8)
    ids[1:3, 1:4], ids[4:6, 5:8] = 2, 5
    Image.fromarray(ids).save(tmp_path / "m.png")
    item = make_item(1, None, 8, 6, [[5, 4, 8, 6], [1, 1, 4, 3]], [0, 0], mask_path=tmp_path / "m.png",
                     segments=[5, 2])
    source = DetectionSource("x", ["a"], [item], images=[np.zeros((6, 8, 3), dtype=np.uint8)])
    image, target = source.read(0, masks=True)
    assert target["masks"].dtype == torch.uint8
    np.testing.assert_array_equal(target["masks"].numpy(), np.stack([ids == 5, ids == 2]).astype(np.uint8))
    plain = DetectionSource("y", ["a"], [make_item(1, None, 8, 6, [], [])])
    with pytest.raises(CnnkitError, match="y has no instance masks"):
        plain.masks(0)


def test_export_images_gives_unique_names(tmp_path):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    for folder, value in (("a", 10), ("b", 20)):
        Image.fromarray(np.full((4, 4, 3), value, dtype=np.uint8)).save(tmp_path / folder / "x.png")
    items = [make_item(1, tmp_path / "a" / "x.png", 4, 4, [], []), make_item(2, tmp_path / "b" / "x.png", 4, 4, [], []),
             make_item(7, None, 4, 4, [], [])]
    images = [None, None, np.full((4, 4, 3), 30, dtype=np.uint8)]
    names = export_images(DetectionSource("s", [], items, images=images), tmp_path / "out")
    assert names == ["x.png", "2_x.png", "000007.png"]
    values = [int(np.asarray(Image.open(tmp_path / "out" / n))[0, 0, 0]) for n in names]
    assert values == [10, 20, 30]  # each file's own pixels
