"""cnnkit.metrics.detection_errors: the TIDE-like error breakdown, on hand-built cases whose every label is known."""
from __future__ import annotations

from cnnkit.metrics.detection_errors import error_breakdown


def _hand_case():
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


def test_error_breakdown_hand_built():
    gt, preds = _hand_case()
    result = error_breakdown(gt, preds)
    assert {k: v for k, v in result.items() if k != "per_class"} == {
        "detections": 8, "ground_truths": 5, "true_positive": 1, "duplicate": 1, "wrong_class": 1,
        "mislocalised": 1, "wrong_class_and_mislocalised": 1, "background": 2, "ignored": 1,
        # gt 5 (cat on image 2) is touched by nothing; gts 2, 3 and 4 are touched but not found
        "missed": 1, "not_found": 4}
    assert result["per_class"]["dog"]["background"] == 2 and result["per_class"]["cat"]["missed"] == 1
    assert result["per_class"]["dog"]["not_found"] == 2
    # a lower threshold brings in the 0.2 detection (background); a stricter IoU turns the duplicate's
    # neighbour into mislocalised ones
    assert error_breakdown(gt, preds, score_threshold=0.1)["background"] == 3
    strict = error_breakdown(gt, preds, iou_threshold=0.99)
    assert strict["true_positive"] == 1 and strict["duplicate"] == 0 and strict["mislocalised"] == 2


def test_error_breakdown_perfect_and_empty():
    gt, _ = _hand_case()
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"]]
    result = error_breakdown(gt, perfect)
    assert result["true_positive"] == 5 and result["missed"] == result["not_found"] == 0
    nothing = error_breakdown(gt, [])
    assert nothing["detections"] == 0 and nothing["missed"] == nothing["not_found"] == 5
