"""Penn-Fudan (cnnkit.data.detection.annotations.pennfudan): the PASCAL v1.00 text's 1-based inclusive corners,
boxes from the instance masks instead, each object's mask by its id; and the real set where it is found."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.detection.annotations.pennfudan import is_pennfudan, read_pennfudan
from cnnkit.errors import CnnkitError

TEXT = """# Compatible with PASCAL Annotation Version 1.00
Image filename : "PennFudanPed/PNGImages/FudanPed00001.png"
Image size (X x Y x C) : 20 x 16 x 3
Database : "The Penn-Fudan-Pedestrian Database"
Objects with ground truth : {n} {{ "PASpersonWalking" "PASpersonWalking" }}
# Top left pixel co-ordinates : (1, 1)
Original label for object 1 "PASpersonWalking" : "PennFudanPed"
Bounding box for object 1 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (2, 3) - (6, 10)
Pixel mask for object 1 "PASpersonWalking" : "PennFudanPed/PedMasks/FudanPed00001_mask.png"
Original label for object 2 "PASpersonWalking" : "PennFudanPed"
Bounding box for object 2 "PASpersonWalking" (Xmin, Ymin) - (Xmax, Ymax) : (10, 1) - (20, 16)
Pixel mask for object 2 "PASpersonWalking" : "PennFudanPed/PedMasks/FudanPed00001_mask.png"
"""


def _folder(root, declared: int = 2):
    for sub in ("Annotation", "PNGImages", "PedMasks"):
        (root / sub).mkdir(parents=True)
    Image.fromarray(np.zeros((16, 20, 3), dtype=np.uint8)).save(root / "PNGImages" / "FudanPed00001.png")
    ids = np.zeros((16, 20), dtype=np.uint8)
    ids[2:10, 1:6] = 1  # the text's box (2, 3) - (6, 10), 1-based inclusive
    ids[1:15, 10:19] = 2  # one pixel short of the text's (10, 1) - (20, 16) on three sides
    Image.fromarray(ids).save(root / "PedMasks" / "FudanPed00001_mask.png")
    (root / "Annotation" / "FudanPed00001.txt").write_text(TEXT.format(n=declared))
    return root, ids


def test_text_boxes_are_zero_based_and_exclusive(tmp_path):
    root, _ = _folder(tmp_path / "pf")
    assert is_pennfudan(root) and not is_pennfudan(tmp_path)
    source = read_pennfudan(root)
    assert source.classes == ["person"] and len(source) == 1
    item = source.items[0]
    assert item.boxes.tolist() == [[1, 2, 6, 10], [9, 0, 20, 16]] and item.labels.tolist() == [0, 0]
    assert (item.width, item.height) == (20, 16) and item.mask_path.name == "FudanPed00001_mask.png"


def test_boxes_from_masks_and_masks_by_object_id(tmp_path):
    root, ids = _folder(tmp_path / "pf")
    source = read_pennfudan(root, boxes="masks")
    assert source.items[0].boxes.tolist() == [[1, 2, 6, 10], [10, 1, 19, 15]]  # the extent of each id's pixels
    masks = source.masks(0)
    assert masks.shape == (2, 16, 20)
    for k in (0, 1):
        np.testing.assert_array_equal(masks[k].numpy(), (ids == k + 1).astype(np.uint8))


def test_declared_count_must_match_the_box_lines(tmp_path):
    root, _ = _folder(tmp_path / "pf", declared=3)
    with pytest.raises(CnnkitError, match="declares 3 objects but has 2 bounding box lines"):
        read_pennfudan(root)


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
