"""COCO-style object-detection metrics: mAP, per-class AP, precision/recall curves (the error breakdown,
why detections fail, is ``cnnkit.metrics.detection_errors.error_breakdown``).

``detection_map`` is our own vectorised NumPy version of pycocotools' ``COCOeval`` for boxes (iou_type="bbox")
and instance masks (iou_type="segm": the IoU of two masks, from pycocotools.mask.iou on their RLEs) and returns the
same 12 summary numbers (tested against pycocotools on real and synthetic predictions). The semantics it follows,
all as ``COCOeval`` does them (for masks, "area" is the mask's pixel count and crowd IoU intersection / detection
mask area):

* IoU thresholds .50:.05:.95, 101 recall points (0, .01, ..., 1), maxDets 1 / 10 / 100, area ranges
  all / small (< 32²) / medium (32²..96²) / large (> 96²) by the ground truth's ``area`` field (bounds inclusive)
  and by a detection's ``w * h``.
* Per image and category the detections are sorted by score (stable, so ties keep file order) and cut at 100;
  each is matched greedily to the unmatched ground truth with the highest IoU ≥ the threshold (the last one on
  a tie), preferring ground truths that count over ignored ones (crowd or out of the area range). Crowd ground
  truths are never used up, and their IoU is intersection / detection area. A detection matched to an ignored
  ground truth, or unmatched and outside the area range, is ignored.
* Precision is made monotone (the running maximum from the right) and read at the recall points; a class with
  no counted ground truth is left out of the means; a mean over nothing is -1.

Everything here takes the COCO structures (a ground-truth JSON path or dict; a results JSON path or list) except
``evaluate_detections``, which takes the per-image tensors a detection model returns and builds them itself.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.metrics.mask_rle import mask_area, mask_areas, mask_iou, rles_of, to_rle

IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)
RECALL_POINTS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
MAX_DETS = (1, 10, 100)
AREA_RANGES = ((0.0, 1e5**2), (0.0, 32.0**2), (32.0**2, 96.0**2), (96.0**2, 1e5**2))  # all, small, medium, large
STAT_NAMES = ("map", "map50", "map75", "map_small", "map_medium", "map_large",
              "mar_1", "mar_10", "mar_100", "mar_small", "mar_medium", "mar_large")
_CHUNK = 4_000_000  # booleans per matching array: bounds memory on huge evaluations


# ---------------------------------------------------------------- input: COCO structures → arrays

def _load_json(source: Any, what: str) -> Any:
    if not isinstance(source, (str, Path)):
        return source
    path = Path(source)
    if not path.is_file():
        raise CnnkitError(f"{what} file {str(path)!r} does not exist; pass the path of a COCO JSON file")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CnnkitError(f"{what} file {str(path)!r} is not valid JSON ({e}); fix or regenerate it") from None


def _box(value: Any, where: str) -> list[float]:
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise CnnkitError(f"{where} has bbox {value!r}; a bbox must be 4 numbers [x, y, width, height]")
    return [float(v) for v in value]


class _GroundTruth:
    """The ground truth as arrays: images sorted by id, categories sorted by id, annotations in file order."""

    def __init__(self, source: Any):
        data = _load_json(source, "ground truth")
        if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
            raise CnnkitError("the ground truth must be a COCO dict with 'images', 'annotations' and 'categories'; "
                              "pass a COCO instances JSON (or its path)")
        self.image_ids = sorted({img["id"] for img in data["images"]})
        cats = sorted(data["categories"], key=lambda c: c["id"])
        self.category_ids = [c["id"] for c in cats]
        names = [str(c.get("name", c["id"])) for c in cats]
        self.names = [n if names.count(n) == 1 else f"{n} ({c})" for n, c in zip(names, self.category_ids)]
        self.image_index = {i: n for n, i in enumerate(self.image_ids)}
        self.category_index = {c: n for n, c in enumerate(self.category_ids)}
        anns = [a for a in data["annotations"]  # as COCOeval: only annotations of listed images and categories
                if a.get("image_id") in self.image_index and a.get("category_id") in self.category_index]
        boxes = [_box(a.get("bbox"), f"ground-truth annotation {a.get('id')!r}") for a in anns]
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        self.area = np.array([float(a["area"]) if "area" in a else b[2] * b[3] for a, b in zip(anns, boxes)],
                             dtype=np.float64)
        self.crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        self.image = np.array([self.image_index[a["image_id"]] for a in anns], dtype=np.int64)
        self.category = np.array([self.category_index[a["category_id"]] for a in anns], dtype=np.int64)
        self.sizes = {img["id"]: (img.get("height"), img.get("width")) for img in data["images"]}
        self._anns, self.rles = anns, None

    def load_masks(self) -> None:
        """Every annotation's segmentation as an RLE (mask IoU); polygons need the image's height and width."""
        self.rles = [to_rle(a.get("segmentation"), self.sizes[a["image_id"]],
                            f"ground-truth annotation {a.get('id')!r}") for a in self._anns]


class _Detections:
    def __init__(self, source: Any, gt: _GroundTruth):
        data = _load_json(source, "predictions")
        if isinstance(data, dict) and "annotations" in data:
            data = data["annotations"]
        if not isinstance(data, list):
            raise CnnkitError("predictions must be a list of {'image_id', 'category_id', 'bbox', 'score'} "
                              "(a COCO results JSON or its path)")
        try:  # the fast path; on any trouble the slow one below finds the first bad prediction and says so
            image = np.array([gt.image_index[d["image_id"]] for d in data], dtype=np.int64)
            category = np.array([gt.category_index[d["category_id"]] for d in data], dtype=np.int64)
            boxes = np.array([d["bbox"] for d in data], dtype=np.float64).reshape(len(data), 4)
            score = np.array([d["score"] for d in data], dtype=np.float64).reshape(len(data))
        except (KeyError, TypeError, ValueError, IndexError):
            for n, d in enumerate(data):
                _check_prediction(n, d, gt)
            raise
        self.boxes, self.image, self.category, self.score = boxes, image, category, score
        self.area = self.boxes[:, 2] * self.boxes[:, 3]
        self._data, self.rles = data, None

    def load_masks(self, gt: _GroundTruth) -> None:
        """Every detection's segmentation as an RLE; areas become mask areas (as COCO's loadRes does)."""
        self.rles = [to_rle(d.get("segmentation"), gt.sizes[d["image_id"]], f"prediction {n}")
                     for n, d in enumerate(self._data)]
        self.area = mask_areas(self.rles)


def _check_prediction(n: int, d: Any, gt: _GroundTruth) -> None:
    where = f"prediction {n}"
    if not isinstance(d, dict) or not all(k in d for k in ("image_id", "category_id", "bbox", "score")):
        raise CnnkitError(f"{where} must be a dict with 'image_id', 'category_id', 'bbox' and 'score'")
    if d["image_id"] not in gt.image_index:
        raise CnnkitError(f"{where} has image_id {d['image_id']!r}, which is not an image of the ground "
                          "truth; predict on the ground truth's images or drop the prediction")
    if d["category_id"] not in gt.category_index:
        raise CnnkitError(f"{where} has unknown category_id {d['category_id']!r}; the ground truth's "
                          f"categories are {gt.category_ids[:20]}")
    _box(d["bbox"], where)
    try:
        float(d["score"])
    except (TypeError, ValueError):
        raise CnnkitError(f"{where} has score {d['score']!r}; a score must be a number") from None


# ---------------------------------------------------------------- IoU and greedy matching

def box_iou_xywh(dets: np.ndarray, gts: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of (..., D, 4) against (..., G, 4) xywh boxes → (..., D, G); for crowd gts, intersection / det area.

    The arithmetic is in the order of pycocotools' C code, so that IoUs equal to a threshold match alike.
    """
    d, g = dets[..., :, None, :], gts[..., None, :, :]
    w = np.minimum(d[..., 2] + d[..., 0], g[..., 2] + g[..., 0]) - np.maximum(d[..., 0], g[..., 0])
    h = np.minimum(d[..., 3] + d[..., 1], g[..., 3] + g[..., 1]) - np.maximum(d[..., 1], g[..., 1])
    inter = np.where((w > 0) & (h > 0), w * h, 0.0)
    det_area, gt_area = d[..., 2] * d[..., 3], g[..., 2] * g[..., 3]
    union = np.where(crowd[..., None, :], det_area, det_area + gt_area - inter)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _match_bucket(ious, gt_crowd, gt_ignore, det_out, n_det):
    """Greedy COCO matching for N (image, category) groups at once, all area ranges and IoU thresholds.

    ious (N, D, G) with -1 for padding; gt_crowd (N, G); gt_ignore (N, A, G); det_out (N, A, D): the detection
    is outside the area range. Returns matched, ignored: (N, A, T, D) booleans.
    """
    n, dp, gp = ious.shape
    a, t = gt_ignore.shape[1], len(IOU_THRESHOLDS)
    thresholds = np.minimum(IOU_THRESHOLDS, 1 - 1e-10)[None, None, :, None]
    used = np.zeros((n, a, t, gp), dtype=bool)
    matched = np.zeros((n, a, t, dp), dtype=bool)
    ignored = np.zeros((n, a, t, dp), dtype=bool)
    reusable = gt_crowd[:, None, None, :]
    counted = ~gt_ignore[:, :, None, :]
    rows = np.arange(n)[:, None, None]
    cols = np.arange(a)[None, :, None]
    for r in range(min(dp, int(n_det.max(initial=0)))):
        iou = ious[:, r, None, None, :]  # (N, 1, 1, G)
        candidate = (iou >= thresholds) & (reusable | ~used)
        counted_candidate = candidate & counted
        use_counted = counted_candidate.any(-1, keepdims=True)
        chosen = np.where(use_counted, counted_candidate, candidate & ~counted)
        found = chosen.any(-1)  # (N, A, T)
        best = np.where(chosen, iou, -np.inf)[..., ::-1].argmax(-1)
        best = gp - 1 - best  # the last gt with the highest IoU, as COCOeval's loop picks
        found &= (r < n_det)[:, None, None]
        used[rows, cols, np.arange(t)[None, None, :], best] |= found
        matched[..., r] = found
        ignored[..., r] = found & gt_ignore[rows, cols, best]
    ignored |= ~matched & det_out[:, :, None, :]
    return matched, ignored


def _pad_index(start: np.ndarray, count: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.arange(width)[None, :]
    valid = offsets < count[:, None]
    return np.where(valid, start[:, None] + offsets, 0), valid


def _group_ious(gt: _GroundTruth, dt: _Detections, det: np.ndarray, gts: np.ndarray, crowd: np.ndarray,
                dvalid: np.ndarray, gvalid: np.ndarray) -> np.ndarray:
    """IoUs (N, D, G) of padded groups: boxes at once, masks group by group (pycocotools.mask.iou)."""
    if dt.rles is None:
        return box_iou_xywh(dt.boxes[det], gt.boxes[gts], crowd)
    out = np.zeros(det.shape + (gts.shape[1],))
    for n in range(len(det)):
        d, g = det[n][dvalid[n]], gts[n][gvalid[n]]
        out[n, :len(d), :len(g)] = mask_iou([dt.rles[j] for j in d], [gt.rles[j] for j in g], crowd[n][gvalid[n]])
    return out


def _match_all(gt: _GroundTruth, dt: _Detections, det_keep: np.ndarray, det_rank: np.ndarray):
    """Match every kept detection; returns matched, ignored (n_kept, A, T) and gt_ignore (n_gt, A)."""
    n_img = len(gt.image_ids)
    areas = np.asarray(AREA_RANGES)
    gt_ignore = gt.crowd[:, None] | (gt.area[:, None] < areas[None, :, 0]) | (gt.area[:, None] > areas[None, :, 1])
    det_out = (dt.area[:, None] < areas[None, :, 0]) | (dt.area[:, None] > areas[None, :, 1])

    kept = np.flatnonzero(det_keep)
    d_key = dt.category[kept] * n_img + dt.image[kept]
    d_order = kept[np.lexsort((det_rank[kept], d_key))]  # by group, then by rank
    d_key = dt.category[d_order] * n_img + dt.image[d_order]
    g_key = gt.category * n_img + gt.image
    g_order = np.argsort(g_key, kind="stable")  # by group, then file order
    g_key = g_key[g_order]

    groups = np.unique(d_key)  # groups without detections need no matching
    d_start = np.searchsorted(d_key, groups, "left")
    d_count = np.searchsorted(d_key, groups, "right") - d_start
    g_start = np.searchsorted(g_key, groups, "left")
    g_count = np.searchsorted(g_key, groups, "right") - g_start

    matched = np.zeros((len(dt.score), len(AREA_RANGES), len(IOU_THRESHOLDS)), dtype=bool)
    ignored = np.zeros_like(matched)
    # Buckets of similar sizes (powers of two) keep the padding small; chunks keep memory bounded.
    d_pad = 2 ** np.ceil(np.log2(np.maximum(d_count, 1))).astype(np.int64)
    g_pad = 2 ** np.ceil(np.log2(np.maximum(g_count, 1))).astype(np.int64)
    g_pad[g_count == 0] = 0
    for dp, gp in sorted(set(zip(d_pad.tolist(), g_pad.tolist()))):
        members = np.flatnonzero((d_pad == dp) & (g_pad == gp))
        if gp == 0:  # no ground truth: nothing matches; only the area range can ignore a detection
            idx, valid = _pad_index(d_start[members], d_count[members], dp)
            det = d_order[idx[valid]]
            ignored[det] = det_out[det][:, :, None]
            continue
        step = max(1, _CHUNK // (len(AREA_RANGES) * len(IOU_THRESHOLDS) * max(dp, gp)))
        for lo in range(0, len(members), step):
            m = members[lo:lo + step]
            di, dvalid = _pad_index(d_start[m], d_count[m], dp)
            gi, gvalid = _pad_index(g_start[m], g_count[m], gp)
            det, gts = d_order[di], g_order[gi]
            crowd = gt.crowd[gts] & gvalid
            ious = _group_ious(gt, dt, det, gts, crowd, dvalid, gvalid)
            ious = np.where(gvalid[:, None, :], ious, -1.0)
            gi_ignore = np.where(gvalid[:, :, None], gt_ignore[gts], True).transpose(0, 2, 1)
            mt, ig = _match_bucket(ious, crowd, gi_ignore, det_out[det].transpose(0, 2, 1), d_count[m])
            mt, ig = mt.transpose(0, 3, 1, 2), ig.transpose(0, 3, 1, 2)  # (N, D, A, T)
            matched[det[dvalid]] = mt[dvalid]
            ignored[det[dvalid]] = ig[dvalid]
    return matched, ignored, gt_ignore


# ---------------------------------------------------------------- accumulation and summary

def _accumulate(gt: _GroundTruth, dt: _Detections) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval.accumulate: precision (T, R, K, A, M) and recall (T, K, A, M), -1 where undefined."""
    n_img = len(gt.image_ids)
    T, R, K, A, M = len(IOU_THRESHOLDS), len(RECALL_POINTS), len(gt.category_ids), len(AREA_RANGES), len(MAX_DETS)
    precision = -np.ones((T, R, K, A, M))
    recall = -np.ones((T, K, A, M))
    # Rank of each detection within its (image, category) by score, ties in file order; keep the top 100.
    key = dt.category * n_img + dt.image
    order = np.lexsort((np.arange(len(key)), -dt.score, key))
    rank = np.empty(len(key), dtype=np.int64)
    sorted_key = key[order]
    first = np.searchsorted(sorted_key, sorted_key, "left")
    rank[order] = np.arange(len(key)) - first
    keep = rank < MAX_DETS[-1]
    matched, ignored, gt_ignore = _match_all(gt, dt, keep, rank)

    # Per category, the order COCOeval's accumulate sees: by score, ties by image id then rank.
    kept = np.flatnonzero(keep)
    kept = kept[np.lexsort((rank[kept], dt.image[kept], -dt.score[kept], dt.category[kept]))]
    kept_cat = dt.category[kept]
    counted = np.zeros((K, A), dtype=np.int64)
    np.add.at(counted, gt.category, ~gt_ignore)
    for k in range(K):
        in_k = kept[(kept_cat == k)]
        matched_k, counts_k, rank_k = matched[in_k].transpose(1, 2, 0), ~ignored[in_k].transpose(1, 2, 0), rank[in_k]
        for a in range(A):
            if counted[k, a] == 0:
                continue
            for m, max_det in enumerate(MAX_DETS):
                top = rank_k < max_det
                tp = matched_k[a][:, top] & counts_k[a][:, top]  # (T, D)
                fp = ~matched_k[a][:, top] & counts_k[a][:, top]
                tp_sum = np.cumsum(tp, axis=1).astype(float)
                fp_sum = np.cumsum(fp, axis=1).astype(float)
                nd = tp_sum.shape[1]
                rc = tp_sum / counted[k, a]
                pr = tp_sum / (fp_sum + tp_sum + np.spacing(1))
                recall[:, k, a, m] = rc[:, -1] if nd else 0.0
                pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]
                for t in range(T):
                    at = np.searchsorted(rc[t], RECALL_POINTS, side="left")
                    q = np.zeros(R)
                    inside = at < nd
                    q[inside] = pr[t, at[inside]]
                    precision[t, :, k, a, m] = q
    return precision, recall


def _mean_defined(values: np.ndarray) -> float:
    defined = values[values > -1]
    return float(np.mean(defined)) if defined.size else -1.0


def _summary(precision: np.ndarray, recall: np.ndarray) -> dict[str, float]:
    """COCOeval.summarize's 12 numbers."""
    t50, t75 = int(np.where(IOU_THRESHOLDS == 0.5)[0][0]), int(np.where(IOU_THRESHOLDS == 0.75)[0][0])
    ap = [precision[..., 0, 2], precision[t50, ..., 0, 2], precision[t75, ..., 0, 2],
          precision[..., 1, 2], precision[..., 2, 2], precision[..., 3, 2]]
    ar = [recall[..., 0, 0], recall[..., 0, 1], recall[..., 0, 2],
          recall[..., 1, 2], recall[..., 2, 2], recall[..., 3, 2]]
    return dict(zip(STAT_NAMES, [_mean_defined(s) for s in ap + ar]))


def detection_map(ground_truth: Any, predictions: Any, *, iou_type: str = "bbox") -> dict:
    """COCO box (iou_type "bbox") or mask ("segm") mAP as pycocotools' COCOeval computes it (see the module
    docstring for the exact rules). For "segm" every annotation and prediction needs a "segmentation" (polygons
    or RLE; predictions' bbox may then be any 4 numbers).

    ground_truth: a COCO instances JSON path or dict; predictions: a COCO results JSON path or a list of
    {"image_id", "category_id", "bbox": [x, y, w, h], "score"}. Returns the 12 stats of COCOeval.summarize
    ("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100",
    "mar_small", "mar_medium", "mar_large"; -1 where undefined), "per_class": {name: {"ap", "ap50", "ap75"}}
    (-1 for a class without ground truth) and "pr_curves": {name: {"recall": [101 points], "precision": [...]}}
    at IoU .5, all detections up to 100 per image (precision -1 throughout for a class without ground truth).
    """
    if iou_type not in ("bbox", "segm"):
        raise CnnkitError(f"iou_type {iou_type!r} is not supported; only 'bbox' and 'segm' are")
    gt = _GroundTruth(ground_truth)
    dt = _Detections(predictions, gt)
    if iou_type == "segm":
        gt.load_masks()
        dt.load_masks(gt)
    precision, recall = _accumulate(gt, dt)
    result: dict[str, Any] = _summary(precision, recall)
    t50, t75 = 0, int(np.where(IOU_THRESHOLDS == 0.75)[0][0])
    result["per_class"] = {
        name: {"ap": _mean_defined(precision[:, :, k, 0, 2]), "ap50": _mean_defined(precision[t50, :, k, 0, 2]),
               "ap75": _mean_defined(precision[t75, :, k, 0, 2])}
        for k, name in enumerate(gt.names)}
    result["pr_curves"] = {name: {"recall": RECALL_POINTS.tolist(), "precision": precision[t50, :, k, 0, 2].tolist()}
                           for k, name in enumerate(gt.names)}
    return result


# ---------------------------------------------------------------- in-memory detections → COCO structures

def _array(value: Any, shape_tail: tuple[int, ...] = ()) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    out = np.asarray(value, dtype=np.float64)
    return out.reshape((-1,) + shape_tail)


def to_coco(targets: list[dict], predictions: list[dict], classes: list[str]) -> tuple[dict, list[dict]]:
    """Per-image targets [{"boxes": (K, 4) xyxy, "labels": (K,) in 0..C-1, optional "iscrowd"}] and predictions
    [{"boxes", "scores", "labels"}] (what a detection model returns in eval mode) → (COCO ground-truth dict,
    COCO results list). Image ids are 1.. in list order, category ids are label + 1, areas are w * h.
    Instance masks, when every target and prediction has "masks" ((K, [1,] H, W), probabilities binarised at
    0.5) or "rles" (encode_masks' output), become "segmentation" RLEs, and areas their pixel counts, as COCO's."""
    if len(targets) != len(predictions):
        raise CnnkitError(f"there are {len(targets)} targets but {len(predictions)} predictions; "
                          "pass one prediction dict per image")
    labels_seen = [int(v) for t in targets for v in _array(t["labels"])]
    labels_seen += [int(v) for p in predictions for v in _array(p["labels"])]
    n_classes = max(len(classes), max(labels_seen, default=-1) + 1)
    names = [classes[c] if c < len(classes) else str(c) for c in range(n_classes)]
    with_masks = all(("masks" in d or "rles" in d) for d in [*targets, *predictions]) and bool(targets)
    images, annotations, results = [], [], []
    for i, (target, pred) in enumerate(zip(targets, predictions), start=1):
        boxes, labels = _array(target["boxes"], (4,)), _array(target["labels"])
        crowd = _array(target["iscrowd"]) if "iscrowd" in target else np.zeros(len(labels))
        gt_rles, dt_rles = (rles_of(target), rles_of(pred)) if with_masks else ([None] * len(labels), None)
        images.append({"id": i})
        for box, label, c, rle in zip(boxes.tolist(), labels.tolist(), crowd.tolist(), gt_rles):
            w, h = box[2] - box[0], box[3] - box[1]
            annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": int(label) + 1,
                                "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": int(c)})
            if rle is not None:
                annotations[-1].update(segmentation=rle, area=float(mask_area(rle)))
        boxes, labels, scores = _array(pred["boxes"], (4,)), _array(pred["labels"]), _array(pred["scores"])
        for n, (box, label, score) in enumerate(zip(boxes.tolist(), labels.tolist(), scores.tolist())):
            results.append({"image_id": i, "category_id": int(label) + 1,
                            "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]], "score": score})
            if dt_rles is not None:
                results[-1]["segmentation"] = dt_rles[n]
        if with_masks:
            rles = (gt_rles or []) + (dt_rles or [])
            if rles:
                images[-1].update(height=int(rles[0]["size"][0]), width=int(rles[0]["size"][1]))
    categories = [{"id": c + 1, "name": name} for c, name in enumerate(names)]
    return {"images": images, "annotations": annotations, "categories": categories}, results


def evaluate_detections(targets: list[dict], predictions: list[dict], classes: list[str],
                        iou_type: str = "bbox") -> dict:
    """``detection_map`` on in-memory per-image tensors or arrays (see ``to_coco`` for the layout); iou_type
    "segm" scores the masks (every target and prediction then needs "masks" or "rles")."""
    ground_truth, results = to_coco(targets, predictions, classes)
    if iou_type == "segm" and not all("segmentation" in a for a in ground_truth["annotations"] + results):
        raise CnnkitError("mask AP needs instance masks on every target and prediction ('masks' or 'rles')")
    return detection_map(ground_truth, results, iou_type=iou_type)


def evaluate_instances(targets: list[dict], predictions: list[dict], classes: list[str]) -> dict:
    """Box and mask COCO metrics of instance predictions: ``evaluate_detections``' box result, plus "mask_map",
    "mask_map50", "mask_map75" (and every other mask stat with a "mask_" prefix; "mask_per_class",
    "mask_pr_curves") from the masks."""
    ground_truth, results = to_coco(targets, predictions, classes)
    boxes = detection_map(ground_truth, results)
    if not all("segmentation" in a for a in ground_truth["annotations"] + results):
        raise CnnkitError("mask AP needs instance masks on every target and prediction ('masks' or 'rles')")
    masks = detection_map(ground_truth, results, iou_type="segm")
    return {**boxes, **{f"mask_{k}": v for k, v in masks.items()}}


# ---------------------------------------------------------------- plots

def plot_pr_curves(result: dict, path: str | Path) -> Path:
    """One precision/recall curve per class at IoU .5 (from detection_map's "pr_curves"), saved as an image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(6, 5))
    for name, curve in result["pr_curves"].items():
        if min(curve["precision"], default=-1) < 0:
            continue  # no ground truth of this class
        ap50 = result["per_class"][name]["ap50"]
        ax.plot(curve["recall"], curve["precision"], label=f"{name} (AP50 {ap50:.3f})")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02),
           title=f"Precision/recall at IoU 0.5 (mAP50 {result['map50']:.3f})")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower left", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
