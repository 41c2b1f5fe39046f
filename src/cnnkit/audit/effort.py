"""How long annotating a data set takes, as the notes estimate it.

The notes: "Say that you can annotate an image with on average 10 items within one minute. Say that you for a
2M parameter net need 10 times as many training data. Then you have to work 2M minutes or 556 hours or about 14
weeks (40 efficient hours a week)."

Their first step holds: 10 x 2M parameters = 20M items; at 10 items a minute (6 s an item) that is 2M minutes.
The next does not: 2M minutes / 60 = 33,333 hours, or 833 weeks of 40 hours (16 years). The notes' 556 hours are
2,000,000 / 3600, which converts 2M *seconds* to hours; their 14 weeks (556 / 40 = 13.9) follow from that slip.
`annotation_effort(20_000_000)` gives the corrected figures: 33,333 hours, 833 weeks.

What an item is depends on the task (`items_to_annotate`): a class label per image for classification, a box per
object for detection, an outline per object for instance segmentation, a labelled image for semantic
segmentation (slower per item: give `seconds_per_item` accordingly).
"""
from __future__ import annotations

from cnnkit.errors import CnnkitError, unknown_name

__all__ = ["annotation_effort", "items_to_annotate"]

CLASSIFICATION = ("auto", "binary", "multiclass", "multilabel", "regression", "classify")


def annotation_effort(items: int, seconds_per_item: float = 6.0, hours_per_week: float = 40.0) -> dict:
    """{"items", "seconds_per_item", "hours", "weeks"}: items x seconds_per_item of work, in hours and in weeks of
    `hours_per_week` efficient hours."""
    if items < 0 or seconds_per_item <= 0 or hours_per_week <= 0:
        raise CnnkitError(f"annotation effort needs items >= 0 and positive times (got items={items}, "
                          f"seconds_per_item={seconds_per_item}, hours_per_week={hours_per_week})")
    hours = items * seconds_per_item / 3600
    return {"items": int(items), "seconds_per_item": float(seconds_per_item), "hours": hours,
            "weeks": hours / hours_per_week}


def items_to_annotate(task: str, images: int, boxes: int | None = None, instances: int | None = None) -> int:
    """The number of things an annotator marks: images for classification and semantic segmentation (`segment`),
    boxes for detection (`detect`), instances (else boxes) for instance segmentation (`instance`)."""
    if task in CLASSIFICATION or task == "segment":
        return int(images)
    if task == "detect":
        if boxes is None:
            raise CnnkitError("the effort of a detection set counts boxes; give the number of boxes")
        return int(boxes)
    if task == "instance":
        count = instances if instances is not None else boxes
        if count is None:
            raise CnnkitError("the effort of an instance-segmentation set counts objects; give instances or boxes")
        return int(count)
    raise unknown_name("task", task, (*CLASSIFICATION, "detect", "instance", "segment"))
