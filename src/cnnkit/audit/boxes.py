"""Bad boxes: a detector cross-fitted out of fold (it never saw the image's boxes) questions every box.

    rows = box_issues(targets, predictions, classes)       # pure: per-image boxes in, issue rows out
    audit = audit_detection(recipe, cfg, source, pool, folds=3, work=Path("audit"))

Each issue is a row {"image": position in `targets`, "kind", "box": [x1, y1, x2, y2], "label": class name,
"suggested", "score", "box_index", "iou"}; audit_detection adds "index" (the source's index), "id" and "path".
The kinds and their scores (each in [0, 1], higher = more likely a wrong annotation). For a true box, its
support s₊ is the best score of any prediction of its class that matches it (IoU ≥ `match_iou`), 0 if none:

- "wrong_class": a confident prediction (score ≥ `min_score`) of another class matches it, more confident than
  s₊; score = s_other · (1 − s₊); "suggested" is that class.
- "contradicted", the model found the object elsewhere: a confident prediction of its class overlaps it with
  `near_iou` ≤ IoU < `match_iou`, is more confident than s₊ and matches no other true box (a neighbour's
  detection contradicts nothing); score = s · (1 − t₊) · δ for the strongest such prediction, "suggested" its
  box. t₊ is the tight support: same-class scores weighted by their IoU from 0 at `match_iou` to 1 at
  `match_iou` + TIGHT_RAMP, so that a loose detection at IoU 0.5 does not vouch for a misplaced box. δ, the
  displacement, is (1 − c) / (1 − `cover`) clipped to [0, 1], with c the intersection over the smaller box:
  a box moved off its object leaves part of each outside the other (c = 1/2 for half a width), while a
  detection inside or around the given box (c → 1) shows the same object framed otherwise, which is no
  evidence. The IoU itself does not lower the score: any displaced box of the object is the evidence.
- "contradicted", the model saw nothing there: no confident support and no such prediction;
  score = `unsupported_weight` · (1 − s₊), "suggested" None: weaker evidence, detectors also miss hard objects.
- The box head's own opinion, where the detector has one (a two-stage detector's `box_probabilities`: the
  given box run through its region classifier as a proposal; predictions carry it as "box_probs" (n, C)). Its
  probability v of the box's own class joins the finding above by noisy-OR: score = 1 − v′ · (1 − d), with d
  the finding's score (0 if none) and v′ = 1 − ρ · (1 − v), where ρ is the model's recall on boxes of that
  size (size_recall: the share of the 41 boxes of its class nearest in area that a confident prediction
  matches): a model that never detects boxes that small has no opinion of them. A box that nothing else
  questions becomes a row once v′ < 1/2: "wrong_class" when another class is likelier, else "contradicted".
- "missing": a confident prediction with IoU < `missing_iou` with every true box, not mostly inside (or around)
  one (intersection over the smaller box < `cover`: a part of a labelled object), and not near a contradicted
  box (a shifted box's object is one row, not two); score = its calibrated confidence, the detector's precision
  at that confidence (precision_at: the share of all its out-of-fold predictions scoring at least as much that
  match a true box; a missing box claims that the annotators would have boxed this, and the precision measures
  how often such a detection is an object they box: it falls where the detector is overconfident, and where
  the data set leaves objects unboxed by policy, such as crowds) · (1 − its best IoU with a true box
  / `missing_iou`: a detection overlapping a labelled object may be that object, poorly placed) · its
  plausibility, 1 for a box
  whose aspect ratio and area lie within `size_z` robust standard deviations of its class's true boxes, else
  (size_z / z)² (fragments and mergers of objects have shapes no true box has). Of overlapping candidates
  (IoU ≥ `match_iou` or `cover` of the smaller box) only the most confident is reported; "suggested" its box.
- "size": a box far too small or too large for its class: robust z-score of log(area) over the class's boxes
  (median and MAD · 1.4826), |z| > `size_z`; score = `unsupported_weight` · |z| / (|z| + size_z) · (1 − t₊):
  a size alone is weak evidence (crowds hold small distant people, rightly boxed), and an odd size that the
  model confirms is a real object of that size.

Boxes are xyxy. audit_detection reports them in each image's ORIGINAL pixels: the true boxes as the source
holds them, the predictions mapped back from the letterboxed network input.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.config import Config
from cnnkit.errors import CnnkitError

log = logging.getLogger("cnnkit")
KINDS = ("contradicted", "wrong_class", "missing", "size")
MAD_SCALE = 1.4826  # MAD · 1.4826 estimates σ of a normal distribution
TIGHT_RAMP = 0.25  # a same-class prediction supports a box fully from IoU match_iou + this on


@dataclass(frozen=True)
class BoxRules:
    """The thresholds of box_issues (see the module docstring)."""

    min_score: float = 0.5  # a prediction this confident counts as the model's opinion
    match_iou: float = 0.5  # a true box and a prediction agree from this IoU on
    missing_iou: float = 0.4  # a confident prediction below this IoU with every true box is a missing box
    near_iou: float = 0.1  # a confident prediction from this IoU on is near a true box (and may contradict it)
    cover: float = 0.6  # intersection over the smaller box from which two boxes show one object (or its part)
    unsupported_weight: float = 0.5  # scale of a contradiction with no confident prediction near the box
    size_z: float = 3.5  # |robust z| of log(area) above which a box is a size outlier
    min_class_boxes: int = 8  # classes with fewer boxes get no size check

    def check(self) -> None:
        for name in ("min_score", "match_iou", "missing_iou", "near_iou", "cover", "unsupported_weight"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise CnnkitError(f"box audit: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.size_z <= 0:
            raise CnnkitError(f"box audit: size_z must be positive, got {self.size_z}")


def _tensor(x: Any, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x), dtype=dtype
                           ).reshape(shape)


def _image(target: dict, prediction: dict) -> tuple[torch.Tensor, ...]:
    """(true boxes (n, 4), true labels (n,), boxes (m, 4), scores (m,), labels (m,)) as float64 / int64."""
    return (_tensor(target["boxes"], torch.float64, (-1, 4)), _tensor(target["labels"], torch.int64, (-1,)),
            _tensor(prediction["boxes"], torch.float64, (-1, 4)), _tensor(prediction["scores"], torch.float64, (-1,)),
            _tensor(prediction["labels"], torch.int64, (-1,)))


def _name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


def _row(image: int, kind: str, box: torch.Tensor, label: str, suggested: Any, score: float,
         box_index: int | None = None, iou: float | None = None) -> dict:
    return {"image": image, "kind": kind, "box": [round(float(v), 2) for v in box], "label": label,
            "suggested": suggested, "score": round(float(min(max(score, 0.0), 1.0)), 6), "box_index": box_index,
            "iou": None if iou is None else round(float(iou), 4)}


def _true_box_issue(iou: torch.Tensor, cover: torch.Tensor, same: torch.Tensor, confident: torch.Tensor,
                    matched: torch.Tensor, scores: torch.Tensor, rules: BoxRules
                    ) -> tuple[str, float, int | None, float] | None:
    """(kind, score, prediction, IoU with it) for one true box, or None when the model supports it. iou, same (m,)
    against every prediction; matched (m,): the prediction matches another true box. Without a prediction, the
    IoU is the best with any confident prediction. See the module docstring for the rules."""
    overlap = iou >= rules.match_iou
    s_same = float(scores[same & overlap].max()) if bool((same & overlap).any()) else 0.0  # the support
    other = confident & ~same & overlap & (scores > s_same)
    if bool(other.any()):
        j = int(torch.where(other, scores, -1.0).argmax())
        return "wrong_class", float(scores[j]) * (1.0 - s_same), j, float(iou[j])
    near = confident & same & (iou >= rules.near_iou) & ~overlap & ~matched & (scores > s_same)
    if bool(near.any()):
        tight = tight_support(iou, same, scores, rules)
        displaced = ((1.0 - cover) / (1.0 - rules.cover)).clamp(0, 1)  # 0 for a box inside or around it
        strength = torch.where(near, scores * (1.0 - tight) * displaced, -1.0)
        j = int(strength.argmax())
        if float(strength[j]) > 0:  # else only boxes inside or around it: the same object, framed otherwise
            return "contradicted", float(strength[j]), j, float(iou[j])
    if s_same >= rules.min_score:
        return None
    best = float(iou[confident].max()) if bool(confident.any()) else 0.0
    return "contradicted", rules.unsupported_weight * (1.0 - s_same), None, best


def _verified(found: tuple[str, float, int | None, float] | None, probs: torch.Tensor, label: int, best_iou: float,
              seen: float = 1.0) -> tuple[str, float, int | None, float] | None:
    """Merge the box head's opinion of the given box, probs (C,), into the detections' finding: noisy-OR of two
    pieces of evidence, score = 1 − v · (1 − d) with v the box's probability of its own class and d the finding's
    score (0 if none). A box the detections do not question becomes a row once v < 1/2: "wrong_class" when
    another class is likelier, else "contradicted" with no suggested box."""
    v = 1.0 - seen * (1.0 - (float(probs[label]) if 0 <= label < len(probs) else 0.0))
    if found is not None:
        kind, d, j, overlap = found
        return kind, 1.0 - v * (1.0 - d), j, overlap
    if v >= 0.5:
        return None
    other = int(probs.argmax())
    if other != label and float(probs[other]) > v:
        return "wrong_class", 1.0 - v, -1 - other, best_iou  # j < 0: the class -1 - j, not a prediction
    return "contradicted", 1.0 - v, None, best_iou


def _cover(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) intersection over the smaller box's area of boxes a (n, 4) and b (m, 4): 1 when one holds the other."""
    lt, rb = torch.max(a[:, None, :2], b[None, :, :2]), torch.min(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)  # (n, m)
    area_a, area_b = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(-1), (b[:, 2:] - b[:, :2]).clamp(min=0).prod(-1)
    return inter / torch.min(area_a[:, None], area_b[None, :]).clamp(min=1e-9)


def _shape(boxes: torch.Tensor) -> torch.Tensor:
    """(n, 2) log(height / width) and log(area) of boxes (n, 4) xyxy."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)  # (n, 2)
    return torch.stack([torch.log(wh[:, 1] / wh[:, 0]), torch.log(wh[:, 0] * wh[:, 1])], 1)


def shape_stats(targets: list[dict], rules: BoxRules) -> dict[int, torch.Tensor]:
    """{class: (2, 2) [median, MAD · 1.4826] of log(h / w) and log(area) of its true boxes} for the classes with
    at least `min_class_boxes` boxes and some spread in both."""
    shapes = torch.cat([_shape(_tensor(t["boxes"], torch.float64, (-1, 4))) for t in targets] or
                       [torch.zeros(0, 2, dtype=torch.float64)])  # (N, 2)
    labels = torch.cat([_tensor(t["labels"], torch.int64, (-1,)) for t in targets]
                       or [torch.zeros(0, dtype=torch.int64)])  # (N,)
    stats = {}
    for c in labels.unique().tolist():
        x = shapes[labels == c]
        if len(x) >= rules.min_class_boxes:
            median = x.median(0).values
            spread = MAD_SCALE * (x - median).abs().median(0).values
            if bool((spread > 0).all()):
                stats[int(c)] = torch.stack([median, spread])
    return stats


def plausibility(boxes: torch.Tensor, labels: torch.Tensor, stats: dict[int, torch.Tensor], rules: BoxRules
                 ) -> torch.Tensor:
    """(m,) in (0, 1]: 1 for a predicted box whose aspect ratio and area are within `size_z` robust standard
    deviations of its class's true boxes, else (size_z / z) ** 2 with z the larger |z| of the two: a shape no box
    of the class has is more likely a fragment (or a merger) of objects than an object."""
    out = torch.ones(len(boxes), dtype=torch.float64)
    shapes = _shape(boxes)  # (m, 2)
    for j, c in enumerate(labels.tolist()):
        if c in stats:
            z = float(((shapes[j] - stats[c][0]) / stats[c][1]).abs().max())
            out[j] = min(1.0, rules.size_z / z) ** 2 if z > 0 else 1.0
    return out


def _missing(image: int, boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, best_iou: torch.Tensor,
             candidates: torch.Tensor, weight: torch.Tensor, classes: list[str], rules: BoxRules) -> list[dict]:
    """Rows of the predictions `candidates` (m,) bool, most confident first, each dropped when it overlaps a
    more confident kept one (IoU ≥ match_iou, or `cover` of the smaller box): one row per object."""
    from torchvision.ops import box_iou

    idx = torch.nonzero(candidates).flatten()
    idx = idx[torch.argsort(scores[idx], descending=True)]
    same_object = (box_iou(boxes[idx], boxes[idx]) >= rules.match_iou) | (_cover(boxes[idx], boxes[idx]) >= rules.cover)
    kept: list[int] = []
    for n in range(len(idx)):
        if not any(bool(same_object[n, q]) for q in kept):
            kept.append(n)
    return [_row(image, "missing", boxes[j], _name(classes, int(labels[j])), [round(float(v), 2) for v in boxes[j]],
                 float(scores[j] * weight[j] * (1.0 - best_iou[j] / rules.missing_iou)), None, float(best_iou[j]))
            for j in idx[kept].tolist()]


def image_issues(image: int, target: dict, prediction: dict, classes: list[str], rules: BoxRules,
                 stats: dict[int, torch.Tensor] | None = None, seen: torch.Tensor | None = None,
                 trust: Any = None) -> list[dict]:
    """The contradicted, wrong-class and missing rows of one image (see the module docstring); `stats`: the
    classes' box shapes (shape_stats) that missing boxes are weighed against."""
    from torchvision.ops import box_iou

    true_boxes, true_labels, boxes, scores, labels = _image(target, prediction)
    iou, cover = box_iou(true_boxes, boxes), _cover(true_boxes, boxes)  # (n, m)
    same = true_labels[:, None] == labels[None, :]  # (n, m)
    confident = scores >= rules.min_score  # (m,)
    good = same & (iou >= rules.match_iou)  # (n, m): prediction j matches true box k
    claimed = torch.zeros(len(boxes), dtype=torch.bool)
    rows = []
    given = prediction.get("box_probs")  # (n, C): the box head's opinion of each true box, where it has one
    for k in range(len(true_boxes)):
        matched = (good & (torch.arange(len(true_boxes)) != k)[:, None]).any(0)  # (m,) matches another true box
        found = _true_box_issue(iou[k], cover[k], same[k], confident, matched, scores, rules)
        if given is not None:
            found = _verified(found, _tensor(given[k], torch.float64, (-1,)), int(true_labels[k]), float(iou[k].max(
                ) if len(boxes) else 0.0), 1.0 if seen is None else float(seen[k]))
        if found is None:
            continue
        kind, score, j, overlap = found
        if kind == "contradicted":  # the model's boxes of this object are its suggestion, not missing ones
            claimed |= confident & same[k] & (iou[k] >= rules.near_iou) & ~matched
        if j is not None and j >= 0:
            claimed[j] = True
        suggested = (None if j is None else _name(classes, -1 - j) if j < 0 else _name(classes, int(labels[j]))
                     if kind == "wrong_class" else [round(float(v), 2) for v in boxes[j]])
        rows.append(_row(image, kind, true_boxes[k], _name(classes, int(true_labels[k])), suggested, score, k,
                         overlap))
    best = iou.max(0).values if len(true_boxes) else torch.zeros(len(boxes), dtype=torch.float64)  # (m,)
    covered = (cover >= rules.cover).any(0)  # (m,) a part of (or around) a true box
    candidates = confident & (best < rules.missing_iou) & ~covered & ~claimed
    weight = plausibility(boxes, labels, stats or {}, rules)  # (m,)
    if trust is not None:  # its confidence read as the detector's measured precision at that confidence
        weight = weight * trust(scores) / scores.clamp(min=1e-9)
    return rows + _missing(image, boxes, scores, labels, best, candidates, weight, classes, rules)


def size_outliers(targets: list[dict], classes: list[str], rules: BoxRules) -> list[dict]:
    """Rows of the boxes whose log(area) is more than `rules.size_z` robust standard deviations from their class's
    median (median absolute deviation · 1.4826); classes with fewer than `min_class_boxes` boxes are skipped."""
    where, areas, labels, boxes = [], [], [], []
    for image, target in enumerate(targets):
        b = _tensor(target["boxes"], torch.float64, (-1, 4))
        wh = (b[:, 2:] - b[:, :2]).clamp(min=1e-6)  # (n, 2)
        where += [(image, k) for k in range(len(b))]
        areas.append(torch.log(wh[:, 0] * wh[:, 1]))
        labels.append(_tensor(target["labels"], torch.int64, (-1,)))
        boxes.append(b)
    if not where:
        return []
    log_area, label, box = torch.cat(areas).numpy(), torch.cat(labels).numpy(), torch.cat(boxes)
    rows = []
    for c in np.unique(label):
        members = np.flatnonzero(label == c)
        if len(members) < rules.min_class_boxes:
            continue
        median = np.median(log_area[members])
        spread = MAD_SCALE * np.median(np.abs(log_area[members] - median))
        if spread <= 0:
            continue
        z = (log_area[members] - median) / spread
        for i, zi in zip(members, z):
            if abs(zi) > rules.size_z:
                image, k = where[i]
                score = rules.unsupported_weight * abs(zi) / (abs(zi) + rules.size_z)
                rows.append({**_row(image, "size", box[i], _name(classes, int(c)), None, score, k),
                             "z": round(float(zi), 3)})
    return rows


def box_issues(targets: list[dict], predictions: list[dict], classes: list[str], *, min_score: float = 0.5,
               match_iou: float = 0.5, missing_iou: float = 0.4, near_iou: float = 0.1, cover: float = 0.6,
               unsupported_weight: float = 0.5, size_z: float = 3.5, min_class_boxes: int = 8) -> list[dict]:
    """Issue rows of per-image true boxes `targets` [{"boxes" (n, 4) xyxy, "labels" (n,)}] against the
    out-of-fold `predictions` [{"boxes" (m, 4), "scores" (m,), "labels" (m,)}] of the same images (tensors or
    arrays, any pixels as long as both agree), sorted by score, highest first. See the module docstring."""
    if len(targets) != len(predictions):
        raise CnnkitError(f"box audit: {len(targets)} images of true boxes but {len(predictions)} of predictions")
    rules = BoxRules(min_score, match_iou, missing_iou, near_iou, cover, unsupported_weight, size_z, min_class_boxes)
    rules.check()
    stats = shape_stats(targets, rules)
    seen = size_recall(targets, predictions, rules)  # per image (n,): the model's recall at each box's size
    trust = precision_at(targets, predictions, rules)  # c ↦ the detector's precision at confidence c
    rows = [row for image, (t, p) in enumerate(zip(targets, predictions))
            for row in image_issues(image, t, p, list(classes), rules, stats, seen[image], trust)]
    rows += [_weigh_by_support(row, targets, predictions, rules) for row in size_outliers(targets, list(classes),
                                                                                         rules)]
    return sorted(rows, key=lambda r: -r["score"])


def _matches(true_boxes: torch.Tensor, true_labels: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
             rules: BoxRules) -> torch.Tensor:
    """(n, m) bool: prediction j matches true box k (same class, IoU ≥ match_iou)."""
    from torchvision.ops import box_iou

    return (box_iou(true_boxes, boxes) >= rules.match_iou) & (true_labels[:, None] == labels[None, :])


def precision_at(targets: list[dict], predictions: list[dict], rules: BoxRules):
    """c ↦ the detector's precision at confidence c: the share of its predictions scoring at least c that match
    a true box of their class (IoU ≥ match_iou), over every audited image (out of fold)."""
    scores, hits = [], []
    for t, p in zip(targets, predictions):
        true_boxes, true_labels, boxes, s, labels = _image(t, p)
        ok = _matches(true_boxes, true_labels, boxes, labels, rules)  # (n, m)
        scores.append(s)
        hits.append(ok.any(0).double() if len(true_boxes) else torch.zeros(len(s), dtype=torch.float64))
    s, h = torch.cat(scores or [torch.zeros(0)]), torch.cat(hits or [torch.zeros(0)])
    order = torch.argsort(s, descending=True)
    s, precision = s[order], torch.cumsum(h[order], 0) / torch.arange(1, len(s) + 1)  # at least s[i]

    def trust(c: torch.Tensor) -> torch.Tensor:
        if not len(s):
            return c
        i = torch.searchsorted(-s, -c, right=True).clamp(1, len(s)) - 1  # the last prediction scoring ≥ c
        return precision[i].to(c.dtype)

    return trust


def size_recall(targets: list[dict], predictions: list[dict], rules: BoxRules, neighbours: int = 20
                ) -> list[torch.Tensor]:
    """Per image (n,): how well the model sees boxes of each true box's size: the share of detected boxes (support
    ≥ min_score) among the 2 · `neighbours` + 1 boxes of its class nearest in log(area)."""
    found, log_area, label = [], [], []
    for t, p in zip(targets, predictions):
        true_boxes, true_labels, boxes, scores, labels = _image(t, p)
        ok = _matches(true_boxes, true_labels, boxes, labels, rules)  # (n, m)
        found.append((ok & (scores >= rules.min_score)[None, :]).any(1).double())
        log_area.append(_shape(true_boxes)[:, 1])
        label.append(true_labels)
    empty = [torch.zeros(0)]
    f, a, c = torch.cat(found or empty), torch.cat(log_area or empty), torch.cat(label or empty)
    recall = torch.ones_like(f)
    for cls in c.unique().tolist():
        members = torch.nonzero(c == cls).flatten()
        members = members[torch.argsort(a[members])]
        for r, i in enumerate(members.tolist()):
            recall[i] = f[members[max(0, r - neighbours):r + neighbours + 1]].mean()
    return list(recall.split([len(x) for x in found]))


def tight_support(iou: torch.Tensor, same: torch.Tensor, scores: torch.Tensor, rules: BoxRules) -> float:
    """How well the model confirms a true box: the best same-class score, weighted by its IoU from 0 at
    `match_iou` to 1 at `match_iou` + TIGHT_RAMP (a loose box at IoU 0.5 barely counts)."""
    weighted = scores * ((iou - rules.match_iou) / TIGHT_RAMP).clamp(0, 1)
    return float(weighted[same].max()) if bool(same.any()) else 0.0


def _weigh_by_support(row: dict, targets: list[dict], predictions: list[dict], rules: BoxRules) -> dict:
    """A size row's score × (1 − the model's tight support of that box): an odd size the model confirms is a
    real object of that size, not a wrong box."""
    from torchvision.ops import box_iou

    true_boxes, true_labels, boxes, scores, labels = _image(targets[row["image"]], predictions[row["image"]])
    k = row["box_index"]
    iou = box_iou(true_boxes[k:k + 1], boxes)[0]  # (m,)
    support = tight_support(iou, labels == true_labels[k], scores, rules)
    return {**row, "score": round(row["score"] * (1.0 - support), 6)}


# -- cross-fitting ------------------------------------------------------------------------------------------------


def _in_image_pixels(prediction: dict, height: int, width: int, size: int) -> dict:
    """A prediction in network pixels (the image letterboxed to size × size) → the image's pixels."""
    from cnnkit.data.detection.loader import fit_geometry, to_image_coordinates

    _, scale, pad = fit_geometry(height, width, size, "letterbox")  # (sx, sy), (left, top)
    boxes = to_image_coordinates(prediction["boxes"].float().reshape(-1, 4), torch.tensor(scale),
                                 torch.tensor(pad, dtype=torch.float32), height, width)
    return {"boxes": boxes, "scores": prediction["scores"].float(), "labels": prediction["labels"]}


def out_of_fold_detections(recipe: Any, cfg: Config, source: Any, parts: list[np.ndarray], work: Path
                           ) -> list[dict]:
    """Per image of np.concatenate(parts): the detections, in the image's pixels, of a detector trained (fit_fold)
    on the other parts."""
    from cnnkit.audit.crossfit import fit_fold
    from cnnkit.diagnose.detection import detections, loader_for

    pool = np.concatenate(parts)
    found: list[dict] = []
    for i, held in enumerate(parts):
        log.info("audit: fold %d of %d, training on %d images", i + 1, len(parts), len(pool) - len(held))
        model, card = fit_fold(recipe, cfg, source, np.setdiff1d(pool, held), work / f"fold{i + 1}")
        _, predictions, _ = detections(model, loader_for(cfg, card, source, held), card.problem)
        size = card.input_size[1]
        opinions = given_box_probabilities(model, loader_for(cfg, card, source, held), source, held, size)
        found += [{**_in_image_pixels(p, source.items[int(j)].height, source.items[int(j)].width, size), **o}
                  for p, j, o in zip(predictions, held, opinions)]
    return found


def given_box_probabilities(model: Any, loader: Any, source: Any, held: np.ndarray, size: int) -> list[dict]:
    """Per image of `held` (the loader's images, in order): {"box_probs": (n, C)}, the model's class probabilities
    of the image's own true boxes (box_probabilities: a two-stage detector's region classifier), or {} for a
    model without one."""
    from cnnkit.data.detection.loader import fit_geometry

    if not hasattr(model, "box_probabilities"):
        return [{} for _ in held]
    out, n = [], 0
    for batch in loader:
        boxes = []
        for j in held[n:n + len(batch.images)]:
            item = source.items[int(j)]
            _, (sx, sy), (left, top) = fit_geometry(item.height, item.width, size, "letterbox")
            boxes.append(torch.as_tensor(np.asarray(item.boxes, dtype=np.float32)).reshape(-1, 4)
                         * torch.tensor([sx, sy, sx, sy]) + torch.tensor([left, top, left, top], dtype=torch.float32))
        out += [{"box_probs": p.cpu()} for p in model.box_probabilities(list(batch.images), boxes)]
        n += len(batch.images)
    return out


def detection_issues(source: Any, order: np.ndarray, predictions: list[dict], folds: int = 0, **rules: Any) -> dict:
    """audit_detection's result from the out-of-fold `predictions` (image pixels) of the images `order` of
    `source`: box_issues against the source's own boxes, each row given the image's "index", "id" and "path"."""
    items = [source.items[int(i)] for i in order]
    targets = [{"boxes": item.boxes, "labels": item.labels} for item in items]
    rows = box_issues(targets, predictions, source.classes, **rules)
    for row in rows:
        item = items[row["image"]]
        row.update(index=int(order[row["image"]]), id=item.image_id,
                   path=None if item.path is None else str(item.path))
    return {"issues": rows, "items": int(sum(len(t["boxes"]) for t in targets)), "images": len(order),
            "folds": folds, "size_outliers": sum(r["kind"] == "size" for r in rows), "coordinates": "image pixels"}


def audit_detection(recipe: Any, cfg: Config, source: Any, pool: np.ndarray, *, folds: int, work: Path,
                    seed: int = 0, **rules: Any) -> dict:
    """Cross-fit `folds` detectors (fit_fold, run folders work/fold1...) over the images `pool` of `source` (a
    DetectionSource) and question every true box. Returns {"issues": rows sorted by score (highest first) with
    "index" (the source's), "id", "path"; "items": the true boxes audited, "images", "folds", "size_outliers":
    how many rows are "size", "coordinates": "image pixels"}; `rules` are box_issues' keyword thresholds."""
    from cnnkit.audit.crossfit import fold_parts

    BoxRules(**rules).check()  # before any training
    parts = fold_parts(np.asarray(pool, dtype=np.int64), None, folds, seed)
    predictions = out_of_fold_detections(recipe, cfg, source, parts, Path(work))
    return detection_issues(source, np.concatenate(parts), predictions, folds, **rules)
