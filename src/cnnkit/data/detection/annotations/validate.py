"""Checks of detection annotations. Every kind of problem is fixed, dropped or fatal, as configured, and is
always reported: counted, with the first examples, logged as a warning. A fatal one raises a one-line
CnnkitError that says what is wrong, where, and which option to change."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace

import numpy as np
import torch
from torchvision.ops import box_iou

from cnnkit.config import parse_key_values
from cnnkit.data.detection.annotations.source import DetectionItem, DetectionSource
from cnnkit.errors import CnnkitError, did_you_mean

log = logging.getLogger("cnnkit")
ACTIONS = ("fix", "drop", "fatal")
TOLERANCE = 1e-3  # pixels: a box this little beyond the image edge is float noise, clipped without a report
DUPLICATE_IOU = 0.95
EXAMPLES = 3
# kind → (what it is, what `fix` does, how to repair the data)
KINDS = {
    "unknown_class": ("box(es) of a class not in the class list", "class added to the list",
                      "add the class to the categories (COCO), classes.txt (VOC) or names (YOLO)"),
    "outside": ("box(es) outside the image", "clipped to the image", "correct the box or the image size"),
    "zero_area": ("box(es) with zero or negative area", "reversed corners swapped, empty ones dropped",
                  "correct the box's corners"),
    "duplicate": (f"duplicate box(es) (same class, IoU > {DUPLICATE_IOU})", "the later copy dropped",
                  "remove the repeated box"),
    "empty_image": ("image(s) without annotations", "kept as negative images", "annotate the image or remove it"),
}


@dataclass
class ValidationPolicy:
    """What happens to each kind of bad annotation: 'fix', 'drop' or 'fatal' (empty_image: 'keep' = 'fix')."""

    unknown_class: str = "fatal"
    outside: str = "fix"
    zero_area: str = "drop"
    duplicate: str = "drop"
    empty_image: str = "keep"


def parse_policy(policy: ValidationPolicy | dict | str | None) -> ValidationPolicy:
    """None, a ValidationPolicy, {'outside': 'drop'} or 'outside=drop,unknown_class=fix' → ValidationPolicy."""
    if isinstance(policy, ValidationPolicy):
        return policy
    options = parse_key_values(policy, example="--policy outside=drop,unknown_class=fix") \
        if isinstance(policy, str) else dict(policy or {})
    kinds = [f.name for f in fields(ValidationPolicy)]
    for kind, action in options.items():
        if kind not in kinds:
            raise CnnkitError(f"unknown annotation check {kind!r}{did_you_mean(kind, kinds)}")
        allowed = ACTIONS + (("keep",) if kind == "empty_image" else ())
        if action not in allowed:
            raise CnnkitError(f"--policy {kind}={action}: choose one of {', '.join(allowed)}")
    return ValidationPolicy(**options)


@dataclass
class ValidationReport:
    """Counts per kind of problem, the first examples of each, and what was done."""

    policy: ValidationPolicy
    images: int = 0
    boxes: int = 0
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    examples: dict[str, list[str]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def add(self, kind: str, where: str) -> None:
        self.counts[kind] += 1
        if len(self.examples[kind]) < EXAMPLES:
            self.examples[kind].append(where)

    @property
    def problems(self) -> int:
        return sum(self.counts.values())

    def line(self, kind: str) -> str:
        what, fixed, _ = KINDS[kind]
        action = getattr(self.policy, kind)
        done = {"fix": fixed, "keep": fixed, "drop": "dropped", "fatal": "fatal"}[action]
        return f"{self.counts[kind]} {what}: {done}; e.g. {'; '.join(self.examples[kind])}"

    def summary(self) -> list[str]:
        """One line per kind found, after a line of totals."""
        head = f"checked {self.images} images, {self.boxes} boxes: " + (
            f"{self.problems} problem(s)" if self.problems else "no problems")
        return [head] + [self.line(k) for k in KINDS if self.counts[k]]

    def fatal_error(self) -> CnnkitError | None:
        for kind in KINDS:
            if self.counts[kind] and getattr(self.policy, kind) == "fatal":
                what, _, repair = KINDS[kind]
                others = "fix, drop" if kind != "empty_image" else "keep, drop"
                return CnnkitError(f"{self.counts[kind]} {what}, first: {self.examples[kind][0]}; {repair}, or set "
                                   f"--policy {kind}={others.split(', ')[0]} (or {others.split(', ')[1]})")
        return None


def _box_text(box: np.ndarray) -> str:
    return "[" + ", ".join(f"{v:g}" for v in np.round(box, 1)) + "]"


def _check_item(item: DetectionItem, classes: list[str], p: ValidationPolicy,
                report: ValidationReport) -> DetectionItem:
    """Item with its problems fixed or dropped as `p` says; each problem counted in `report`; `classes` may grow."""
    boxes, labels = item.boxes.copy(), item.labels.copy()
    crowd = item.iscrowd.copy() if item.iscrowd is not None else None
    keep = np.ones(len(boxes), dtype=bool)
    for k in np.flatnonzero(labels < 0):  # unknown classes
        name = item.unknown.get(int(k), "?")
        report.add("unknown_class", f"{item.where()} class {name!r} box {_box_text(boxes[k])}")
        if p.unknown_class == "fix":
            if name not in classes:
                classes.append(name)
            labels[k] = classes.index(name)
        elif p.unknown_class == "drop":
            keep[k] = False
    w, h = item.width, item.height
    beyond = (boxes[:, 0] < -TOLERANCE) | (boxes[:, 1] < -TOLERANCE) | (boxes[:, 2] > w + TOLERANCE) | (
        boxes[:, 3] > h + TOLERANCE)
    for k in np.flatnonzero(beyond & keep):
        report.add("outside", f"{item.where()} box {_box_text(boxes[k])} in a {w}×{h} image")
        if p.outside == "drop":
            keep[k] = False
    clip = keep & (~beyond | (p.outside == "fix"))  # within the tolerance, or fixed by the policy
    boxes[clip] = np.clip(boxes[clip], 0, [w, h, w, h])
    for k in np.flatnonzero(keep & ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))):
        report.add("zero_area", f"{item.where()} box {_box_text(item.boxes[k])}")
        x1, y1, x2, y2 = boxes[k]
        boxes[k] = (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))
        if p.zero_area == "drop" or (p.zero_area == "fix" and (x1 == x2 or y1 == y2)):
            keep[k] = False
    kept = np.flatnonzero(keep)
    if len(kept) > 1:
        iou = box_iou(torch.from_numpy(boxes[kept]), torch.from_numpy(boxes[kept])).numpy()
        same = (labels[kept][:, None] == labels[kept][None, :]) & (iou > DUPLICATE_IOU)
        copy = np.zeros(len(kept), dtype=bool)  # a later copy of an earlier box, counted once
        for a, b in zip(*np.nonzero(np.triu(same, k=1))):
            if not copy[a] and not copy[b]:
                copy[b] = True
                report.add("duplicate", f"{item.where()} box {_box_text(boxes[kept[b]])}")
        if p.duplicate != "fatal":
            keep[kept[copy]] = False
    if not keep.any():
        report.add("empty_image", item.where())
    segments = [item.segments[k] for k in np.flatnonzero(keep)] if item.segments is not None else None
    return replace(item, boxes=boxes[keep], labels=labels[keep], iscrowd=crowd[keep] if crowd is not None else None,
                   unknown={}, segments=segments)


def validate(source: DetectionSource, policy: ValidationPolicy | dict | str | None = None
             ) -> tuple[DetectionSource, ValidationReport]:
    """Check every item; return the repaired source (the report attached as `source.report`) and the report.
    Problems are logged as warnings; a problem whose policy is 'fatal' raises CnnkitError."""
    p = parse_policy(policy)
    report = ValidationReport(p, images=len(source), boxes=source.num_boxes)
    classes = list(source.classes)
    checked = [_check_item(item, classes, p, report) for item in source.items]
    error = report.fatal_error()
    if error is not None:
        raise error
    keep = [i for i, item in enumerate(checked) if len(item.boxes) or p.empty_image not in ("drop",)]
    images = [source.images[i] for i in keep] if source.images is not None else None
    out = replace(source, classes=classes, items=[checked[i] for i in keep], images=images)
    log.info("%s: %s", source.name, report.summary()[0])
    for kind in KINDS:
        if report.counts[kind]:
            log.warning("%s: %s", source.name, report.line(kind))
    out.report = report
    return out, report
