"""cnnkit.metrics.detection_errors: the TIDE-like error breakdown, on hand-built cases whose every label is known."""
from __future__ import annotations

from cnnkit.metrics.detection_errors import error_breakdown


def test_error_breakdown_hand_built(hand_case):
    gt, preds = hand_case
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


def test_error_breakdown_perfect_and_empty(hand_case):
    gt, _ = hand_case
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
               for a in gt["annotations"] if not a["iscrowd"]]
    result = error_breakdown(gt, perfect)
    assert result["true_positive"] == 5 and result["missed"] == result["not_found"] == 0
    nothing = error_breakdown(gt, [])
    assert nothing["detections"] == 0 and nothing["missed"] == nothing["not_found"] == 5
