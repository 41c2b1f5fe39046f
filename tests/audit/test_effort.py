"""The annotation-time estimate: the formula, the notes' example recomputed, the item count per task."""
from __future__ import annotations

import pytest

from cnnkit.audit.effort import annotation_effort, items_to_annotate
from cnnkit.errors import CnnkitError


def test_formula_is_items_times_seconds() -> None:
    got = annotation_effort(1234, seconds_per_item=4.5, hours_per_week=30)
    assert got["items"] == 1234 and got["seconds_per_item"] == 4.5
    assert got["hours"] == pytest.approx(1234 * 4.5 / 3600)
    assert got["weeks"] == pytest.approx(got["hours"] / 30)


def test_the_notes_example_recomputed() -> None:
    """2M parameters x 10 = 20M items at 10 items a minute: 2M minutes (the notes), which is 33,333 hours, not
    556; the notes' 556 hours and 14 weeks are 2M seconds."""
    items = 10 * 2_000_000
    got = annotation_effort(items, seconds_per_item=60 / 10)
    assert got["hours"] * 60 == pytest.approx(2_000_000)  # 2M minutes, as the notes say
    assert got["hours"] == pytest.approx(2_000_000 / 60)
    assert round(got["weeks"]) == 833
    slip = 2_000_000 / 3600  # the notes' figure: 2M read as seconds
    assert round(slip) == 556 and round(slip / 40) == 14


def test_bad_values_are_one_line_errors() -> None:
    for kwargs in ({"items": -1}, {"items": 5, "seconds_per_item": 0}, {"items": 5, "hours_per_week": -2}):
        with pytest.raises(CnnkitError) as err:
            annotation_effort(**kwargs)
        assert "\n" not in str(err.value)


def test_items_per_task() -> None:
    assert items_to_annotate("multiclass", images=100, boxes=900) == 100
    assert items_to_annotate("segment", images=100) == 100
    assert items_to_annotate("detect", images=100, boxes=900) == 900
    assert items_to_annotate("instance", images=100, boxes=900, instances=700) == 700
    assert items_to_annotate("instance", images=100, boxes=900) == 900
    with pytest.raises(CnnkitError, match="boxes"):
        items_to_annotate("detect", images=100)
    with pytest.raises(CnnkitError, match="unknown task 'detection'.*detect"):
        items_to_annotate("detection", images=100)
