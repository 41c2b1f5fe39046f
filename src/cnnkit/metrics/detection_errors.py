"""Why detections fail: a TIDE-like error breakdown of COCO-style detections.

After Hoiem et al. 2012 ("Diagnosing error in object detectors") and TIDE (Bolya et al. 2020, "TIDE: A General
Toolbox for Identifying Object Detection Errors"), simplified: every confident detection gets exactly one label
(true positive, duplicate, classification error, localisation error, both, background, or ignored on a crowd
region) and every ground truth without a true positive counts as not found (missed when nothing overlaps it).
It takes the same COCO structures as ``cnnkit.metrics.detection.detection_map``.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit.metrics.detection import _Detections, _GroundTruth, box_iou_xywh

__all__ = ["error_breakdown"]

# The labels in the order of the counts; the first _DETECTION_KINDS label detections, the rest ground truths.
_KINDS = ("true_positive", "duplicate", "wrong_class", "mislocalised", "wrong_class_and_mislocalised",
          "background", "ignored", "missed", "not_found")
_DETECTION_KINDS = 7
_COLUMN = {k: n for n, k in enumerate(_KINDS)}


def _detection_error(iou: np.ndarray, same: np.ndarray, used: np.ndarray, iof: np.ndarray, crowd_same: np.ndarray,
                     iou_threshold: float, background_iou: float) -> str:
    """One detection's label, the first that applies in the order of error_breakdown's docstring.

    iou (G,): box IoU with the image's non-crowd ground truths; same (G,): those of the detection's class;
    used (G,): those already matched, updated in place when this detection is a true positive (it takes the
    free same-class ground truth with the highest IoU); iof (C,): intersection / detection area with the
    image's crowd regions; crowd_same (C,): those of the detection's class.
    """
    free = same & ~used & (iou >= iou_threshold)
    if free.any():
        used[np.flatnonzero(free)[np.argmax(iou[free])]] = True
        return "true_positive"
    if (same & (iou >= iou_threshold)).any():
        return "duplicate"
    if (~same & (iou >= iou_threshold)).any():
        return "wrong_class"
    if (same & (iou >= background_iou)).any():
        return "mislocalised"
    if (~same & (iou >= background_iou)).any():
        return "wrong_class_and_mislocalised"
    if (crowd_same & (iof >= iou_threshold)).any():
        return "ignored"
    return "background"


def _count_image_errors(gt: _GroundTruth, dt: _Detections, image: int, counts: np.ndarray, score_threshold: float,
                        iou_threshold: float, background_iou: float) -> None:
    """Add one image's labels to counts (K, len(_KINDS)): its detections (score ≥ score_threshold, by descending
    score, ties in file order) under their class, its missed / not-found ground truths under theirs."""
    gts = np.flatnonzero(gt.image == image)
    plain, crowd = gts[~gt.crowd[gts]], gts[gt.crowd[gts]]
    dets = np.flatnonzero((dt.image == image) & (dt.score >= score_threshold))
    dets = dets[np.argsort(-dt.score[dets], kind="stable")]
    iou = box_iou_xywh(dt.boxes[dets], gt.boxes[plain], np.zeros(len(plain), bool))  # (D, G)
    iof = box_iou_xywh(dt.boxes[dets], gt.boxes[crowd], np.ones(len(crowd), bool))  # (D, C)
    used = np.zeros(len(plain), dtype=bool)
    for j, d in enumerate(dets):
        category = dt.category[d]
        kind = _detection_error(iou[j], gt.category[plain] == category, used, iof[j],
                                gt.category[crowd] == category, iou_threshold, background_iou)
        counts[category, _COLUMN[kind]] += 1
    touched = (iou >= background_iou).any(0) if len(dets) else np.zeros(len(plain), bool)
    np.add.at(counts[:, _COLUMN["missed"]], gt.category[plain[~used & ~touched]], 1)
    np.add.at(counts[:, _COLUMN["not_found"]], gt.category[plain[~used]], 1)


def error_breakdown(ground_truth: Any, predictions: Any, *, score_threshold: float = 0.5,
                    iou_threshold: float = 0.5, background_iou: float = 0.1) -> dict:
    """Why detections fail: each detection with score ≥ score_threshold gets exactly one label.

    After Hoiem et al. 2012 ("Diagnosing error in object detectors") and TIDE (Bolya et al. 2020), simplified.
    Per image, detections are taken by descending score; "IoU" is box IoU with non-crowd ground truths.

    * ``true_positive``: IoU ≥ iou_threshold with a same-class ground truth not yet matched (the one with the
      highest IoU is matched).
    * ``duplicate``: IoU ≥ iou_threshold with a same-class ground truth, but all such are already matched.
    * ``wrong_class``: IoU ≥ iou_threshold with a ground truth of another class.
    * ``mislocalised``: right class, background_iou ≤ best IoU < iou_threshold.
    * ``wrong_class_and_mislocalised``: only other classes' ground truths, background_iou ≤ IoU < iou_threshold.
    * ``background``: IoU < background_iou with every ground truth.
    * ``ignored``: none of the above but covering a same-class crowd region (intersection / detection area
      ≥ iou_threshold), which COCO does not count either.

    Ground truths (non-crowd): ``missed`` is those that no kept detection of any class overlaps with
    IoU ≥ background_iou; ``not_found`` is all those without a true positive (missed ones included).
    Returns {"detections", "ground_truths", those counts, "per_class": {name: the same counts}}: detection
    labels count under the detection's class, missed / not_found under the ground truth's.
    """
    gt = _GroundTruth(ground_truth)
    dt = _Detections(predictions, gt)
    counts = np.zeros((len(gt.names), len(_KINDS)), dtype=np.int64)  # (K, kinds)
    for image in range(len(gt.image_ids)):
        _count_image_errors(gt, dt, image, counts, score_threshold, iou_threshold, background_iou)
    total = counts.sum(0)
    result: dict[str, Any] = {"detections": int(total[:_DETECTION_KINDS].sum()),
                              "ground_truths": int((~gt.crowd).sum())}
    result.update({k: int(v) for k, v in zip(_KINDS, total)})
    result["per_class"] = {name: {k: int(v) for k, v in zip(_KINDS, counts[c])} for c, name in enumerate(gt.names)}
    return result
