"""The box audit on hand-made boxes and predictions (each kind of issue, its score and the ranking), and
audit_detection end to end on a tiny synthetic-shapes set."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cnnkit.audit.boxes import BoxRules, audit_detection, box_issues, given_box_probabilities, precision_at, size_recall
from cnnkit.errors import CnnkitError

CLASSES = ["person", "dog"]
# one image, three people, found by a confident out-of-fold model exactly where they are labelled
TRUE = torch.tensor([[10.0, 10.0, 50.0, 90.0], [100.0, 20.0, 140.0, 100.0], [200.0, 30.0, 230.0, 90.0]])


def _target(boxes, labels=None) -> dict:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": torch.zeros(len(boxes), dtype=torch.int64) if labels is None
            else torch.tensor(labels)}


def _prediction(boxes, scores, labels=None) -> dict:
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "scores": torch.tensor(scores, dtype=torch.float32),
            "labels": torch.zeros(len(boxes), dtype=torch.int64) if labels is None else torch.tensor(labels)}


def test_a_perfect_match_gives_no_issue() -> None:
    assert box_issues([_target(TRUE)], [_prediction(TRUE, [0.9, 0.95, 0.8])], CLASSES) == []
    # an unconfident extra detection elsewhere is no missing box either
    extra = torch.cat([TRUE, torch.tensor([[300.0, 10.0, 340.0, 90.0]])])
    assert box_issues([_target(TRUE)], [_prediction(extra, [0.9, 0.95, 0.8, 0.3])], CLASSES) == []


def test_a_shifted_box_is_contradicted_once_with_the_prediction_suggested() -> None:
    shifted = TRUE.clone()
    shifted[1, [0, 2]] += 20  # half its width: IoU 1/3 with the object
    rows = box_issues([_target(shifted)], [_prediction(TRUE, [0.9, 0.9, 0.9])], CLASSES)
    assert len(rows) == 1  # the object the model found is not also reported as missing
    row = rows[0]
    assert row["kind"] == "contradicted" and row["box_index"] == 1 and row["box"] == [120.0, 20.0, 160.0, 100.0]
    assert row["suggested"] == [100.0, 20.0, 140.0, 100.0] and row["label"] == "person"
    assert row["iou"] == pytest.approx(1 / 3, abs=1e-3)
    assert row["score"] == pytest.approx(0.9, abs=1e-4)  # the object's confidence; nothing supports the box


def test_a_weak_support_lowers_a_contradiction_and_a_stronger_one_clears_it() -> None:
    shifted = TRUE.clone()
    shifted[1, [0, 2]] += 20
    weak = _prediction(torch.cat([TRUE, shifted[1:2]]), [0.9, 0.9, 0.9, 0.4])  # a 0.4 detection on the given box
    rows = box_issues([_target(shifted)], [weak], CLASSES)
    assert [r["kind"] for r in rows] == ["contradicted"]
    assert rows[0]["score"] == pytest.approx(0.9 * (1 - 0.4), abs=1e-4)  # × (1 − the support, at IoU 1)
    strong = _prediction(torch.cat([TRUE, shifted[1:2]]), [0.9, 0.9, 0.9, 0.95])
    rows = box_issues([_target(shifted)], [strong], CLASSES)  # the given box stands; the other object may be missing
    assert [(r["kind"], r["box"]) for r in rows] == [("missing", [100.0, 20.0, 140.0, 100.0])]


def test_fragments_of_a_labelled_object_are_not_missing() -> None:
    legs = torch.tensor([[12.0, 50.0, 30.0, 90.0]])  # inside the first person: IoU 0.22, all of it covered
    rows = box_issues([_target(TRUE)], [_prediction(torch.cat([TRUE, legs]), [0.9, 0.9, 0.9, 0.8])], CLASSES)
    assert rows == []


def test_a_missing_box_of_an_implausible_shape_scores_lower() -> None:
    rng = np.random.default_rng(1)
    people = [[[0.0, 0.0, w, a * w]] for w, a in rng.uniform([30, 2.2], [40, 2.8], (20, 2))]  # 2.2-2.8 × taller
    targets = [_target(b) for b in people] + [_target(TRUE[0]), _target(TRUE[0])]
    person, sliver = [100.0, 0.0, 135.0, 87.0], [100.0, 0.0, 104.0, 87.0]  # a person's shape; 4 px wide
    predictions = [_prediction(b, [0.9]) for b in people] + [_prediction([TRUE[0].tolist(), person], [0.9, 0.8]),
                                                             _prediction([TRUE[0].tolist(), sliver], [0.9, 0.8])]
    rows = box_issues(targets, predictions, CLASSES)
    assert [(r["image"], r["kind"]) for r in rows] == [(20, "missing"), (21, "missing")]
    # the person-shaped one scores the detector's precision at 0.8: 22 of the 24 predictions at ≥ 0.8 match
    assert rows[0]["score"] == pytest.approx(22 / 24) and rows[1]["score"] < 0.2


def test_a_deleted_box_appears_as_missing_with_the_detectors_precision_at_its_confidence() -> None:
    rows = box_issues([_target(TRUE[[0, 2]])], [_prediction(TRUE, [0.9, 0.85, 0.8])], CLASSES)
    assert [r["kind"] for r in rows] == ["missing"]
    # of the predictions scoring at least 0.85 (0.9 and 0.85), one matches a true box: precision 1/2
    assert rows[0]["box"] == [100.0, 20.0, 140.0, 100.0] and rows[0]["score"] == pytest.approx(0.5)
    assert rows[0]["box_index"] is None and rows[0]["iou"] == 0.0


def test_a_wrong_class_names_the_predicted_one() -> None:
    rows = box_issues([_target(TRUE, [0, 1, 0])], [_prediction(TRUE, [0.9, 0.8, 0.9], [0, 0, 0])], CLASSES)
    assert len(rows) == 1 and rows[0]["kind"] == "wrong_class" and rows[0]["box_index"] == 1
    assert rows[0]["label"] == "dog" and rows[0]["suggested"] == "person" and rows[0]["score"] == pytest.approx(0.8)
    # the model also half-believes the given class there: less sure
    both = _prediction(torch.cat([TRUE, TRUE[1:2]]), [0.9, 0.8, 0.9, 0.4], [0, 0, 0, 1])
    rows = box_issues([_target(TRUE, [0, 1, 0])], [both], CLASSES)
    assert rows[0]["kind"] == "wrong_class" and rows[0]["score"] == pytest.approx(0.8 * 0.6)


def test_a_box_where_the_model_sees_nothing_is_weaker_evidence() -> None:
    spurious = torch.cat([TRUE, torch.tensor([[300.0, 10.0, 340.0, 90.0]])])
    rows = box_issues([_target(spurious)], [_prediction(TRUE, [0.9, 0.9, 0.9])], CLASSES)
    assert len(rows) == 1 and rows[0]["kind"] == "contradicted" and rows[0]["suggested"] is None
    assert rows[0]["score"] == pytest.approx(0.5)
    assert box_issues([_target(spurious)], [_prediction(TRUE, [0.9, 0.9, 0.9])], CLASSES,
                      unsupported_weight=0.2)[0]["score"] == pytest.approx(0.2)


def test_a_neighbours_prediction_does_not_contradict_a_missed_box() -> None:
    crowd = torch.tensor([[10.0, 10.0, 50.0, 90.0], [35.0, 10.0, 75.0, 90.0]])  # two people overlapping
    rows = box_issues([_target(crowd)], [_prediction(crowd[:1], [0.95])], CLASSES)
    assert len(rows) == 1 and rows[0]["box_index"] == 1 and rows[0]["suggested"] is None
    assert rows[0]["score"] == pytest.approx(0.5)  # not 0.95 · (1 − IoU) from the neighbour's box


def test_overlapping_missing_candidates_are_one_row() -> None:
    person_and_dog = _prediction([[10.0, 10.0, 50.0, 90.0], [100.0, 20.0, 140.0, 100.0], [101.0, 21.0, 141.0, 99.0]],
                                 [0.9, 0.9, 0.7], [0, 0, 1])
    rows = box_issues([_target(TRUE[[0]])], [person_and_dog], CLASSES)
    assert [(r["kind"], r["label"]) for r in rows] == [("missing", "person")]


def test_a_size_outlier_is_flagged_and_scored_by_its_robust_z() -> None:
    rng = np.random.default_rng(0)
    sides = rng.uniform(30, 40, (40, 2))
    boxes = [[[0.0, 0.0, w, h]] for w, h in sides] + [[[0.0, 0.0, 400.0, 400.0]]]  # one far too large
    targets = [_target(b) for b in boxes]
    predictions = [_prediction(b, [0.9]) for b in boxes[:40]] + [_prediction(np.zeros((0, 4)), [])]
    rows = box_issues(targets, predictions, CLASSES)  # the model found nothing there: also "contradicted"
    assert sorted((r["kind"], r["image"]) for r in rows) == [("contradicted", 40), ("size", 40)]
    rows = [r for r in rows if r["kind"] == "size"]
    z = rows[0]["z"]
    assert z > 3.5 and rows[0]["score"] == pytest.approx(0.5 * z / (z + 3.5), abs=1e-5)  # × unsupported_weight
    # the same odd box confirmed by the model (0.9 at IoU 1) is a real object of that size: × (1 − 0.9)
    confirmed = box_issues(targets, [_prediction(b, [0.9]) for b in boxes], CLASSES)
    assert [r["kind"] for r in confirmed] == ["size"]
    assert confirmed[0]["score"] == pytest.approx(0.5 * z / (z + 3.5) * 0.1, abs=1e-5)


def test_scores_rank_the_clearest_errors_first() -> None:
    far = TRUE[0] + torch.tensor([30.0, 0.0, 30.0, 0.0])  # 3/4 of its width off: IoU 1/7
    near = TRUE[2] + torch.tensor([12.0, 0.0, 12.0, 0.0])  # 2/5 of its width off: IoU 3/7
    targets = [_target(far), _target(near), _target(TRUE[0]), _target(TRUE[0])]
    predictions = [_prediction(TRUE[0], [0.95]), _prediction(TRUE[2], [0.6]),
                   _prediction(TRUE[:2], [0.9, 0.7]), _prediction(TRUE[:2], [0.9, 0.55])]
    rows = box_issues(targets, predictions, CLASSES)
    assert [(r["image"], r["kind"]) for r in rows] == [(0, "contradicted"), (1, "contradicted"), (2, "missing"),
                                                       (3, "missing")]
    # the missing ones score the precision at their confidence: 2 of the 4 predictions at ≥ 0.7 match, 2 of 6
    assert [r["score"] for r in rows] == pytest.approx([0.95, 0.6, 2 / 4, 2 / 6], abs=1e-4)


def test_a_missing_box_near_a_labelled_one_scores_lower() -> None:
    beside = [60.0, 10.0, 100.0, 90.0]  # touching the first person: IoU 0 → its full (calibrated) confidence
    overlapping = [40.0, 10.0, 80.0, 90.0]  # IoU 1/7 with it → × (1 − (1/7) / missing_iou 0.4)
    rows = box_issues([_target(TRUE[0]), _target(TRUE[0])],
                      [_prediction([TRUE[0].tolist(), beside], [0.9, 0.8]),
                       _prediction([TRUE[0].tolist(), overlapping], [0.9, 0.8])], CLASSES)
    assert [(r["image"], r["kind"]) for r in rows] == [(0, "missing"), (1, "missing")]
    precision = 2 / 4  # of the four predictions at ≥ 0.8, the two on the labelled person match
    assert rows[0]["score"] == pytest.approx(precision)
    assert rows[1]["score"] == pytest.approx(precision * (1 - 1 / 7 / 0.4), abs=1e-3)


def test_a_detection_inside_or_around_the_box_is_the_same_object_not_a_contradiction() -> None:
    around = TRUE[1] + torch.tensor([-12.0, -12.0, 12.0, 12.0])  # holds the given box: IoU 0.48, cover 1
    rows = box_issues([_target(TRUE[1])], [_prediction(around, [0.95])], CLASSES)
    # no displaced detection: only the weaker "nothing confirms it" evidence, with no suggested box
    assert [(r["kind"], r["suggested"], r["score"]) for r in rows] == [("contradicted", None, 0.5)]
    partly = TRUE[1] + torch.tensor([14.0, 0.0, 14.0, 0.0])  # 7/20 of its width off: IoU 0.48, cover 0.65
    rows = box_issues([_target(TRUE[1])], [_prediction(partly, [0.8])], CLASSES)
    assert rows[0]["suggested"] == partly.tolist()
    assert rows[0]["score"] == pytest.approx(0.8 * (1 - 0.65) / (1 - 0.6), abs=1e-4)  # δ = (1 − c) / (1 − cover)


def _with_opinion(prediction: dict, probs) -> dict:
    return {**prediction, "box_probs": torch.tensor(probs, dtype=torch.float32)}


def test_the_box_heads_doubt_joins_the_detections_evidence_by_noisy_or() -> None:
    shifted = TRUE.clone()
    shifted[1, [0, 2]] += 20  # IoU 1/3 with the person the model found
    prediction = _with_opinion(_prediction(TRUE, [0.9, 0.9, 0.9]), [[0.95, 0.0], [0.3, 0.0], [0.9, 0.0]])
    rho = 2 / 3  # the model detects 2 of the 3 person boxes of this size
    rows = box_issues([_target(shifted)], [prediction], CLASSES)
    v = 1 - rho * (1 - 0.3)
    assert [(r["kind"], r["box_index"]) for r in rows] == [("contradicted", 1)]
    assert rows[0]["score"] == pytest.approx(1 - v * (1 - 0.9), abs=1e-4)
    assert rows[0]["suggested"] == TRUE[1].tolist()


def test_a_box_only_the_box_head_doubts_is_a_row_and_may_be_another_class() -> None:
    boxes = [TRUE] * 3  # every box detected: the model sees boxes of this size (ρ = 1)
    predictions = [_prediction(TRUE, [0.9, 0.9, 0.9]) for _ in boxes]
    opinions = [[[0.9, 0.1]] * 3, [[0.9, 0.1], [0.2, 0.1], [0.9, 0.1]], [[0.9, 0.1], [0.9, 0.1], [0.1, 0.7]]]
    rows = box_issues([_target(b) for b in boxes], [_with_opinion(p, o) for p, o in zip(predictions, opinions)],
                      CLASSES)
    assert [(r["image"], r["box_index"], r["kind"], r["suggested"]) for r in rows] == [
        (2, 2, "wrong_class", "dog"), (1, 1, "contradicted", None)]
    assert [r["score"] for r in rows] == pytest.approx([0.9, 0.8], abs=1e-4)  # 1 − v


def test_the_box_heads_opinion_counts_only_at_sizes_the_model_detects() -> None:
    big = [[[0.0, 0.0, w, 2 * w]] for w in np.linspace(40, 50, 60)]
    tiny = [[[0.0, 0.0, w, 2 * w]] for w in np.linspace(3, 4, 60)]
    targets = [_target(b) for b in big + tiny]
    predictions = [_prediction(b, [0.9]) for b in big] + [_prediction(np.zeros((0, 4)), []) for _ in tiny]
    recall = torch.cat(size_recall(targets, predictions, BoxRules(), neighbours=5))
    assert recall[5:60].eq(1).all() and recall[60:115].eq(0).all()  # 5 neighbours each side: pure away from the edge
    doubted = [_with_opinion(p, [[0.01, 0.0]]) for p in predictions]  # the head sees no person in any box
    rows = {r["image"]: r for r in box_issues(targets, doubted, CLASSES) if r["kind"] != "size"}
    # the big ones are doubted (ρ = 1); the 40 smallest keep the unsupported score: ρ = 0 among their 41
    # neighbours, and the head's doubt of a size the model cannot see adds nothing
    assert all(rows[i]["score"] == pytest.approx(0.99) for i in range(20, 60))
    assert all(rows[i]["score"] == 0.5 and rows[i]["suggested"] is None for i in range(60, 100))


def test_given_box_probabilities_sends_the_true_boxes_in_network_pixels() -> None:
    from types import SimpleNamespace

    class Head:
        def __init__(self):
            self.seen = []

        def box_probabilities(self, images, boxes):
            self.seen += boxes
            return [torch.full((len(b), 2), 0.5) for b in boxes]

    items = [SimpleNamespace(width=200, height=100, boxes=np.array([[0.0, 0.0, 200.0, 100.0]])),
             SimpleNamespace(width=50, height=100, boxes=np.array([[10.0, 20.0, 30.0, 40.0], [0, 0, 50, 100]]))]
    loader = [SimpleNamespace(images=[torch.zeros(3, 64, 64), torch.zeros(3, 64, 64)])]
    head = Head()
    out = given_box_probabilities(head, loader, SimpleNamespace(items=items), np.array([0, 1]), 64)
    assert [o["box_probs"].shape for o in out] == [(1, 2), (2, 2)]
    # 200 × 100 → 64 × 32, padded 16 on top; 50 × 100 → 32 × 64, padded 16 on the left
    assert head.seen[0].tolist() == [[0.0, 16.0, 64.0, 48.0]]
    assert head.seen[1].flatten().tolist() == pytest.approx([22.4, 12.8, 35.2, 25.6, 16.0, 0.0, 48.0, 64.0], abs=1e-4)
    assert given_box_probabilities(object(), loader, SimpleNamespace(items=items), np.array([0, 1]), 64) == [{}, {}]


def test_precision_at_is_the_share_of_predictions_at_least_that_confident_that_match() -> None:
    targets = [_target(TRUE), _target(TRUE[:1])]
    far = [300.0, 10.0, 340.0, 90.0]
    predictions = [_prediction([*TRUE.tolist(), far], [0.95, 0.7, 0.5, 0.9]), _prediction([far], [0.6])]
    trust = precision_at(targets, predictions, BoxRules())
    # ranked: 0.95 hit, 0.9 miss, 0.7 hit, 0.6 miss, 0.5 hit
    got = trust(torch.tensor([0.99, 0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.1]).double())  # fp32 scores, as predicted
    assert got.tolist() == pytest.approx([1.0, 1.0, 1 / 2, 1 / 2, 2 / 3, 2 / 4, 3 / 5, 3 / 5])


def test_an_overconfident_detectors_unmatched_detections_score_its_precision_not_its_confidence() -> None:
    """Two detectors find the same unboxed person at 0.9; the one whose other 0.9 detections are mostly
    unboxed things (crowds the annotators skip, or false alarms) is believed less."""
    person = [300.0, 10.0, 340.0, 90.0]
    elsewhere = [[400.0 + 50 * i, 10.0, 440.0 + 50 * i, 90.0] for i in range(3)]  # more unmatched detections
    targets = [_target(TRUE)] * 2
    careful = [_prediction([*TRUE.tolist(), person], [0.9] * 4), _prediction(TRUE, [0.9] * 3)]
    eager = [_prediction([*TRUE.tolist(), person], [0.9] * 4), _prediction([*TRUE.tolist(), *elsewhere], [0.9] * 6)]
    first = [r for r in box_issues(targets, careful, CLASSES) if r["image"] == 0]
    second = [r for r in box_issues(targets, eager, CLASSES) if r["image"] == 0]
    assert first[0]["score"] == pytest.approx(6 / 7) and second[0]["score"] == pytest.approx(6 / 10)


def test_bad_inputs_are_one_line_errors() -> None:
    with pytest.raises(CnnkitError, match="2 images of true boxes but 1"):
        box_issues([_target(TRUE), _target(TRUE)], [_prediction(TRUE, [0.9] * 3)], CLASSES)
    with pytest.raises(CnnkitError, match="min_score must be in"):
        box_issues([_target(TRUE)], [_prediction(TRUE, [0.9] * 3)], CLASSES, min_score=2.0)


def test_no_boxes_and_no_predictions() -> None:
    empty = {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)}
    assert box_issues([empty], [{**empty, "scores": torch.zeros(0)}], CLASSES) == []
    rows = box_issues([empty], [_prediction(TRUE[:1], [0.9])], CLASSES)
    assert [r["kind"] for r in rows] == ["missing"]


def test_audit_detection_cross_fits_and_reports_in_image_pixels(tmp_path: Path) -> None:
    from cnnkit.config import load_config
    from cnnkit.recipes import recipe_for

    cfg = load_config(overrides={
        "task": "detect", "data": {"source": "synthetic-shapes:count=2,n=12,size=48", "image_size": 64,
                                   "workers": 0},
        "model": {"name": "yolo", "options": {"grid": 4}},
        "train": {"epochs": 1, "batch_size": 8, "device": "cpu"}})
    recipe = recipe_for("detect")
    source = recipe.open_source(cfg)
    pool = np.arange(2, 12)
    out = audit_detection(recipe, cfg, source, pool, folds=2, work=tmp_path, min_score=0.0)
    assert out["folds"] == 2 and out["images"] == 10 and out["coordinates"] == "image pixels"
    assert out["items"] == sum(len(source.items[i].boxes) for i in pool)
    assert (tmp_path / "fold1" / "model.pt").is_file() and (tmp_path / "fold2" / "model.pt").is_file()
    scores = [r["score"] for r in out["issues"]]
    assert scores == sorted(scores, reverse=True)
    for row in out["issues"]:
        assert row["index"] in pool and row["id"] == source.items[row["index"]].image_id
        assert all(0 <= v <= 48 for v in row["box"])  # the 48-pixel images, not the 64-pixel network input
        if row["box_index"] is not None:
            assert row["box"] == pytest.approx(source.items[row["index"]].boxes[row["box_index"]].tolist(), abs=0.01)
