"""A hand-built COCO case whose every detection's label is known (for mAP's bad input and the error breakdown)."""
from __future__ import annotations

import pytest


@pytest.fixture
def hand_case() -> tuple[dict, list[dict]]:
    """(COCO ground truth, COCO results): a true positive, a duplicate, a wrong class, a mislocalised box, wrong
    class and mislocalised, background, one below the score threshold, one inside a crowd region."""
    return _hand_case()


def _hand_case() -> tuple[dict, list[dict]]:
    gt = {"images": [{"id": 1}, {"id": 2}, {"id": 3}],
          "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "area": 1e4, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 2, "bbox": [200, 0, 100, 100], "area": 1e4, "iscrowd": 0},
              {"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 200, 50, 50], "area": 2500, "iscrowd": 0},
              {"id": 4, "image_id": 2, "category_id": 2, "bbox": [0, 0, 100, 100], "area": 1e4, "iscrowd": 0},
              {"id": 5, "image_id": 2, "category_id": 1, "bbox": [300, 300, 100, 100], "area": 1e4, "iscrowd": 0},
              {"id": 6, "image_id": 3, "category_id": 1, "bbox": [0, 0, 200, 200], "area": 4e4, "iscrowd": 1},
          ]}
    preds = [
        # image 1
        {"image_id": 1, "category_id": 1, "bbox": [0, 0, 100, 100], "score": 0.9},    # true positive (cat 1)
        {"image_id": 1, "category_id": 1, "bbox": [2, 2, 100, 100], "score": 0.8},    # duplicate of gt 1
        {"image_id": 1, "category_id": 1, "bbox": [205, 0, 100, 100], "score": 0.7},  # wrong class (on the dog)
        {"image_id": 1, "category_id": 1, "bbox": [0, 200, 50, 20], "score": 0.6},    # mislocalised: IoU 0.4
        {"image_id": 1, "category_id": 2, "bbox": [500, 500, 30, 30], "score": 0.95},  # background
        {"image_id": 1, "category_id": 2, "bbox": [600, 0, 10, 10], "score": 0.2},    # below the threshold
        # image 2
        {"image_id": 2, "category_id": 1, "bbox": [0, 0, 100, 30], "score": 0.55},    # other class, IoU 0.3
        # image 3: inside the crowd region, and background
        {"image_id": 3, "category_id": 1, "bbox": [10, 10, 50, 50], "score": 0.9},
        {"image_id": 3, "category_id": 2, "bbox": [10, 10, 50, 50], "score": 0.9},
    ]
    return gt, preds
