"""cnnkit.metrics.mask_rle: RLE encoding, areas and mask IoU against NumPy pixel counts and pycocotools.mask."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from cnnkit.errors import CnnkitError
from cnnkit.metrics.mask_rle import encode_masks, mask_area, mask_areas, mask_iou, rles_of, to_rle

RNG = np.random.default_rng(0)


def decode(rles: list[dict]) -> np.ndarray:
    """RLEs → (K, H, W) 0/1 masks through pycocotools."""
    return np.asarray(mask_utils.decode(rles)).transpose(2, 0, 1)


def test_encode_binarises_probabilities_and_round_trips():
    probs = torch.rand(5, 1, 9, 7, generator=torch.Generator().manual_seed(0))  # Mask R-CNN's (K, 1, H, W)
    rles = encode_masks(probs)
    assert len(rles) == 5 and all(r["size"] == [9, 7] for r in rles)
    np.testing.assert_array_equal(decode(rles), (probs[:, 0] > 0.5).numpy())
    # 0/1 integer targets (K, H, W), tensors or arrays, keep every non-zero pixel
    labels = RNG.integers(0, 2, (3, 6, 8), dtype=np.uint8)
    np.testing.assert_array_equal(decode(encode_masks(labels)), labels)
    np.testing.assert_array_equal(decode(encode_masks(torch.from_numpy(labels))), labels)
    assert encode_masks(np.zeros((0, 4, 4), np.uint8)) == []


def test_areas_are_pixel_counts_also_past_255_masks():
    masks = RNG.integers(0, 2, (300, 5, 5), dtype=np.uint8)  # pycocotools' area() alone fails past 255
    rles = encode_masks(masks)
    np.testing.assert_array_equal(mask_areas(rles), masks.reshape(300, -1).sum(1))
    assert mask_area(rles[7]) == int(masks[7].sum())
    assert mask_areas([]).shape == (0,)


def test_mask_iou_equals_the_pixel_formula_and_crowd_uses_detection_area():
    dt = RNG.integers(0, 2, (4, 10, 10), dtype=np.uint8)
    gt = RNG.integers(0, 2, (3, 10, 10), dtype=np.uint8)
    crowd = np.array([0, 1, 0])
    inter = np.einsum("dhw,ghw->dg", dt.astype(int), gt.astype(int))
    union = dt.reshape(4, -1).sum(1)[:, None] + gt.reshape(3, -1).sum(1)[None] - inter
    expected = inter / union
    expected[:, 1] = inter[:, 1] / dt.reshape(4, -1).sum(1)  # a crowd region: intersection over detection area
    np.testing.assert_allclose(mask_iou(encode_masks(dt), encode_masks(gt), crowd), expected, rtol=1e-12)
    assert mask_iou([], encode_masks(gt), crowd).shape == (0, 3)


def test_to_rle_reads_every_coco_segmentation_form_as_pycocotools():
    h, w = 12, 10
    polygons = [[1, 1, 8, 1, 8, 6, 1, 6], [2, 8, 5, 8, 5, 11]]
    expected = mask_utils.merge(mask_utils.frPyObjects(polygons, h, w))
    assert to_rle(polygons, (h, w), "annotation 1") == expected
    binary = RNG.integers(0, 2, (h, w), dtype=np.uint8)
    compressed = mask_utils.encode(np.asfortranarray(binary))
    assert to_rle(compressed, (None, None), "annotation 2") is compressed  # used as it is
    # uncompressed RLE: column-major run lengths starting with zeros
    flat = binary.flatten(order="F")
    edges = np.flatnonzero(np.diff(np.r_[0, flat, 1 - flat[-1]]))
    counts = np.diff(np.r_[0, edges]).tolist()
    np.testing.assert_array_equal(mask_utils.decode(to_rle({"size": [h, w], "counts": counts}, (h, w), "a")), binary)


def test_to_rle_refuses_in_one_line():
    with pytest.raises(CnnkitError, match="annotation 3 has no 'segmentation'") as info:
        to_rle([], (4, 4), "annotation 3")
    assert "\n" not in str(info.value)
    with pytest.raises(CnnkitError, match="lacks 'height'/'width'"):
        to_rle([[0, 0, 2, 0, 2, 2]], (None, 4), "annotation 4")


def test_rles_of_prefers_encoded_masks():
    masks = torch.tensor([[[0, 1], [1, 1]]], dtype=torch.uint8)
    assert rles_of({"rles": ["kept"]}) == ["kept"]
    assert rles_of({"masks": masks}) == encode_masks(masks)
    assert rles_of({"boxes": torch.zeros(0, 4)}) is None
